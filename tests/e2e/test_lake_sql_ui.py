"""The Lake view's SQL page (plugins/etl_platform/lake_browser/sql_page.py) in chromium, behind Airflow's login.

One api-server (``tests/e2e/stack.py``'s :func:`ui_deployment`: a fresh AIRFLOW_HOME, a free
loopback port) over a small lake this test commits with ``Lake.stage/commit`` while the server
boots: ``retail.sales_by_country`` (three days of five countries) and its rejects. Then:

* without a session the JSON endpoint answers 401 and the page sends the browser to the login;
* logged in, a query typed into the page shows its rows, and an example link runs its example;
* the row cap: more rows than the cap asked for says the result is truncated;
* the time limit: a slow cross join is stopped with a readable error;
* a write (``DELETE``) and a file read (``read_csv('/etc/passwd')``) are refused, the file unread;
* the JSON endpoint answers with the browser's session.

Screenshots are kept under $ETL_TEST_ARTIFACTS (default tests/artifacts/)/lake_sql/.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.browser import launch, login
from tests.e2e.stack import artifacts_dir, http_status, ui_deployment, wait

pytestmark = pytest.mark.slow

DAYS = ["2024-03-01", "2024-03-02", "2024-03-03"]
COUNTRIES = ["France", "Germany", "Spain", "United Kingdom", "EIRE"]
SLOW = "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = 7"


def _fill_lake(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.etl.lake import Lake

    lake = Lake(root, "retail")

    def publish(table: str, ds: str, data: pa.Table) -> None:
        staged = lake.stage(table, ds)
        path = Path(lake.engine_path(staged))
        path.mkdir(parents=True)
        pq.write_table(data, path / "part-0.parquet")
        lake.commit(table, ds, staged)

    for i, ds in enumerate(DAYS):
        publish("sales_by_country", ds, pa.table({"country": COUNTRIES,
                                                  "revenue": [100.0 * i + k for k in range(len(COUNTRIES))]}))
    publish(Lake.rejects("invoice_lines"), DAYS[0], pa.table({"line": [3], "reason": ["negative price"]}))


@pytest.fixture(scope="module")
def deployment(migrated_home_template, tmp_path_factory):
    with ui_deployment(migrated_home_template, tmp_path_factory.mktemp("lake-sql"), [],
                       components=("api-server",)) as d:
        t = time.monotonic()
        _fill_lake(d.lake)  # while the api-server boots
        wait("the api-server", lambda: http_status(f"{d.url}/api/v2/monitor/health")[0] == 200, 180, d.stack)
        yield {"base": d.url, "password": d.password(), "boot_s": time.monotonic() - t}


def _run(page, sql: str, max_rows: int | None = None, timeout_s: float | None = None) -> None:
    form = page.locator("form.query")
    form.locator("textarea[name=sql]").fill(sql)
    if max_rows is not None:
        form.locator("input[name=max_rows]").fill(str(max_rows))
    if timeout_s is not None:
        form.locator("input[name=timeout_s]").fill(f"{timeout_s:g}")
    form.get_by_role("button", name="Run").click()


def test_sql_page(deployment):
    from playwright.sync_api import expect, sync_playwright

    base, artifacts = deployment["base"], artifacts_dir("lake_sql")
    sql_url = f"/lake/sql?sql={quote('SELECT 1')}"

    # Behind Airflow's login: no session, no query.
    assert http_status(f"{base}/lake/api/sql?sql={quote('SELECT 1')}")[0] == 401
    code, headers = http_status(base + sql_url, Accept="text/html")
    assert code == 302 and headers["location"].startswith("/auth/login"), (code, headers)

    timings = {"boot": deployment["boot_s"]}
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(base_url=base, viewport={"width": 1300, "height": 900})
        page.set_default_timeout(30_000)
        step = "login"
        try:
            t = time.monotonic()
            login(page, deployment["password"], "/lake/")
            page.locator("a.sql-link").click()  # the Lake view links its SQL page
            expect(page.get_by_role("heading", name="SQL over the lake")).to_be_visible()
            expect(page.locator(".limits")).to_contain_text("at most 1,000 rows and 30 s a query")
            timings["login"] = time.monotonic() - t

            step = "query"
            t = time.monotonic()
            _run(page, "SELECT country, revenue FROM retail.sales_by_country\n"
                       f"WHERE ds = '{DAYS[1]}' ORDER BY revenue DESC")
            result = page.locator("table.result")
            expect(result.locator("tbody tr")).to_have_count(len(COUNTRIES))
            expect(result.locator("thead th")).to_have_text(["country", "revenue"])
            expect(result.locator("tbody tr").first.locator("td")).to_have_text(["EIRE", "104.0"])
            expect(page.locator("p.summary")).to_contain_text("5 rows in")
            expect(page.locator("p.truncated")).to_have_count(0)
            page.screenshot(path=artifacts / "01-query.png")
            page.locator("details.examples > summary").click()  # folded away under a result
            page.locator("a.example", has_text="DESCRIBE retail.sales_by_country").click()
            expect(page.locator("table.result tbody tr td:first-child")).to_have_text(["country", "revenue", "ds"])
            timings["query"] = time.monotonic() - t

            step = "row cap"
            t = time.monotonic()
            _run(page, "SELECT * FROM retail.sales_by_country ORDER BY ds, country", max_rows=4)
            expect(page.locator("table.result tbody tr")).to_have_count(4)
            expect(page.locator("p.truncated")).to_contain_text("Only the first 4 rows are shown")
            page.screenshot(path=artifacts / "02-row-cap.png")
            timings["row cap"] = time.monotonic() - t

            step = "time limit"
            t = time.monotonic()
            _run(page, SLOW, max_rows=1000, timeout_s=1)
            error = page.get_by_role("alert")
            expect(error).to_contain_text("Time limit")
            expect(error).to_contain_text("query exceeded 1 s")
            page.screenshot(path=artifacts / "03-time-limit.png")
            timings["time limit"] = time.monotonic() - t

            step = "refused"
            t = time.monotonic()
            _run(page, "DELETE FROM retail.sales_by_country", timeout_s=30)
            expect(error).to_contain_text("Refused")
            expect(error).to_contain_text("DELETE statements are refused")
            _run(page, "SELECT * FROM read_csv('/etc/passwd')")
            expect(error).to_contain_text("Only the lake's tables can be read here")
            expect(page.locator("body")).not_to_contain_text("root:x:")
            page.screenshot(path=artifacts / "04-refused.png")
            timings["refused"] = time.monotonic() - t

            step = "json"
            resp = page.request.get(f"/lake/api/sql?sql={quote('SELECT count(*) AS n FROM retail._rejects_invoice_lines')}")
            assert resp.ok and resp.json()["rows"] == [[1]], resp.text()
        except Exception:
            page.screenshot(path=artifacts / f"failed-{step.replace(' ', '-')}.png")
            raise
        finally:
            browser.close()
    print("steps (s):", {k: round(v, 1) for k, v in timings.items()})
