"""The Airflow UI in a real browser: login, a trigger form, and a real retail report opened from the lake browser.

A deployment like `make run` without its scheduler (api-server and dag-processor; SQLite; a
fresh AIRFLOW_HOME on a free loopback port: the test opens a trigger form, it runs nothing) over a lake this test fills with the retail pipeline's real jobs, in
this process: one ISO week of the shared data set (:data:`WEEK`: six days with a file,
among them the day with the two negative-price lines the contract rejects, and a Saturday
without a file) through ``retail.ingest_day`` >> ``retail.enrich`` >> ``retail.marts`` (or
``retail.empty_day``), then ``retail.check_period`` and ``retail.rollup`` for the week, which
writes ``weekly_sales_by_country`` and its ``report.html`` (``include/pipelines/retail/report.py``).
The jobs run on the platform's Dask engine over dask's in-process threaded scheduler: no cluster
is started. The lake is filled while the Airflow components boot. Playwright drives Debian's
chromium (installed by bin/install-browser; Playwright's own browser download is not reachable
from CI):

* without a session the lake browser answers 401 (API) or sends the browser to Airflow's login;
* log in with the generated admin password;
* open the trigger form of a DAG and see a field for each of its params;
* open "Lake" from the UI's navigation, click through pipeline → ``invoice_lines`` (rows and the
  day's real rejects) → ``weekly_sales_by_country`` → the week's report, and check the real
  report rendered: its heading, its five SVG charts, one revenue bar per day of the week in the
  lake (the Saturday as a day without trading), and its figures equal to what this test reads
  from the marts' published partitions (their Delta tables' latest versions);
* the report is self-contained (no element loading anything, no request but its own file) and
  framed in a sandbox: a script in its frame could read neither the Airflow session nor the API.

Screenshots of each step are kept under $ETL_TEST_ARTIFACTS (default tests/artifacts/)/ui_browser/.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import time
from pathlib import Path

import pytest

from tests.conftest import DATA_ROOT, ROOT, require_data
from tests.e2e.browser import launch, login, open_trigger_form
from tests.e2e.stack import artifacts_dir, http_status, ui_deployment, wait

# The DAG whose trigger form is opened: a fixture DAG of the platform's operators (its params are
# read from the REST API, so the form check does not depend on which params it has).
DAG_FILE = ROOT / "dags" / "retail_daily.py"
DAG_ID = "retail_daily"

DAYS_DIR = DATA_ROOT / "retail" / "by-day"
# The ISO week rolled up: Monday 2011-08-08 to Sunday 2011-08-14. Small files (~0.7 MB in all);
# 2011-08-12 holds the two negative-price (bad debt) lines the contract rejects; Saturday
# 2011-08-13 has no file (the shop did not trade on Saturdays): an empty day.
PERIOD, WEEK = "week", "2011-08-08"
REJECTS_DAY = "2011-08-12"
PIPELINE, DAILY_TABLE, MART = "retail", "invoice_lines", "weekly_sales_by_country"
TOP = 10  # the report's rankings show this many rows (render's default)
GOODS = re.compile(r"^\d{5}")  # stock codes of goods (the report's top products leave out POST, DOT, M, ...)
REPORT_CHARTS = ("revenue-per-day", "top-countries", "top-products", "cancellations-per-day", "cancelled-products")


def _week_days() -> list[str]:
    start = dt.date.fromisoformat(WEEK)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(7)]


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _week_files():
    """Before anything starts: the week's day files are there, else the module fails (never skips)."""
    require_data(DAYS_DIR / f"{WEEK}.csv")


# ---------------------------------------------------------------- the lake: the real jobs, in this process


def _build_lake(lake: Path) -> dict:
    """The week's daily jobs, then the rollup, as the DAGs run them; the rollup's summary."""
    from include.etl.engines.dask import DaskEngine
    from include.etl.jobs import get_job

    engine = DaskEngine("threads")  # dask's in-process threaded scheduler: no cluster

    def run(name: str, ds: str, **kwargs) -> dict:
        job = get_job(name)
        return job(job.context(engine=engine, lake_root=lake, ds=ds), **kwargs)

    for ds in _week_days():
        source = DAYS_DIR / f"{ds}.csv"
        if source.is_file():
            for name, kwargs in (("retail.ingest_day", {"source": str(source)}), ("retail.enrich", {}),
                                 ("retail.marts", {})):
                run(name, ds, **kwargs)
        else:  # what retail_daily does when no file landed by the deadline
            run("retail.empty_day", ds, path=str(source), deadline="the test's deadline", decided="no file")
    check = run("retail.check_period", WEEK, period=PERIOD)
    assert check["complete"], check
    return run("retail.rollup", WEEK, period=PERIOD)


# ---------------------------------------------------------------- what the report must show, from the tables


def _rows(partition: Path) -> list[dict]:
    """The rows of a published partition (``{lake}/{pipeline}/{table}/ds={ds}``), as of its table's latest version."""
    from tests.lake import read_partition

    return read_partition(partition).to_pylist()


def _count(partition: Path) -> int:
    """Rows of a partition's data as published (0 when nothing is published for it)."""
    from tests.lake import published, read_partition

    return read_partition(partition).num_rows if published(partition) else 0


def _milli(value: float) -> int:
    return int(round(value * 1000))


def _money(milli: int) -> str:
    return f"£{milli / 1000:,.2f}"


def _expected(lake: Path) -> dict:
    """The report's figures, read here from the daily and weekly marts with pyarrow (not from the report code)."""
    from include.etl.lake import Lake

    part = lake / PIPELINE
    first, last = _week_days()[0], _week_days()[-1]
    days = sorted(d for d in Lake(lake, PIPELINE).published_days(DAILY_TABLE) if first <= d <= last)
    lines = {d: _count(part / DAILY_TABLE / f"ds={d}") for d in days}
    daily = {d: _rows(part / "sales_by_country" / f"ds={d}") for d in days}
    revenue = {d: sum(_milli(r["revenue"]) for r in daily[d]) for d in days}
    cancelled = {d: sum(_milli(r["cancelled_value"]) for r in daily[d]) for d in days}

    mart = _rows(part / MART / f"ds={WEEK}")
    assert mart and {r["week"] for r in mart} == {WEEK}, mart[:3]
    countries = sorted(mart, key=lambda r: (-_milli(r["revenue"]), r["country"]))[:TOP]
    products: dict[str, list[int]] = {}
    for d in days:
        for r in _rows(part / "sales_by_product" / f"ds={d}"):
            units_value = products.setdefault(r["stock_code"], [0, 0])
            units_value[0] += r["units"]
            units_value[1] += _milli(r["revenue"])
    goods = sorted(((c, u, m) for c, (u, m) in products.items() if GOODS.match(c)), key=lambda p: (-p[2], p[0]))

    def day_title(d: str, milli: int) -> str:
        return f"{d}: {_money(milli)}" if lines[d] else f"{d}: no trading"

    return {
        "days": days,
        "trading": [d for d in days if lines[d]],
        "lines": lines,
        "total": _money(sum(_milli(r["revenue"]) for r in mart)),
        "mart_rows": len(mart),
        "revenue": [revenue[d] if lines[d] else 0 for d in days],
        "revenue_titles": [day_title(d, revenue[d]) for d in days],
        "cancel_titles": [day_title(d, cancelled[d]) for d in days],
        "country_titles": [f"{r['country']}: {_money(_milli(r['revenue']))} · {r['invoices']:,} invoices"
                           for r in countries],
        "top_country": countries[0]["country"],
        "top_product": goods[0],
        "rejects": {d: _count(part / "_rejects" / DAILY_TABLE / f"ds={d}") for d in days},
    }


def _negative_price_lines(path: Path) -> int:
    """Lines of a raw day file with a negative UnitPrice: the ones the contract rejects (csv module)."""
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for r in csv.DictReader(f) if float(r["UnitPrice"]) < 0)


# ---------------------------------------------------------------- the deployment


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir("ui_browser")


@pytest.fixture(scope="module")
def deployment(migrated_home_template, tmp_path_factory):
    with ui_deployment(migrated_home_template, tmp_path_factory.mktemp("ui-browser"), [DAG_FILE],
                       components=("api-server", "dag-processor")) as d:  # nothing runs: no scheduler
        # The lake browser reads the lake on each request: fill it while the components boot.
        t = time.monotonic()
        rollup = _build_lake(d.lake)
        lake_s = time.monotonic() - t
        wait(f"the DAG {DAG_ID} to be parsed", lambda: d.api("GET", f"dags/{DAG_ID}")["dag_id"], 180, d.stack)
        yield {"api": d.api, "base": d.url, "home": d.home, "stack": d.stack, "lake": d.lake, "rollup": rollup,
               "lake_s": lake_s, "password": d.password()}


# ---------------------------------------------------------------- the browser steps


def _trigger_form(page, api, params: list[str]) -> None:
    from playwright.sync_api import expect

    dialog = open_trigger_form(page, DAG_ID)
    details = api("GET", f"dags/{DAG_ID}/details")["params"]
    for name in params:
        # required params carry a '*' after their name
        label = dialog.locator("label", has_text=re.compile(rf"^\s*{re.escape(name)}\s*\*?\s*$"))
        expect(label).to_be_visible()
        description = (details[name] or {}).get("description")
        assert description, f"{DAG_ID}: param {name} has no description for the form"
        expect(dialog.get_by_text(description)).to_be_visible()  # shown under the param's field
    expect(dialog.get_by_role("spinbutton")).to_have_value("6")  # deadline_hours' default


def _partition_row(lake, ds: str, rows: int, rejects: str):
    """The partitions table's row of ``ds`` (ds, state, rows, rejects, ...), checked: its rows and rejects,
    and a day published without rows shown as such."""
    from playwright.sync_api import expect

    row = lake.locator("table.partitions tbody tr", has_text=ds)
    expect(row).to_be_visible()
    cells = row.locator("td")
    if rows == 0:
        expect(cells.nth(1)).to_have_text("no data that day")
    expect(cells.nth(2)).to_have_text(f"{rows:,}")
    expect(cells.nth(3)).to_have_text(rejects)
    return row


def _column_chart(report, chart: str, titles: list[str], values: list[int] | None = None) -> None:
    """A per-day chart of the report: one bar per day, in order, each titled with its day's value."""
    from playwright.sync_api import expect

    bars = report.locator(f"#{chart} rect.bar")
    expect(bars).to_have_count(len(titles))
    assert report.locator(f"#{chart} rect.bar > title").all_text_contents() == titles, chart
    empty = [i for i, t in enumerate(titles) if t.endswith(": no trading")]
    assert [i for i in range(len(titles)) if "empty-day" in bars.nth(i).get_attribute("class")] == empty, chart
    if values is None:
        return
    # Rendered, to scale: each bar's height over the tallest one's is its day's share of the peak.
    heights = [bars.nth(i).bounding_box()["height"] for i in range(len(titles))]
    peak, tallest = max(values), max(heights)
    for i, (h, v) in enumerate(zip(heights, values, strict=True)):
        if i not in empty:
            assert abs(h / tallest - v / peak) < 0.01, (chart, titles[i], h, tallest, v, peak)


def _report_content(report, expected: dict) -> None:
    from playwright.sync_api import expect

    days = expected["days"]
    expect(report.get_by_role("heading", level=1)).to_have_text(f"Retail sales, {PERIOD} {WEEK}")
    expect(report.locator("p.sub")).to_contain_text(f"{days[0]} to {days[-1]}")
    for chart in REPORT_CHARTS:
        svg = report.locator(f"svg#{chart}")
        expect(svg).to_be_visible()
        expect(svg.locator("rect.bar").first).to_be_attached()

    def kpi(label: str):
        return report.locator(f'.kpi:has(> span:text-is("{label}"))')

    expect(kpi("revenue (sale lines)").locator("b")).to_have_text(expected["total"])
    expect(kpi("trading days").locator("b")).to_have_text(f"{len(expected['trading'])} / {len(days)}")

    # One bar per day of the week in the lake, the Saturday without a file as a day without trading.
    assert len(days) == 7 and len(expected["trading"]) < len(days), expected["lines"]
    _column_chart(report, "revenue-per-day", expected["revenue_titles"], expected["revenue"])
    _column_chart(report, "cancellations-per-day", expected["cancel_titles"])

    countries = report.locator("#top-countries rect.bar > title")
    assert countries.all_text_contents() == expected["country_titles"]
    assert expected["country_titles"][0].startswith(f"{expected['top_country']}: ")
    expect(report.locator("#top-countries text").first).to_have_text(expected["top_country"])
    code, units, milli = expected["top_product"]
    top_product = report.locator("#top-products rect.bar > title").first.text_content()
    assert top_product.startswith(f"{code} ") and top_product.endswith(f": {_money(milli)} · {units:,} units"), (
        top_product, expected["top_product"])
    expect(report.get_by_role("heading", name=f"{WEEK}: sales by country")).to_be_visible()
    expect(report.locator("table tbody tr")).to_have_count(expected["mart_rows"])


def _report_isolation(page, lake, report_frame, report_file: Path, report_url: str, requests: list) -> None:
    """Self-contained (nothing loaded but the report itself) and sandboxed (no session, no API)."""
    from playwright.sync_api import expect

    text = report_file.read_text(encoding="utf-8")
    assert not re.search(r"""\b(?:src|href|srcset|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"<\s*(?:script|link|img|iframe|object|embed|image|use)\b", text, re.I)
    assert "url(" not in text and "@import" not in text
    loading = report_frame.locator("[src], [href], [srcset], link, script, img, iframe, object, embed, image, use")
    expect(loading).to_have_count(0)
    frame_requests = [r.url for r in requests if r.frame == report_frame]
    assert frame_requests == [report_url], frame_requests  # the report's own file, nothing else

    # Served as a sandbox (the file response's CSP) and framed as one (no allow-same-origin).
    resp = page.request.get(report_url)
    assert resp.ok and resp.body() == report_file.read_bytes()
    csp = resp.headers["content-security-policy"]
    assert csp.startswith("sandbox ") and "default-src 'none'" in csp, csp
    sandbox = lake.locator("iframe#report").get_attribute("sandbox").split()
    assert "allow-scripts" in sandbox and "allow-same-origin" not in sandbox, sandbox
    # What a script in the report's frame could reach (the real report has none: this probe is one).
    probe = report_frame.evaluate("""async () => {
        let cookie; try { cookie = document.cookie === "" ? "empty" : "visible"; } catch (e) { cookie = "blocked"; }
        let api; try { const r = await fetch("/api/v2/dags", {credentials: "include"}); api = "status " + r.status; }
                 catch (e) { api = "blocked"; }
        return {origin: self.origin, cookie, api};
    }""")
    assert probe == {"origin": "null", "cookie": "blocked", "api": "blocked"}, probe


def test_login_trigger_form_and_real_report(deployment, artifacts):
    from playwright.sync_api import expect, sync_playwright

    base, api, lake_root = deployment["base"], deployment["api"], deployment["lake"]
    report_path = f"{PIPELINE}/_reports/{MART}/ds={WEEK}/report.html"  # beside the mart's table, not in it
    report_file = lake_root / report_path
    assert deployment["rollup"]["report"] == "file://" + str(report_file.resolve()), deployment["rollup"]
    assert report_file.is_file()
    expected = _expected(lake_root)
    rejects = expected["rejects"]
    assert rejects[REJECTS_DAY] == _negative_price_lines(DAYS_DIR / f"{REJECTS_DAY}.csv") > 0, rejects

    # Behind Airflow's login: no session, no lake.
    assert http_status(f"{base}/lake/api/pipelines")[0] == 401
    assert http_status(f"{base}/lake/files/{report_path}")[0] == 401
    code, headers = http_status(f"{base}/lake/", Accept="text/html")
    assert code == 302 and headers["location"].startswith("/auth/login"), (code, headers)

    password = deployment["password"]
    params = list(api("GET", f"dags/{DAG_ID}/details")["params"])
    assert params, f"{DAG_ID} has no params to show in its trigger form"
    timings = {"lake (real jobs)": deployment["lake_s"]}

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(base_url=base, viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        step = "login"
        try:
            t = time.monotonic()
            # a bookmark of the lake browser, without a session: Airflow's login page, then back there
            login(page, password, "/lake/", screenshot=artifacts / "01-login.png")
            expect(page.get_by_role("heading", name="Lake")).to_be_visible()
            timings["login"] = time.monotonic() - t

            step = "trigger form"
            t = time.monotonic()
            _trigger_form(page, api, params)
            page.screenshot(path=artifacts / "02-trigger-form.png")
            page.keyboard.press("Escape")
            expect(page.get_by_role("dialog")).to_be_hidden()
            timings["trigger form"] = time.monotonic() - t

            step = "lake browser"
            t = time.monotonic()
            page.get_by_role("link", name="Lake").click()  # the plugin's entry in the UI's navigation
            expect(page).to_have_url(re.compile(r"/plugin/lake"))
            lake = page.frame_locator("iframe").first  # the plugin's page, inside the UI
            expect(lake.get_by_role("heading", name="Lake")).to_be_visible()
            latest = lake.locator("table.reports tbody tr", has_text=MART)  # latest reports: the week's
            expect(latest.locator("a.report-link", has_text="report.html")).to_be_visible()
            expect(latest).to_contain_text(WEEK)
            page.screenshot(path=artifacts / "03-lake.png")
            lake.locator("a.pipeline-link", has_text=PIPELINE).click()
            lake.get_by_role("link", name=DAILY_TABLE, exact=True).click()
            for day in expected["days"]:  # every day of the week (the Saturday's empty), the real rejects
                _partition_row(lake, day, expected["lines"][day], f"{rejects[day]:,}")
            page.screenshot(path=artifacts / "04-invoice-lines.png")
            lake.locator("nav.crumbs").get_by_role("link", name=PIPELINE, exact=True).click()
            lake.get_by_role("link", name=MART, exact=True).click()
            row = _partition_row(lake, WEEK, expected["mart_rows"], "–")  # one row per country; no rejects table
            page.screenshot(path=artifacts / "05-weekly-mart.png")
            timings["lake browser"] = time.monotonic() - t

            step = "report"
            t = time.monotonic()
            requests: list = []
            page.on("request", lambda request: requests.append(request))
            row.locator("a.report-link").click()
            report = lake.frame_locator("iframe#report")
            expect(report.get_by_role("heading", level=1)).to_be_visible()
            report_url = f"{base}/lake/files/{report_path}"
            report_frame = page.frame(url=report_url)
            assert report_frame is not None, [f.url for f in page.frames]
            assert report_frame.title() == f"Retail sales, {PERIOD} {WEEK}"
            _report_content(report, expected)
            page.screenshot(path=artifacts / "06-report.png")
            report.locator("#cancellations-per-day").scroll_into_view_if_needed()
            page.screenshot(path=artifacts / "07-report-cancellations.png")
            _report_isolation(page, lake, report_frame, report_file, report_url, requests)
            timings["report"] = time.monotonic() - t
        except Exception:
            page.screenshot(path=artifacts / f"failed-{step.replace(' ', '-')}.png")
            raise
        finally:
            browser.close()
    print("steps (s):", {k: round(v, 1) for k, v in timings.items()})
