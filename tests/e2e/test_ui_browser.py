"""The Airflow UI in a real browser: login, a trigger form, and a report opened from the lake browser.

A deployment like `make run` (api-server, scheduler, dag-processor; SQLite; a fresh AIRFLOW_HOME
on a free loopback port) over a lake this test fills with a small Parquet table, its rejects and
a report page with charts (an inline SVG bar chart, and a canvas chart drawn by the page's own
script; nothing is fetched). Playwright drives Debian's chromium (installed by bin/install-browser;
Playwright's own browser download is not reachable from CI):

* without a session the lake browser answers 401 (API) or sends the browser to Airflow's login;
* log in with the generated admin password;
* open the trigger form of a DAG and see a field for each of its params;
* open "Lake" from the UI's navigation, click through pipeline → table (row and reject counts)
  → report, and see its charts rendered, inside a sandbox that keeps the report's script away
  from the Airflow session.

Screenshots of each step are kept under $ETL_TEST_ARTIFACTS (default tests/artifacts/)/ui_browser/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.airflow_env import project_env
from tests.e2e.stack import Api, Stack, free_port, wait

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("ETL_CHROMIUM", "/usr/bin/chromium")
# The DAG whose trigger form is opened: a fixture DAG of the platform's operators (its params are
# read from the REST API, so the form check does not depend on which params it has).
DAG_FILE = ROOT / "dags" / "retail_daily.py"
DAG_ID = "retail_daily"
PIPELINE, TABLE, DS = "shop", "orders", "2024-07-08"
ROWS, REJECTS = 12, 3
DAYS = [("Mon", 120), ("Tue", 80), ("Wed", 150), ("Thu", 60), ("Fri", 110)]

REPORT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Orders report {ds}</title>
<style>body {{ font-family: sans-serif; margin: 16px; }} .bar {{ fill: #3182ce; }} h2 {{ font-size: 16px; }}</style>
</head><body>
<h1>Orders, {ds}</h1>
<h2>Revenue per day</h2>
<svg id="revenue-chart" width="320" height="180" role="img" aria-label="revenue per day">
{bars}
</svg>
<h2>Orders trend</h2>
<canvas id="trend-chart" width="320" height="160"></canvas>
<script>
  // The chart library of a real report would be inlined the same way: no CDN, no network.
  const canvas = document.getElementById("trend-chart");
  const ctx = canvas.getContext("2d");
  const values = {values};
  ctx.strokeStyle = "#e53e3e"; ctx.lineWidth = 4; ctx.beginPath();
  values.forEach((v, i) => {{ const x = 20 + i * 70, y = 150 - v; i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); }});
  ctx.stroke();
  ctx.fillStyle = "#e53e3e"; ctx.fillRect(130, 60, 60, 60);
  canvas.dataset.drawn = "yes";
  // What the sandbox must deny this page: the Airflow session and the API.
  let cookie; try {{ cookie = document.cookie === "" ? "empty" : "visible"; }} catch (e) {{ cookie = "blocked"; }}
  document.body.dataset.cookie = cookie;
  fetch("/api/v2/dags", {{credentials: "include"}})
    .then(r => {{ document.body.dataset.api = "status " + r.status; }})
    .catch(() => {{ document.body.dataset.api = "blocked"; }});
</script>
</body></html>
"""


def _report_html() -> str:
    bars = "\n".join(
        f'<rect class="bar" data-day="{d}" x="{10 + i * 60}" y="{170 - v}" width="40" height="{v}"/>'
        for i, (d, v) in enumerate(DAYS))
    return REPORT.format(ds=DS, bars=bars, values=[v // 2 for _, v in DAYS])


def _fill_lake(lake: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = lake / PIPELINE / TABLE / f"ds={DS}"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"order_id": list(range(ROWS)), "amount": [1.5 * i for i in range(ROWS)]}),
                   part / "part-0.parquet")
    (part / "report.html").write_text(_report_html())
    rejects = lake / PIPELINE / "_rejects" / TABLE / f"ds={DS}"
    rejects.mkdir(parents=True)
    pq.write_table(pa.table({"_line": list(range(REJECTS)), "_reason": ["Quantity is not a number"] * REJECTS}),
                   rejects / "part-0.parquet")


@pytest.fixture(scope="module")
def artifacts() -> Path:
    out = Path(os.environ.get("ETL_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts") / "ui_browser"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


@pytest.fixture(scope="module")
def deployment(migrated_home_template, tmp_path_factory):
    base = tmp_path_factory.mktemp("ui-browser")
    home = base / "airflow"
    shutil.copytree(migrated_home_template, home, ignore=shutil.ignore_patterns("airflow.cfg", "logs"))
    dags = base / "dags"
    dags.mkdir()
    (dags / DAG_FILE.name).symlink_to(DAG_FILE)
    lake = base / "lake"
    _fill_lake(lake)
    port = free_port()
    env = project_env(
        home,
        ETL_LAKE_ROOT=str(lake),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
    )
    stack = Stack(base)
    for component in ("api-server", "scheduler", "dag-processor"):
        stack.start(component, [str(ROOT / "bin" / "airflow"), component], env)
    api = Api(port, home)
    try:
        wait(f"the DAG {DAG_ID} to be parsed", lambda: api("GET", f"dags/{DAG_ID}")["dag_id"], 180, stack)
        yield {"api": api, "base": api.base, "home": home, "stack": stack}
    finally:
        stack.stop_all()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _status(url: str, **headers: str) -> tuple[int, dict]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_login_trigger_form_and_report_charts(deployment, artifacts):
    from playwright.sync_api import expect, sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run bin/install-browser (make test does) to install Debian's chromium")
    base, api = deployment["base"], deployment["api"]
    report_path = f"{PIPELINE}/{TABLE}/ds={DS}/report.html"

    # Behind Airflow's login: no session, no lake.
    assert _status(f"{base}/lake/api/pipelines")[0] == 401
    assert _status(f"{base}/lake/files/{report_path}")[0] == 401
    code, headers = _status(f"{base}/lake/", Accept="text/html")
    assert code == 302 and headers["location"].startswith("/auth/login"), (code, headers)

    password = json.loads((deployment["home"] / "simple_auth_manager_passwords.json").read_text())["admin"]
    params = list(api("GET", f"dags/{DAG_ID}/details")["params"])
    assert params, f"{DAG_ID} has no params to show in its trigger form"
    timings = {}

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(base_url=base, viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        step = "login"
        try:
            t = time.monotonic()
            page.goto("/lake/")  # a bookmark of the lake browser, without a session: Airflow's login page
            expect(page).to_have_url(re.compile(r"/auth/login"))
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(password)
            page.screenshot(path=artifacts / "01-login.png")
            page.locator("button[type=submit]").click()
            expect(page).to_have_url(re.compile(r"/lake/$"))  # back where the login was asked for
            expect(page.get_by_role("heading", name="Lake")).to_be_visible()
            timings["login"] = time.monotonic() - t

            step = "trigger form"
            t = time.monotonic()
            page.goto(f"/dags/{DAG_ID}")
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text(f"Trigger Dag - {DAG_ID}")).to_be_visible()
            expect(dialog.get_by_text("Run Parameters")).to_be_visible()
            details = api("GET", f"dags/{DAG_ID}/details")["params"]
            for name in params:
                # required params carry a '*' after their name
                label = dialog.locator("label", has_text=re.compile(rf"^\s*{re.escape(name)}\s*\*?\s*$"))
                expect(label).to_be_visible()
                description = (details[name] or {}).get("description")
                assert description, f"{DAG_ID}: param {name} has no description for the form"
                expect(dialog.get_by_text(description)).to_be_visible()  # shown under the param's field
            expect(dialog.get_by_role("spinbutton")).to_have_value("6")  # deadline_hours' default
            page.screenshot(path=artifacts / "02-trigger-form.png")
            page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()
            timings["trigger form"] = time.monotonic() - t

            step = "lake browser"
            t = time.monotonic()
            page.get_by_role("link", name="Lake").click()  # the plugin's entry in the UI's navigation
            expect(page).to_have_url(re.compile(r"/plugin/lake"))
            lake = page.frame_locator("iframe").first  # the plugin's page, inside the UI
            expect(lake.get_by_role("heading", name="Lake")).to_be_visible()
            expect(lake.locator("a.report-link", has_text="report.html")).to_be_visible()  # latest reports
            page.screenshot(path=artifacts / "03-lake.png")
            lake.locator("a.pipeline-link", has_text=PIPELINE).click()
            lake.locator("a.table-link", has_text=TABLE).click()
            row = lake.locator("table.partitions tbody tr", has_text=DS)
            expect(row).to_be_visible()
            cells = row.locator("td")
            expect(cells.nth(1)).to_have_text(f"{ROWS}")  # rows, from the Parquet footer
            expect(cells.nth(2)).to_have_text(f"{REJECTS}")  # rejects of the same partition
            page.screenshot(path=artifacts / "04-table.png")
            timings["lake browser"] = time.monotonic() - t

            step = "report"
            t = time.monotonic()
            row.locator("a.report-link").click()
            report = lake.frame_locator("iframe#report")
            expect(report.get_by_role("heading", name=f"Orders, {DS}")).to_be_visible()
            bars = report.locator("#revenue-chart rect.bar")
            expect(bars).to_have_count(len(DAYS))
            for i, (_, value) in enumerate(DAYS):
                box = bars.nth(i).bounding_box()
                assert box and box["width"] > 0 and abs(box["height"] - value) < 1, (i, box)
            canvas = report.locator("#trend-chart")
            expect(canvas).to_have_attribute("data-drawn", "yes")
            # the square the script drew is painted: a red pixel in the middle of it
            pixel = canvas.evaluate("c => Array.from(c.getContext('2d').getImageData(160, 90, 1, 1).data)")
            assert pixel[0] > 200 and pixel[1] < 100 and pixel[3] == 255, pixel
            # the sandbox: the report's script can read neither the session nor the API
            body = report.locator("body")
            expect(body).to_have_attribute("data-cookie", "blocked")
            expect(body).to_have_attribute("data-api", "blocked")
            page.screenshot(path=artifacts / "05-report.png")
            timings["report"] = time.monotonic() - t
        except Exception:
            page.screenshot(path=artifacts / f"failed-{step.replace(' ', '-')}.png")
            raise
        finally:
            browser.close()
    print("browser steps (s):", {k: round(v, 1) for k, v in timings.items()})
