"""The lake browser's HTML: small server-rendered pages, every value escaped, no script, no CDN."""

from __future__ import annotations

import datetime as dt
from html import escape
from urllib.parse import quote, urlencode

STYLE = """
:root { color-scheme: light dark; --fg: #1f2933; --muted: #616e7c; --line: #d9e2ec; --bg: #fff;
        --head: #f5f7fa; --link: #0b69a3; --bad: #b42318; --warn: #b7791f; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e4e7eb; --muted: #9aa5b1; --line: #3e4c59; --bg: #1a202c; --head: #243040; --link: #63b3ed; }
}
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; padding: 16px 24px; }
h1 { font-size: 20px; margin: 4px 0 12px; } h2 { font-size: 16px; margin: 20px 0 8px; }
a { color: var(--link); text-decoration: none; } a:hover { text-decoration: underline; }
nav.crumbs { color: var(--muted); margin-bottom: 4px; } nav.crumbs a { margin: 0 2px; }
table { border-collapse: collapse; min-width: 480px; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 12px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); } .bad { color: var(--bad); }
.report-frame { width: 100%; height: calc(100vh - 110px); border: 1px solid var(--line); border-radius: 4px; }
.status { font-weight: 600; } .status-running, .status-attached { color: #2f855a; }
.status-starting, .status-unknown { color: #b7791f; } .status-stopped, .status-not-started { color: var(--muted); }
a.dashboard-link { font-weight: 600; } code { font-size: 12px; }
.state-empty { color: #b7791f; } .state-not-processed { color: var(--muted); font-style: italic; }
tr.missing td { color: var(--muted); } tr.current td { background: var(--head); }
table.preview td { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre; }
"""


def page(title: str, crumbs: list[tuple[str, str | None]], body: str) -> str:
    trail = " / ".join(f'<a href="{escape(href)}">{escape(label)}</a>' if href else escape(label)
                       for label, href in crumbs)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<nav class="crumbs">{trail}</nav><h1>{escape(title)}</h1>{body}</body></html>'
    )


def url(base: str, *parts: str) -> str:
    return base + "/" + "/".join(quote(p, safe="") for p in parts)


def file_url(base: str, relative: str) -> str:
    return f"{base}/files/{quote(relative, safe='/=')}"


def report_url(base: str, relative: str) -> str:
    return f"{base}/reports/{quote(relative, safe='/=')}"


def query_url(base: str, *parts: str, **params: object) -> str:
    """``url(...)`` with the query ``params`` whose value is not None or False."""
    q = {k: ("true" if v is True else v) for k, v in params.items() if v is not None and v is not False}
    return url(base, *parts) + (f"?{urlencode(q)}" if q else "")


def partition_url(base: str, pipeline_name: str, table_name: str, ds: str, version: int | None = None,
                  rejects: bool = False) -> str:
    return query_url(base, "pipelines", pipeline_name, "tables", table_name, "partitions", ds, version=version,
                     rejects=rejects)


def versions_url(base: str, pipeline_name: str, table_name: str, rejects: bool = False) -> str:
    return query_url(base, "pipelines", pipeline_name, "tables", table_name, "versions", rejects=rejects)


def muted(text: str = "–") -> str:
    return f'<span class="muted">{escape(text)}</span>'


def when(iso: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if not iso:
        return muted()
    return escape(iso.replace("T", " ").replace("+00:00", " UTC"))


def state_cell(state: str) -> str:
    from etl_platform.lake_browser.catalog import STATE_TEXT

    text = STATE_TEXT.get(state) or state
    return f'<span class="state state-{escape(state.replace(" ", "-"))}">{escape(text)}</span>'


def run_cell(dag_id: str | None, run_id: str | None, task_id: str | None, try_number: str | None = None) -> str:
    if not (dag_id or run_id or task_id):
        return muted()
    task = f"{task_id or '–'}" + (f" (try {try_number})" if try_number else "")
    return (f'{escape(dag_id or "–")} · <span class="task">{escape(task)}</span><br>'
            f'<code class="muted run">{escape(run_id or "–")}</code>')


def num(value: int | None) -> str:
    return '<span class="muted">–</span>' if value is None else f"{value:,}"


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def table(headers: list[str], rows: list[list[str]], numeric: set[int], empty: str, cls: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f'<th class="{"num" if i in numeric else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if i in numeric else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def report_links(base: str, reports: list[str]) -> str:
    return " ".join(
        f'<a class="report-link" href="{escape(report_url(base, r))}">{escape(r.rsplit("/", 1)[-1])}</a>'
        for r in reports
    ) or '<span class="muted">–</span>'


def index(base: str, root: str, pipelines: list[dict], reports: list, clusters: list | None = None,
          clusters_error: str | None = None, framed: bool = False) -> str:
    rows = [[f'<a class="pipeline-link" href="{escape(url(base, "pipelines", p["name"]))}">{escape(p["name"])}</a>',
             num(p["tables"]), escape(p["latest"] or "–")] for p in pipelines]
    rep = [[f'<a class="report-link" href="{escape(report_url(base, r.path))}">{escape(r.name)}</a>',
            escape(r.pipeline), escape(r.table), escape(r.ds),
            escape(dt.datetime.fromtimestamp(r.modified, dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))] for r in reports]
    all_clusters = f'<a class="clusters-link" href="{escape(url(base, "clusters"))}">clusters of recent runs</a>'
    body = (
        f'<p class="muted">Read-only view of the lake at <code>{escape(root)}</code>. '
        f'<a class="sql-link" href="{escape(url(base, "sql"))}">Query the lake with SQL</a>.</p>'
        f'<h2 id="clusters">Clusters of running runs</h2>'
        + cluster_table(clusters or [], clusters_error, framed, "No run is using a cluster now.")
        + f'<p>All {all_clusters}, with their dashboards.</p>'
        + "<h2>Pipelines</h2>"
        + table(["pipeline", "tables", "latest ds"], rows, {1}, "The lake has no pipelines yet.", "pipelines")
        + "<h2>Latest reports</h2>"
        + table(["report", "pipeline", "table", "ds", "written"], rep, set(), "No reports in the lake yet.", "reports")
    )
    return page("Lake", [("Lake", None)], body)


def pipeline(base: str, name: str, summaries: list) -> str:
    rows = []
    for t in summaries:
        link = f'<a class="table-link" href="{escape(url(base, "pipelines", name, "tables", t.name))}">{escape(t.name)}</a>'
        if t.error:
            rows.append([link, f'<span class="bad" title="{escape(t.error)}">unreadable</span>'] + [muted()] * 7)
            continue
        version = (f'<a class="versions-link" href="{escape(versions_url(base, name, t.name))}">{t.version}</a>'
                   if t.version is not None else muted())
        rows.append([link, num(t.partitions), num(t.empty_days) if t.empty_days else muted(),
                     escape(t.latest or "–"), num(t.latest_rows), num(t.latest_rejects),
                     num(t.reports) if t.reports else muted(), version, when(t.updated)])
    body = table(["table", "days", "empty days", "latest ds", "rows (latest)", "rejects (latest)", "reports",
                  "version", "updated"], rows, {1, 2, 4, 5, 6, 7}, "No tables.", "tables")
    return page(name, [("Lake", base + "/"), (name, None)], body)


def _partition_row(base: str, pipeline_name: str, table_name: str, p) -> list[str]:
    from etl_platform.lake_browser.catalog import REJECTS_ONLY

    if p.state == REJECTS_ONLY:
        ds_cell = f'<span class="ds">{escape(p.ds)}</span>'
    else:
        ds_cell = (f'<a class="partition-link" href="{escape(partition_url(base, pipeline_name, table_name, p.ds))}">'
                   f'<span class="ds">{escape(p.ds)}</span></a>')
    rows_cell = num(p.rows) if not p.error else f'<span class="bad" title="{escape(p.error)}">unknown</span>'
    if p.rejects_error:
        rej_cell = f'<span class="bad" title="{escape(p.rejects_error)}">unreadable</span>'
    elif p.rejects is not None:
        rej_cell = (f'<a class="rejects-link" href="{escape(partition_url(base, pipeline_name, table_name, p.ds, rejects=True))}">'
                    f'{num(p.rejects)}</a>')
    else:
        rej_cell = num(None)
    version = (f'<a class="version-link" href="{escape(partition_url(base, pipeline_name, table_name, p.ds, p.version))}">'
               f'{p.version}</a>' if p.version is not None else muted())
    return [ds_cell, state_cell(p.state), rows_cell, rej_cell, num(p.files),
            size(p.bytes) if p.files else muted(), version, when(p.time), run_cell(p.dag_id, p.run_id, p.task_id),
            report_links(base, p.reports)]


def partitions(base: str, pipeline_name: str, table_name: str, parts: list, missing: list[str] | None = None,
               version: int | None = None, error: str | None = None) -> str:
    """A table's days, newest first: published (with data or empty), only rejects, and skipped days."""
    from etl_platform.lake_browser.catalog import NOT_PROCESSED

    rows: list[tuple[str, list[str], str]] = [(p.ds, _partition_row(base, pipeline_name, table_name, p), "")
                                              for p in parts]
    rows += [(d, [f'<span class="ds">{escape(d)}</span>', state_cell(NOT_PROCESSED)] + [muted()] * 8, "missing")
             for d in missing or []]
    rows.sort(key=lambda r: r[0], reverse=True)
    headers = ["ds", "state", "rows", "rejects", "files", "size", "version", "written", "run · task", "reports"]
    if rows:
        numeric = {2, 3, 4, 5, 6}
        head = "".join(f'<th class="{"num" if i in numeric else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
        body_rows = "".join(
            f'<tr class="{cls}">' + "".join(f'<td class="{"num" if i in numeric else ""}">{c}</td>'
                                             for i, c in enumerate(cells)) + "</tr>"
            for _, cells, cls in rows)
        listing = f'<table class="partitions"><thead><tr>{head}</tr></thead><tbody>{body_rows}</tbody></table>'
    else:
        listing = '<p class="muted">No partitions.</p>'
    intro = ""
    if version is not None:
        intro = (f'<p class="muted">Delta table at version {version} · '
                 f'<a class="versions-link" href="{escape(versions_url(base, pipeline_name, table_name))}">'
                 f'all versions</a> (time, run, task, rows added and removed). A day is <em>empty</em> when it was '
                 f'published without data, <em>not processed</em> when no run published it.</p>')
    if error:
        intro += f'<p class="bad">This table cannot be read: {escape(error)}</p>'
    return page(f"{pipeline_name} / {table_name}",
                [("Lake", base + "/"), (pipeline_name, url(base, "pipelines", pipeline_name)), (table_name, None)],
                intro + listing)


def versions(base: str, pipeline_name: str, table_name: str, rows: list, rejects: bool = False,
             error: str | None = None) -> str:
    """A table's commits, newest first, each opening the partition it wrote as of that version."""
    cells = []
    for v in rows:
        ds = (f'<a class="partition-link" href="{escape(partition_url(base, pipeline_name, table_name, v.ds, v.version, rejects))}">'
              f'{escape(v.ds)}</a>' if v.ds else muted())
        cells.append([f'<span class="version">{v.version}</span>', when(v.time), escape(v.operation or "–"), ds,
                      num(v.rows), num(v.rows_removed), run_cell(v.dag_id, v.run_id, v.task_id, v.try_number)])
    what = "rejects of " if rejects else ""
    body = (
        f'<p class="muted">Every commit to the {escape(what)}table, newest first. A day\'s link opens the partition '
        'as of that version; the files of a version replaced longer ago than the lake\'s retention are removed '
        '(its rows can no longer be read), and the oldest commits leave the log after its own retention.</p>'
        + (f'<p class="bad">{escape(error)}</p>' if error else "")
        + table(["version", "time", "operation", "ds", "rows added", "rows removed", "DAG · task / run"], cells,
                {0, 4, 5}, "No versions.", "versions")
    )
    crumbs: list[tuple[str, str | None]] = [("Lake", base + "/"), (pipeline_name, url(base, "pipelines", pipeline_name)),
                                            (table_name, url(base, "pipelines", pipeline_name, "tables", table_name)),
                                            ("rejects versions" if rejects else "versions", None)]
    return page(f"{pipeline_name} / {table_name}: {'rejects ' if rejects else ''}versions", crumbs, body)


def partition_view(base: str, v) -> str:
    """One partition as of a version: state, counts, columns, first rows, and the versions that wrote it."""
    from etl_platform.lake_browser.catalog import EMPTY

    as_of = (f"version {v.version} (latest: "
             f'<a class="latest-link" href="{escape(partition_url(base, v.pipeline, v.table, v.ds, None, v.of_rejects))}">'
             f"{v.latest_version}</a>)" if v.version != v.latest_version else f"version {v.version} (latest)")
    facts = [
        ("state", state_cell(v.state)), ("as of", as_of), ("rows", num(v.rows)), ("files", num(v.files)),
        ("size", size(v.bytes) if v.files else muted()),
    ]
    if not v.of_rejects:
        rejects = (f'<a class="rejects-link" href="{escape(partition_url(base, v.pipeline, v.table, v.ds, rejects=True))}">'
                   f"{num(v.rejects)}</a>" if v.rejects is not None else muted("none published"))
        facts.append(("rejects" if v.version == v.latest_version else "rejects (latest)", rejects))
    facts.append(("reports", report_links(base, v.reports)))
    body = "<table class=\"facts\"><tbody>" + "".join(
        f"<tr><th>{escape(k)}</th><td>{c}</td></tr>" for k, c in facts) + "</tbody></table>"
    if v.state == EMPTY:
        body += '<p class="state-empty">Published without data: no data that day.</p>'
    if v.error:
        body += f'<p class="bad">{escape(v.error)}</p>'
    body += "<h2>Columns</h2>" + table(["column", "type"], [[escape(c.name), f"<code>{escape(c.type)}</code>"]
                                                            for c in v.columns], set(), "No columns.", "columns")
    if v.preview:
        names = [c.name for c in v.columns]
        body += (f"<h2>First {len(v.preview):,} rows</h2>"
                 + table(names, [[muted("null") if r.get(n) is None else escape(str(r.get(n))) for n in names]
                                 for r in v.preview], set(), "", "preview"))
    history = [[
        f'<a class="version-link" href="{escape(partition_url(base, v.pipeline, v.table, v.ds, h.version, v.of_rejects))}">'
        f"{h.version}</a>" + (" ◀" if h.version == v.version else ""),
        when(h.time), num(h.rows), num(h.rows_removed), run_cell(h.dag_id, h.run_id, h.task_id, h.try_number),
    ] for h in v.versions]
    body += ("<h2>Versions that wrote this day</h2>"
             + table(["version", "time", "rows added", "rows removed", "DAG · task / run"], history, {0, 2, 3},
                     "None left in the table's log.", "partition-versions"))
    name = f"{v.table} (rejects)" if v.of_rejects else v.table
    crumbs: list[tuple[str, str | None]] = [("Lake", base + "/"), (v.pipeline, url(base, "pipelines", v.pipeline)),
                                            (v.table, url(base, "pipelines", v.pipeline, "tables", v.table)),
                                            (f"ds={v.ds}", None)]
    return page(f"{v.pipeline} / {name} / ds={v.ds}", crumbs, body)


def report(base: str, pipeline_name: str | None, table_name: str | None, ds: str | None, relative: str) -> str:
    src = file_url(base, relative)
    crumbs: list[tuple[str, str | None]] = [("Lake", base + "/")]
    if pipeline_name:
        crumbs.append((pipeline_name, url(base, "pipelines", pipeline_name)))
    if pipeline_name and table_name:
        crumbs.append((table_name, url(base, "pipelines", pipeline_name, "tables", table_name)))
    if ds:
        crumbs.append((f"ds={ds}", None))
    body = (
        f'<p><a href="{escape(src)}" target="_blank" rel="noopener">open in a new tab</a></p>'
        # sandbox: the report's own scripts run (charts), but in an opaque origin: no access to
        # the Airflow session, the UI or the API. The file response carries the same CSP sandbox.
        f'<iframe id="report" class="report-frame" sandbox="allow-scripts allow-popups allow-downloads" '
        f'src="{escape(src)}" title="{escape(relative)}"></iframe>'
    )
    return page(relative.rsplit("/", 1)[-1], crumbs, body)


def dashboard_link(row, framed: bool) -> str:
    """The link to a cluster's dashboard (another origin: a plain link, never fetched by this page).

    In the UI's frame (sandboxed without ``allow-popups``) a ``target="_blank"`` link is blocked, so
    there it opens in the frame (Ctrl/⌘-click: a new tab); on a page of its own, in a new tab.
    """
    if not row.live:
        return '<span class="muted">–</span>'
    target = "" if framed else ' target="_blank" rel="noopener noreferrer"'
    return (f'<a class="dashboard-link" href="{escape(row.dashboard_url)}"{target}>{escape(row.dashboard_name)}</a>'
            f'<br><code class="muted">{escape(row.dashboard_url)}</code>')


def cluster_table(rows: list, error: str | None, framed: bool, empty: str) -> str:
    if error:
        return f'<p class="bad">{escape(error)}</p>'
    cells = [[
        f'{escape(r.dag_id)}<br><code class="muted">{escape(r.run_id)}</code>',
        escape(r.run_state or "–"),
        escape(r.run_start.replace("T", " ").replace("+00:00", " UTC") if r.run_start else "–"),
        escape(r.backend or "–"),
        (f'{escape(r.mode)}<br><code class="muted">{escape(r.address)}</code>' if r.address else escape(r.mode or "–")),
        f'<span class="status status-{escape(r.status.replace(" ", "-"))}">{escape(r.status)}</span>',
        dashboard_link(r, framed),
        f'<span class="muted">{escape(r.note)}</span>',
    ] for r in rows]
    return table(["run", "run state", "run started", "backend", "cluster", "status", "dashboard", "note"], cells,
                 set(), empty, "clusters")


def _frame_hint(rows: list, framed: bool) -> str:
    if not framed or not any(r.live for r in rows):
        return ""
    spark = " The Spark UI refuses to be shown inside another page: open it with Ctrl-click." \
        if any(r.live and r.backend == "spark" for r in rows) else ""
    return (f'<p class="muted">A dashboard opens here, inside Airflow (the browser\'s Back returns); Ctrl-click '
            f'(⌘-click) opens it in a new tab.{spark}</p>')


def clusters(base: str, rows: list, error: str | None, framed: bool = False) -> str:
    body = (
        '<p class="muted">The cluster of each running and recent run (running runs first), as its '
        '<code>start_cluster</code> task recorded it, with the link to its dashboard while it runs.</p>'
        + _frame_hint(rows, framed)
        + cluster_table(rows, error, framed, "No run has started a cluster yet.")
    )
    return page("Clusters", [("Lake", base + "/"), ("Clusters", None)], body)


def run_clusters(base: str, dag_id: str, run_id: str, rows: list, error: str | None, framed: bool = False) -> str:
    body = (
        f'<p class="muted">{escape(dag_id)} · <code>{escape(run_id)}</code></p>'
        + _frame_hint(rows, framed)
        + cluster_table(rows, error, framed, "This run has no cluster task (StartClusterOperator), or it has not been "
                                             "created yet.")
        + f'<p><a class="clusters-link" href="{escape(url(base, "clusters"))}">All clusters of recent runs</a></p>'
    )
    return page("Cluster of this run", [("Lake", base + "/"), ("Clusters", url(base, "clusters")), (run_id, None)],
                body)


def error(base: str, status: int, message: str) -> str:
    return page(f"{status}", [("Lake", base + "/")], f"<p>{escape(message)}</p>")
