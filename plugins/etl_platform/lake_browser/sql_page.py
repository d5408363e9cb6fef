"""The Lake view's SQL page: read-only DuckDB SQL over every table of the lake (:mod:`include.etl.lake.sql`).

Routes (mounted with the rest of the Lake view under ``/lake``):

  GET /sql?sql=…[&max_rows=&timeout_s=]      the page: a query box, its result or error, examples
  GET /api/sql?sql=…[&max_rows=&timeout_s=]  JSON: ``{columns, types, rows, truncated, elapsed_s,
                                             max_rows}``, or 400 ``{error, detail}``

GET, like every route of the Lake view: a query reads and changes nothing, a query's address
can be bookmarked and shared, and a browser sent to Airflow's login comes back to it. The Lake
view's app authorises every request (an Airflow user allowed to read the ``LakeBrowser`` view);
this router checks that it did, and asks the app's check itself if not, so it never answers
an anonymous request. A query started from another site (a link, a form; ``Sec-Fetch-Site:
cross-site``) is not run: the page shows it for the user to run. At most :data:`CONCURRENT`
queries run at once per api-server process. The page is plain HTML (no script), self-contained.
"""

from __future__ import annotations

import json
import threading
from html import escape
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from etl_platform.lake_browser import templates
from include.etl.lake import sql as lake_sql

PAGE_MAX_ROWS = 1_000  # rows a page shows at most (the JSON endpoint: lake_sql.MAX_ROWS)
MAX_SQL_CHARS = 8_000  # a query travels in the URL
CONCURRENT = 2  # queries running at once in this process; more wait up to BUSY_WAIT_S
BUSY_WAIT_S = 10.0

HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; script-src 'none'; "
                               "img-src 'self' data:; form-action 'self'; frame-ancestors 'self'",
}
ERROR_TITLES = {"syntax": "Syntax error", "refused": "Refused", "unknown_table": "Unknown table",
                "timeout": "Time limit", "busy": "Busy", "error": "Query failed"}
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
           "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")

_running = threading.BoundedSemaphore(CONCURRENT)


class Busy(lake_sql.LakeSQLError):
    kind = "busy"


async def _authorised(request: Request) -> None:
    """Fail closed: the Lake view's app has authorised this request's user, or its check runs now."""
    if getattr(request.state, "user", None) is None:
        from etl_platform.lake_browser.app import require_reader

        await require_reader(request)


router = APIRouter(dependencies=[Depends(_authorised)])


def _lake(request: Request) -> Any:
    """The lake the app was made for (tests), else None: the settings' lake."""
    for name in ("lake_uri", "lake_root", "lake"):
        value = getattr(request.app.state, name, None)
        if value is not None:
            return value
    return None


def _cross_site(request: Request) -> bool:
    return request.headers.get("sec-fetch-site") == "cross-site"


def run(request: Request, sql: str, max_rows: int, timeout_s: float) -> lake_sql.QueryResult:
    """:func:`include.etl.lake.sql.query` over the app's lake, at most :data:`CONCURRENT` at once."""
    if len(sql) > MAX_SQL_CHARS:
        raise lake_sql.QueryRefused(f"the query has {len(sql):,} characters; at most {MAX_SQL_CHARS:,} are accepted")
    if not _running.acquire(timeout=BUSY_WAIT_S):
        raise Busy(f"{CONCURRENT} queries are running already; try again in a moment")
    try:
        return lake_sql.query(sql, lake=_lake(request), max_rows=max_rows, timeout_s=timeout_s)
    finally:
        _running.release()


# -- JSON ------------------------------------------------------------------------------------


@router.get("/api/sql")
def api_sql(request: Request, sql: str = Query(..., min_length=1, max_length=MAX_SQL_CHARS),
            max_rows: int = Query(lake_sql.MAX_ROWS, ge=1, le=lake_sql.MAX_ROWS),
            timeout_s: float = Query(lake_sql.TIMEOUT_S, gt=0, le=lake_sql.TIMEOUT_S)):
    if _cross_site(request):
        return JSONResponse({"error": "refused", "detail": "queries from another site are not run"}, 403,
                            headers=HEADERS)
    try:
        result = run(request, sql, max_rows, timeout_s)
    except lake_sql.LakeSQLError as exc:
        body = {"error": exc.kind, "detail": str(exc)}
        if isinstance(exc, lake_sql.UnknownTable):
            body["tables"] = exc.tables
        return JSONResponse(body, 503 if isinstance(exc, Busy) else 400, headers=HEADERS)
    return JSONResponse(result.to_dict(), headers=HEADERS)


# -- the page --------------------------------------------------------------------------------


@router.get("/sql", response_class=HTMLResponse)
def sql_page(request: Request, sql: str = "", max_rows: str = "", timeout_s: str = ""):
    rows_cap = _bounded(max_rows, int, PAGE_MAX_ROWS, PAGE_MAX_ROWS)
    time_cap = _bounded(timeout_s, float, lake_sql.TIMEOUT_S, lake_sql.TIMEOUT_S)
    base = request.scope.get("root_path", "").rstrip("/")
    available = lake_sql.tables(_lake(request))
    result, error, notice = None, None, None
    if sql.strip() and _cross_site(request):
        notice = "This query was opened from another site, so it was not run: read it, then press Run."
    elif sql.strip():
        try:
            result = run(request, sql, rows_cap, time_cap)
        except lake_sql.LakeSQLError as exc:
            error = exc
    body = page(base, sql, rows_cap, time_cap, available, result, error, notice)
    return HTMLResponse(body, status_code=400 if error is not None else 200, headers=HEADERS)


def _bounded(raw: str, kind: type, default: float, cap: float) -> Any:
    """A form field as ``kind`` within (0, cap]; the default when empty or not a number."""
    try:
        value = kind(raw)
    except ValueError:
        return default
    return min(value, kind(cap)) if value > 0 else default


def examples(available: list[lake_sql.LakeTable]) -> list[tuple[str, str]]:
    """``(what it shows, SQL)`` built from the tables the lake has."""
    out = []
    data = [t for t in available if not t.table.startswith(lake_sql.REJECTS)]
    rejects = [t for t in available if t.table.startswith(lake_sql.REJECTS)]
    if data:
        t = data[0].name
        out += [(f"the first rows of {t}", f"SELECT * FROM {t} LIMIT 20"),
                (f"rows per day of {t}", f"SELECT ds, count(*) AS rows FROM {t}\nGROUP BY ds ORDER BY ds DESC LIMIT 31"),
                (f"the columns of {t}", f"DESCRIBE {t}")]
    if rejects:
        r = rejects[0].name
        out.append((f"rejected rows per day ({r})", f"SELECT ds, count(*) AS rejected FROM {r}\nGROUP BY ds ORDER BY ds DESC"))
    out.append(("every table of the lake and its columns", "SHOW ALL TABLES"))
    return out


# -- HTML ------------------------------------------------------------------------------------

STYLE = templates.STYLE + """
textarea { width: 100%; max-width: 1100px; box-sizing: border-box; font: 13px/1.4 ui-monospace, monospace;
           padding: 8px; border: 1px solid var(--line); border-radius: 4px; background: var(--bg); color: var(--fg); }
.controls { margin: 8px 0; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
.controls input { width: 6em; } button { font: inherit; padding: 4px 16px; cursor: pointer; }
table { border-collapse: collapse; } th, td { border-bottom: 1px solid var(--line); padding: 4px 10px;
  text-align: left; vertical-align: top; max-width: 40em; overflow-wrap: anywhere; }
th { background: var(--head); font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; } .null { color: var(--muted); font-style: italic; }
.error { border-left: 4px solid var(--bad); padding: 4px 12px; margin: 12px 0; max-width: 1100px; }
.error b { color: var(--bad); } .error pre, pre.sql { white-space: pre-wrap; margin: 4px 0; font-size: 13px; }
.truncated, .notice { border-left: 4px solid var(--warn); padding: 4px 12px; margin: 8px 0; }
ul.examples { padding-left: 18px; } ul.examples li { margin: 4px 0; } code { font-size: 12px; }
"""


def page(base: str, sql: str, max_rows: int, timeout_s: float, available: list[lake_sql.LakeTable],
         result: lake_sql.QueryResult | None, error: lake_sql.LakeSQLError | None, notice: str | None) -> str:
    def link(query: str) -> str:
        return escape(f"{base}/sql?{urlencode({'sql': query})}")

    example_items = "".join(
        f'<li><a class="example" href="{link(q)}"><code>{escape(q)}</code></a> <span class="muted">{escape(w)}</span></li>'
        for w, q in examples(available))
    table_links = ", ".join(
        f'<a class="table-link" href="{link(f"SELECT * FROM {t.name} LIMIT 20")}"><code>{escape(t.name)}</code></a>'
        for t in available) or '<span class="muted">none yet</span>'
    out = [
        f'<nav class="crumbs"><a href="{escape(base)}/">Lake</a> / SQL</nav><h1>SQL over the lake</h1>',
        '<p class="muted">Read-only DuckDB SQL over every table of the lake: <code>&lt;pipeline&gt;.&lt;table&gt;</code>, '
        'rejected rows as <code>&lt;pipeline&gt;._rejects_&lt;table&gt;</code>, the day as the column <code>ds</code>. '
        'One SELECT (also DESCRIBE, SHOW, SUMMARIZE); no files, network or extensions.</p>',
        f'<form class="query" method="get" action="{escape(base)}/sql">'
        f'<textarea name="sql" rows="8" spellcheck="false" aria-label="SQL" '
        f'placeholder="SELECT * FROM pipeline.table LIMIT 20">{escape(sql)}</textarea>'
        '<div class="controls"><button type="submit">Run</button>'
        f'<label>row cap <input type="number" name="max_rows" min="1" max="{PAGE_MAX_ROWS}" value="{max_rows}"></label>'
        f'<label>time limit (s) <input type="number" name="timeout_s" min="1" max="{lake_sql.TIMEOUT_S:g}" step="any" '
        f'value="{timeout_s:g}"></label>'
        f'<span class="limits muted">at most {PAGE_MAX_ROWS:,} rows and {lake_sql.TIMEOUT_S:g} s a query '
        f'(JSON: <code>{escape(base)}/api/sql?sql=…</code>, up to {lake_sql.MAX_ROWS:,} rows)</span></div></form>',
    ]
    if notice:
        out.append(f'<p class="notice">{escape(notice)}</p>')
    if error is not None:
        title = ERROR_TITLES.get(error.kind, "Query failed")
        out.append(f'<div class="error" role="alert"><b>{escape(title)}</b><pre>{escape(str(error))}</pre></div>')
    if result is not None:
        out.append(_result(result))
    out.append(f'<details class="examples" {"" if result else "open"}><summary>Examples</summary>'
               f'<ul class="examples">{example_items}</ul><p>Tables: {table_links}</p></details>')
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>SQL over the lake</title>"
            f"<style>{STYLE}</style></head><body>{''.join(out)}</body></html>")


def _result(result: lake_sql.QueryResult) -> str:
    numeric = [t.split("(")[0] in NUMERIC for t in result.types]
    n = len(result.rows)
    summary = (f'<p class="summary">{n:,} row{"" if n == 1 else "s"} in {result.elapsed_s:.2f} s</p>')
    truncated = (f'<p class="truncated">Only the first {result.max_rows:,} rows are shown: the result has more '
                 '(the row cap). Add a LIMIT, a filter or an aggregation.</p>' if result.truncated else "")
    head = "".join(f'<th class="{"num" if numeric[i] else ""}" title="{escape(t)}">{escape(c)}</th>'
                   for i, (c, t) in enumerate(zip(result.columns, result.types, strict=True)))
    body = "".join("<tr>" + "".join(_cell(v, numeric[i]) for i, v in enumerate(row)) + "</tr>" for row in result.rows)
    return f'{summary}{truncated}<table class="result"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: Any, numeric: bool) -> str:
    if value is None:
        return '<td class="null">NULL</td>'
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)
    return f'<td class="{"num" if numeric else ""}">{escape(text)}</td>'
