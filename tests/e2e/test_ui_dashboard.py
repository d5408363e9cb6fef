"""A run's cluster dashboard one click away in the UI, and a monthly rollup triggered from the form, in chromium.

A deployment like `make run` (api-server, scheduler, dag-processor; SQLite, LocalExecutor; a fresh
AIRFLOW_HOME on a free loopback port; ``tests/e2e/stack.py``'s :func:`ui_deployment`, shared with
test_ui_browser.py) with ``olympics_etl`` and ``retail_monthly``, whose runs attach to the
runtime's engines (the session's ``engine_runtime``, as under ``make run``):

* **the dashboard**: an ``olympics_etl`` run on Dask over the small head input files; once its
  ``start_cluster`` succeeded the DAG is paused, which holds the run (Airflow schedules no task of
  a paused DAG's running run) while the jobs already queued finish. In
  chromium: "Lake" in the UI's navigation lists the run's cluster among the clusters of running
  runs; its "Dask dashboard" link (the address in the start task's XCom) opens the live Dask
  dashboard (bokeh, not the "Dask needs bokeh" page) inside the UI's frame; so does the run page's
  "Cluster" tab; ``/lake/clusters`` on a page of its own opens it in a new tab. Unpaused, the run
  succeeds; its teardown leaves the runtime's engine running, and the clusters page says so;
* **the monthly rollup**: ``retail_monthly`` triggered from its trigger form for the month
  ``2011-11`` (Advanced Options → Partition Key) over a lake holding every day of that month. The
  days are built in this process with the retail pipeline's real jobs (while Airflow boots and
  the first test runs), as test_ui_browser.py builds its week: the first week's trading days
  (2011-11-01 .. 07, six files) through ``retail.ingest_day`` >> ``retail.enrich`` >>
  ``retail.marts``, every other day with ``retail.empty_day`` (a day without trading). The whole
  month's 26 trading days took 90 s here, under load, in this process, for the same check: the
  rollup reads whatever days there are, and six real days with empty ones make it add up real
  rows, skip empty partitions and count trading days. The run must succeed in the UI and write the
  month's mart and report.

Screenshots of each step are kept under $ETL_TEST_ARTIFACTS (default tests/artifacts/)/ui_dashboard/.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from include.etl.lake import Lake
from tests.conftest import DATA_ROOT, ROOT, require_data
from tests.e2e.browser import launch, login, open_trigger_form
from tests.e2e.clusters import kill_leftovers
from tests.e2e.stack import Deployment, artifacts_dir, ui_deployment, wait
from tests.lake import part, read_partition
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow

OLYMPICS, MONTHLY = "olympics_etl", "retail_monthly"
MONTH, MONTH_START = "2011-11", "2011-11-01"
REAL_DAYS = 7  # the first week's days with a file run the real jobs; every other day is an empty day
DAYS_DIR = DATA_ROOT / "retail" / "by-day"
UI_TIMEOUT_MS = 30_000  # for what the UI shows after a reload or a navigation (2 busy cores here)
STATES_DONE = ("success", "failed", "upstream_failed", "skipped", "removed")


def _month_days() -> list[str]:
    first = dt.date.fromisoformat(MONTH_START)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(31)
            if (first + dt.timedelta(days=i)).month == first.month]


@pytest.fixture(scope="module", autouse=True)
def _inputs():
    """Before anything starts: the inputs are there, else the module fails (never skips)."""
    require_data(DATA_ROOT / "olympics" / "athlete_events_head.csv")
    require_data(DAYS_DIR / f"{MONTH_START}.csv")


# ---------------------------------------------------------------- the month's lake: the real jobs, in this process


def _build_month(lake: Path) -> dict:
    """Every day of the month as retail_daily publishes it; the first week's trading days with the real jobs."""
    from include.etl.engines.dask import DaskEngine
    from include.etl.jobs import get_job

    engine = DaskEngine("threads")  # dask's in-process threaded scheduler: no cluster

    def run(name: str, ds: str, **kwargs) -> dict:
        job = get_job(name)
        return job(job.context(engine=engine, lake_root=lake, ds=ds), **kwargs)

    real = []
    for ds in _month_days():
        source = DAYS_DIR / f"{ds}.csv"
        if source.is_file() and int(ds[-2:]) <= REAL_DAYS:
            for name, kwargs in (("retail.ingest_day", {"source": str(source)}), ("retail.enrich", {}),
                                 ("retail.marts", {})):
                run(name, ds, **kwargs)
            real.append(ds)
        else:
            run("retail.empty_day", ds, path=str(source), deadline="the test's deadline", decided="no file")
    check = run("retail.check_period", MONTH_START, period="month")
    assert check["complete"], check
    return {"real": real}


class _Background(threading.Thread):
    """The month's lake, built beside Airflow's start and the first test; :meth:`result` waits for it."""

    def __init__(self, lake: Path):
        super().__init__(name="build-month", daemon=True)
        self.lake, self.value, self.error, self.seconds = lake, None, None, None

    def run(self) -> None:
        t = time.monotonic()
        try:
            self.value = _build_month(self.lake)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test that needs the lake
            self.error = exc
        self.seconds = time.monotonic() - t

    def result(self, timeout: float = 600) -> dict:
        self.join(timeout)
        assert not self.is_alive(), f"building the month's lake took more than {timeout} s"
        if self.error is not None:
            raise self.error
        return self.value


# ---------------------------------------------------------------- the deployment


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir("ui_dashboard")


@pytest.fixture(scope="module")
def deployment(migrated_home_template, engine_runtime, tmp_path_factory):
    dags = [ROOT / "dags" / f"{OLYMPICS}.py", ROOT / "dags" / f"{MONTHLY}.py"]
    with ui_deployment(migrated_home_template, tmp_path_factory.mktemp("ui-dashboard"), dags,
                       ETL_DATA_DIR=str(DATA_ROOT), ETL_DEFAULT_BACKEND="dask", AIRFLOW__CORE__PARALLELISM="4",
                       **engine_runtime.env) as d:
        month = _Background(d.lake)
        month.start()
        try:
            for dag_id in (OLYMPICS, MONTHLY):
                wait(f"the DAG {dag_id} to be parsed", lambda dag_id=dag_id: d.api("GET", f"dags/{dag_id}")["dag_id"],
                     300, d.stack, interval=2)
            yield d, month
        finally:
            month.join(600)
            assert kill_leftovers(str(d.home)) == [], "a run started an engine of its own"


def _path(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


def _ti_state(d: Deployment, dag_id: str, run_id: str, task_id: str) -> str | None:
    return d.api("GET", f"dags/{_path(dag_id, 'dagRuns', run_id, 'taskInstances', task_id)}")["state"]


def _run_state(d: Deployment, dag_id: str, run_id: str) -> str | None:
    return d.api("GET", f"dags/{_path(dag_id, 'dagRuns', run_id)}")["state"]


def _finished(d: Deployment, dag_id: str, run_id: str) -> str | None:
    state = _run_state(d, dag_id, run_id)
    return state if state in ("success", "failed") else None


def _frame(page, url_prefix: str, timeout: float = 60):
    """The frame of the page whose document is at ``url_prefix`` (once it navigated there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:
            if frame.url.startswith(url_prefix):
                frame.wait_for_load_state()
                return frame
        page.wait_for_timeout(250)  # not time.sleep: Playwright's events (frame navigations) are handled meanwhile
    raise AssertionError(f"no frame at {url_prefix}: {[f.url for f in page.frames]}")


def _run_badge(page, run_id: str):
    """The state badge beside the run's heading on its page."""
    return page.get_by_role("heading", name=run_id, exact=True).locator("xpath=..").get_by_test_id("state-badge")


def _live_dask_dashboard(frame) -> None:
    """The Dask dashboard's status page, rendered by bokeh (not distributed's "needs bokeh" page)."""
    from playwright.sync_api import expect

    frame.wait_for_function("document.title === 'Dask: Status'", timeout=60_000)  # set by bokeh once it rendered
    assert "needs bokeh" not in frame.content()
    nav = frame.locator("#myTopnav")
    for name in ("Status", "Workers", "Tasks"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(frame.locator("canvas").first).to_be_attached(timeout=60_000)  # bokeh's plots (its websocket is up)


def test_running_clusters_dashboard_is_one_click_from_the_lake_and_the_run(deployment, engine_runtime, artifacts):
    from playwright.sync_api import expect, sync_playwright

    d, _ = deployment
    d.api("PATCH", f"dags/{OLYMPICS}", {"is_paused": False})
    # With a logical date, as the trigger form sends one: the job tasks read the run's `ds` from it.
    now = dt.datetime.now(dt.UTC).isoformat()
    run_id = d.api("POST", f"dags/{OLYMPICS}/dagRuns", {"logical_date": now, "conf": {"backend": "dask"}})["dag_run_id"]
    try:
        state = wait("start_cluster to succeed",
                     lambda: (s := _ti_state(d, OLYMPICS, run_id, "start_cluster")) in STATES_DONE and s, 420, d.stack,
                     interval=0.5)
    finally:  # hold the run here: no further task is scheduled while the DAG is paused
        d.api("PATCH", f"dags/{OLYMPICS}", {"is_paused": True})
    assert state == "success", d.stack.log("scheduler")
    handle = d.api("GET", f"dags/{_path(OLYMPICS, 'dagRuns', run_id, 'taskInstances', 'start_cluster')}"
                          "/xcomEntries/return_value")["value"]  # the cluster handle, as stored
    handle = json.loads(handle) if isinstance(handle, str) else handle
    dashboard = handle["dashboard_url"]
    assert not handle["owned"] and handle["extra"]["runtime"] and re.fullmatch(r"http://127\.0\.0\.1:\d+/status", dashboard), handle
    origin = dashboard.removesuffix("status")
    timings = {}

    with sync_playwright() as pw:
        browser = launch(pw)
        context = browser.new_context(base_url=d.url, viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        step = "login"
        try:
            t = time.monotonic()
            login(page, d.password(), "/lake/")

            step = "lake"  # the UI's navigation → Lake: the clusters of running runs, first on the page
            page.goto("/")
            page.get_by_role("link", name="Lake").click()
            expect(page).to_have_url(re.compile(r"/plugin/lake"))
            lake = page.frame_locator("iframe").first
            row = lake.locator("table.clusters tbody tr", has_text=run_id)
            expect(row.locator(".status")).to_have_text("running", timeout=UI_TIMEOUT_MS)
            link = row.get_by_role("link", name="Dask dashboard")
            expect(link).to_have_attribute("href", dashboard)
            page.screenshot(path=artifacts / "01-lake-clusters.png")
            step = "dashboard from the lake"
            link.click()  # one click: the dashboard opens inside the UI's frame
            _live_dask_dashboard(_frame(page, origin))
            page.screenshot(path=artifacts / "02-dashboard-in-the-ui.png")
            timings["lake → dashboard"] = time.monotonic() - t

            step = "the run's Cluster tab"
            t = time.monotonic()
            page.goto(f"/dags/{OLYMPICS}/runs/{quote(run_id, safe='')}")
            page.get_by_role("link", name="Cluster", exact=True).click()  # the plugin's tab of every run page
            expect(page).to_have_url(re.compile(r"/plugin/lake-cluster$"))
            tab = page.frame_locator("iframe").first
            expect(tab.get_by_role("heading", name="Cluster of this run")).to_be_visible(timeout=UI_TIMEOUT_MS)
            link = tab.locator("table.clusters").get_by_role("link", name="Dask dashboard")
            expect(link).to_have_attribute("href", dashboard)
            page.screenshot(path=artifacts / "03-run-cluster-tab.png")
            link.click()
            _live_dask_dashboard(_frame(page, origin))
            page.screenshot(path=artifacts / "04-dashboard-from-the-run.png")
            timings["run → dashboard"] = time.monotonic() - t

            step = "clusters page on its own"  # a bookmark of /lake/clusters: the dashboard in a new tab
            t = time.monotonic()
            page.goto("/lake/clusters")
            link = page.locator("table.clusters tbody tr", has_text=run_id).get_by_role("link", name="Dask dashboard")
            expect(link).to_have_attribute("target", "_blank")
            with context.expect_page() as new_tab:
                link.click()
            dash = new_tab.value
            dash.wait_for_load_state()
            assert dash.url == dashboard
            _live_dask_dashboard(dash.main_frame)
            dash.screenshot(path=artifacts / "05-dashboard-new-tab.png")
            dash.close()
            timings["new tab"] = time.monotonic() - t

            step = "the run ends"  # unpaused: the run goes on; its teardown leaves the runtime's engine running
            t = time.monotonic()
            d.api("PATCH", f"dags/{OLYMPICS}", {"is_paused": False})
            assert wait(f"{OLYMPICS} to finish", lambda: _finished(d, OLYMPICS, run_id), 600, d.stack) == "success"
            page.reload()
            row = page.locator("table.clusters tbody tr", has_text=run_id)
            expect(row.locator(".status")).to_have_text("running", timeout=UI_TIMEOUT_MS)
            expect(row).to_contain_text("the runtime's engine", timeout=UI_TIMEOUT_MS)
            page.screenshot(path=artifacts / "06-run-ended-engine-runs.png")
            assert processes_with_env(str(d.home)) == [], "the run started an engine of its own"
            assert engine_runtime.handle("dask").address == handle["address"], "the teardown stopped the runtime's engine"
            timings["run to the end"] = time.monotonic() - t
        except Exception:
            page.screenshot(path=artifacts / f"failed-{step.replace(' ', '-')}.png")
            raise
        finally:
            d.api("PATCH", f"dags/{OLYMPICS}", {"is_paused": True})
            browser.close()
    print("steps (s):", {k: round(v, 1) for k, v in timings.items()})


def test_monthly_rollup_triggered_for_a_month_from_the_form(deployment, artifacts):
    from playwright.sync_api import expect, sync_playwright

    d, month = deployment
    built = month.result()
    assert built["real"] == [f"2011-11-{n:02d}" for n in (1, 2, 3, 4, 6, 7)], built
    published = Lake(d.lake, "retail").published_days("sales_by_country")
    assert len([ds for ds in published if ds.startswith(f"{MONTH}-")]) == len(_month_days()) == 30
    print(f"the month's lake: {month.seconds:.1f} s")
    before = {r["dag_run_id"] for r in d.api("GET", f"dags/{MONTHLY}/dagRuns")["dag_runs"]}

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(base_url=d.url, viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        step = "login"
        try:
            login(page, d.password(), "/lake/")
            step = "trigger form"
            dialog = open_trigger_form(page, MONTHLY)
            dialog.get_by_text("Advanced Options").click()
            key = dialog.get_by_label("Partition Key")
            expect(key).to_be_visible()
            key.fill(MONTH)
            page.screenshot(path=artifacts / "11-trigger-monthly.png")
            dialog.get_by_role("button", name="Trigger").last.click()
            expect(dialog).to_be_hidden(timeout=UI_TIMEOUT_MS)

            step = "run"
            run = wait("the triggered run", lambda: [r for r in d.api("GET", f"dags/{MONTHLY}/dagRuns")["dag_runs"]
                                                     if r["dag_run_id"] not in before], 60, d.stack)[0]
            assert run["partition_key"] == MONTH, run
            run_id = run["dag_run_id"]
            expect(page).to_have_url(re.compile(rf"/dags/{MONTHLY}/runs/"))  # the form opens the new run
            expect(_run_badge(page, run_id)).to_be_visible(timeout=UI_TIMEOUT_MS)
            page.screenshot(path=artifacts / "12-monthly-run-started.png")
            state = wait(f"{MONTHLY} to finish", lambda: _finished(d, MONTHLY, run_id), 900, d.stack, interval=2)
            assert state == "success", [(t, _ti_state(d, MONTHLY, run_id, t)) for t in
                                        ("check_period", "start_cluster", "rollup", "stop_cluster")]
            page.reload()
            expect(_run_badge(page, run_id)).to_have_text("Success", timeout=UI_TIMEOUT_MS)
            expect(page.get_by_text(MONTH, exact=True).first).to_be_visible()  # its partition key
            page.screenshot(path=artifacts / "13-monthly-run-success.png")
        except Exception:
            page.screenshot(path=artifacts / f"failed-{step.replace(' ', '-')}.png")
            raise
        finally:
            browser.close()

    report = d.lake / "retail" / "_reports" / "monthly_sales_by_country" / f"ds={MONTH_START}" / "report.html"
    mart = read_partition(part(d.lake, "retail", "monthly_sales_by_country", MONTH_START))
    assert report.is_file() and mart.num_rows > 0, (report, mart.num_rows)
