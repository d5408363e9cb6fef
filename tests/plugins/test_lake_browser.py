"""The lake browser plugin (plugins/etl_platform/lake_browser) on a small lake built here.

The app runs under FastAPI's TestClient with Airflow's SimpleAuthManager and real JWTs: listing,
row and reject counts from Parquet footers, report serving, path traversal refused, read-only
routes, and Airflow's login enforced (also once through the whole api-server app, mounted by the
plugin manager from the plugins folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT

REPORT = """<!doctype html><html><head><meta charset="utf-8"><title>Monthly report</title></head>
<body><h1>Revenue</h1><svg id="revenue-chart" width="200" height="100">
<rect class="bar" x="10" y="40" width="30" height="60"/><rect class="bar" x="50" y="20" width="30" height="80"/>
</svg></body></html>
"""


def _parquet(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": list(range(rows)), "name": [f"n{i}" for i in range(rows)]}), path)


@pytest.fixture
def lake(tmp_path) -> Path:
    """A lake of two pipelines, with everything that must not show up around them."""
    root = tmp_path / "lake"
    shop = root / "shop"
    # orders: two files in one partition, an empty partition, a report, Spark's marker files
    _parquet(shop / "orders" / "ds=2024-01-01" / "part-0.parquet", 3)
    _parquet(shop / "orders" / "ds=2024-01-01" / "part-1.parquet", 4)
    (shop / "orders" / "ds=2024-01-01" / "_SUCCESS").write_text("")
    (shop / "orders" / "ds=2024-01-01" / ".part-0.parquet.crc").write_text("not parquet")
    (shop / "orders" / "ds=2024-01-01" / "report.html").write_text(REPORT)
    (shop / "orders" / "ds=2024-01-02").mkdir(parents=True)  # a day without data: empty partition
    _parquet(shop / "orders" / "ds=2024-01-03" / "nested" / "part-0.parquet", 5)  # nested directories
    (shop / "orders" / "ds=not-a-date").mkdir()  # not a partition
    (shop / "orders" / "notes.txt").write_text("not a partition")
    _parquet(shop / "orders" / ".staging-ds=2024-01-04-abc" / "part-0.parquet", 9)  # being written
    # rejects of orders for one day, and of an input that has no table (yet)
    _parquet(shop / "_rejects" / "orders" / "ds=2024-01-01" / "part-0.parquet", 2)
    _parquet(shop / "_rejects" / "lines" / "ds=2024-01-01" / "part-0.parquet", 1)
    _parquet(shop / "customers" / "ds=2024-01-03" / "part-0.parquet", 10)
    (shop / "_tmp").mkdir()
    (shop / ".staging-x").mkdir()
    _parquet(root / "weather" / "daily" / "ds=2023-12-31" / "part.0.parquet", 6)
    (root / ".trash").mkdir()
    (root / "_internal").mkdir()
    (root / "README.txt").write_text("a file, not a pipeline")
    (tmp_path / "secret.txt").write_text("TOP SECRET outside the lake")
    return root


@pytest.fixture(scope="module")
def auth():
    """Airflow's SimpleAuthManager (as the api-server initialises it) and a JWT per role."""
    from airflow import settings
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.models.revoked_token import RevokedToken

    # Validating a JWT looks its id up among the revoked tokens: the one table these tests need
    # in this process's (unmigrated) metadata DB.
    RevokedToken.__table__.create(settings.get_engine(), checkfirst=True)
    am = init_auth_manager()

    def token(role: str | None, username: str = "someone") -> str:
        return am.generate_jwt(SimpleAuthManagerUser(username=username, role=role))

    return token


def _no_runs(**query) -> list:
    return []


@pytest.fixture
def client(lake, auth) -> TestClient:
    from etl_platform.lake_browser.app import create_app

    # No Airflow DB in this process: the runs' clusters come from the tests (below).
    c = TestClient(create_app(lake_root=lake, cluster_runs=_no_runs), root_path="/lake", follow_redirects=False)
    c.headers["Authorization"] = f"Bearer {auth('viewer')}"
    return c


def test_lists_pipelines_ignoring_hidden_and_internal_names(client, lake):
    body = client.get("/api/pipelines").json()
    assert [p["name"] for p in body["pipelines"]] == ["shop", "weather"]
    assert {p["name"]: p["tables"] for p in body["pipelines"]} == {"shop": 3, "weather": 1}
    assert {p["name"]: p["latest"] for p in body["pipelines"]} == {"shop": "2024-01-03", "weather": "2023-12-31"}
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/lake/pipelines/shop"' in page.text and 'href="/lake/pipelines/weather"' in page.text
    for hidden in (".trash", "_internal", "README.txt", "_rejects", ".staging"):
        assert hidden not in page.text


def test_tables_of_a_pipeline_with_latest_counts(client):
    tables = {t["name"]: t for t in client.get("/api/pipelines/shop").json()["tables"]}
    # `_rejects/lines` is the rejects of a table `lines` that has no data partition yet
    assert list(tables) == ["customers", "lines", "orders"]
    assert tables["orders"] == {"name": "orders", "partitions": 3, "latest": "2024-01-03", "latest_rows": 5,
                                "latest_rejects": None, "has_rejects": True, "reports": 1}
    assert tables["customers"]["latest_rows"] == 10 and tables["customers"]["has_rejects"] is False
    assert tables["lines"]["partitions"] == 0 and tables["lines"]["has_rejects"] is True
    page = client.get("/pipelines/shop").text
    assert 'href="/lake/pipelines/shop/tables/orders"' in page


def test_partitions_with_row_and_reject_counts_from_footers(client):
    parts = client.get("/api/pipelines/shop/tables/orders").json()["partitions"]
    assert [p["ds"] for p in parts] == ["2024-01-03", "2024-01-02", "2024-01-01"]  # newest first
    by_ds = {p["ds"]: p for p in parts}
    assert by_ds["2024-01-01"]["rows"] == 7 and by_ds["2024-01-01"]["files"] == 2  # _SUCCESS, .crc, html ignored
    assert by_ds["2024-01-01"]["rejects"] == 2
    assert by_ds["2024-01-01"]["reports"] == ["shop/orders/ds=2024-01-01/report.html"]
    assert by_ds["2024-01-02"] | {} == {"ds": "2024-01-02", "rows": 0, "rejects": None, "files": 0, "bytes": 0,
                                        "reports": [], "error": None, "rejects_error": None}
    assert by_ds["2024-01-03"]["rows"] == 5 and by_ds["2024-01-03"]["rejects"] is None
    lines = client.get("/api/pipelines/shop/tables/lines").json()["partitions"]
    assert lines == [{"ds": "2024-01-01", "rows": None, "rejects": 1, "files": 0, "bytes": 0, "reports": [],
                      "error": None, "rejects_error": None}]

    page = client.get("/pipelines/shop/tables/orders", headers={"Accept": "text/html"}).text
    assert page.count('<span class="ds">') == 3 and ">7<" in page and ">2<" in page
    assert 'href="/lake/reports/shop/orders/ds=2024-01-01/report.html"' in page


def test_an_unreadable_partition_is_shown_not_a_failed_page(client, lake):
    (lake / "weather" / "daily" / "ds=2024-01-01").mkdir()
    (lake / "weather" / "daily" / "ds=2024-01-01" / "part-0.parquet").write_bytes(b"garbage, not parquet")
    parts = {p["ds"]: p for p in client.get("/api/pipelines/weather/tables/daily").json()["partitions"]}
    assert parts["2024-01-01"]["rows"] is None and parts["2024-01-01"]["error"]
    assert parts["2023-12-31"]["rows"] == 6
    assert "unreadable" in client.get("/pipelines/weather/tables/daily").text


def test_report_is_served_sandboxed_and_framed_by_its_page(client):
    rel = "shop/orders/ds=2024-01-01/report.html"
    resp = client.get(f"/files/{rel}")
    assert resp.status_code == 200 and resp.text == REPORT
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    csp = resp.headers["content-security-policy"]
    assert csp.startswith("sandbox allow-scripts") and "default-src 'none'" in csp
    assert "allow-same-origin" not in csp
    page = client.get(f"/reports/{rel}")
    assert page.status_code == 200
    assert f'src="/lake/files/{rel}"' in page.text and 'sandbox="allow-scripts' in page.text
    assert 'href="/lake/pipelines/shop/tables/orders"' in page.text  # breadcrumbs back to the table
    # a Parquet file is a download of the lake too, but never a report page
    assert client.get("/files/shop/orders/ds=2024-01-01/part-0.parquet").status_code == 200
    assert client.get("/reports/shop/orders/ds=2024-01-01/part-0.parquet").status_code == 404
    assert client.get("/files/shop/orders/ds=2024-01-01/missing.html").status_code == 404


@pytest.mark.parametrize("path", [
    "%2e%2e/secret.txt",
    "shop/%2e%2e/%2e%2e/secret.txt",
    "shop/orders/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "shop%2F..%2F..%2Fsecret.txt",
    "shop/orders/.staging-ds=2024-01-04-abc/part-0.parquet",
    "shop/link-out/secret.txt",
    "shop/link-file",
    "shop/orders/ds=2024-01-01%00.html",
    "shop\\..\\..\\secret.txt",
    "shop/orders",
])
def test_path_traversal_and_hidden_files_are_refused(client, lake, path):
    (lake / "shop" / "link-out").symlink_to(lake.parent)  # a symlink out of the lake
    (lake / "shop" / "link-file").symlink_to(lake.parent / "secret.txt")
    for route in ("files", "reports"):
        resp = client.get(f"/{route}/{path}")
        assert resp.status_code == 404, (route, path, resp.status_code)
        assert "TOP SECRET" not in resp.text and "root:" not in resp.text


def test_traversal_through_names_is_refused(client):
    for url in ("/api/pipelines/%2e%2e", "/api/pipelines/shop/tables/%2e%2e", "/api/pipelines/_rejects",
                "/api/pipelines/shop/tables/_rejects", "/api/pipelines/.trash", "/pipelines/nope",
                "/pipelines/shop/tables/nope", "/api/pipelines/shop/tables/.staging-x"):
        assert client.get(url).status_code == 404, url


def test_resolve_file_directly(lake):
    from etl_platform.lake_browser.catalog import Catalog

    cat = Catalog(lake)
    assert cat.resolve_file("shop/orders/ds=2024-01-01/report.html") == (lake / "shop/orders/ds=2024-01-01/report.html").resolve()
    assert cat.resolve_file("shop/_rejects/orders/ds=2024-01-01/part-0.parquet") is not None
    for bad in ("../secret.txt", "shop/../../secret.txt", "/etc/passwd", "", "shop//orders", "./shop",
                str(lake.parent / "secret.txt"), "shop/orders/ds=2024-01-01/_SUCCESS"):
        assert cat.resolve_file(bad) is None, bad


def test_only_get_routes(client):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for url in ("/", "/api/pipelines", "/files/shop/orders/ds=2024-01-01/report.html"):
            assert client.request(method, url).status_code == 405, (method, url)
    from etl_platform.lake_browser.app import create_app

    methods = {m for r in create_app(Path("/nonexistent")).routes for m in getattr(r, "methods", ())}
    assert methods <= {"GET", "HEAD"}, methods


def test_airflow_login_is_required(lake, auth):
    from etl_platform.lake_browser.app import create_app

    anon = TestClient(create_app(lake_root=lake), root_path="/lake", follow_redirects=False)
    for url in ("/", "/api/pipelines", "/pipelines/shop/tables/orders",
                "/files/shop/orders/ds=2024-01-01/report.html", "/reports/shop/orders/ds=2024-01-01/report.html"):
        resp = anon.get(url)
        assert resp.status_code == 401, (url, resp.status_code)
        assert "Revenue" not in resp.text and "orders" not in resp.text
    # a browser without a session is sent to Airflow's login, and back here afterwards
    resp = anon.get("/pipelines/shop", headers={"Accept": "text/html,application/xhtml+xml"})
    assert resp.status_code == 302 and resp.headers["location"] == "/auth/login?next=%2Flake%2Fpipelines%2Fshop"
    # a forged token
    resp = anon.get("/api/pipelines", headers={"Authorization": "Bearer not.a.jwt"})
    assert resp.status_code == 403
    # an authenticated user the auth manager gives no permission
    resp = anon.get("/api/pipelines", headers={"Authorization": f"Bearer {auth(None)}"})
    assert resp.status_code == 403 and "may not read the lake browser" in resp.text
    # the UI's session cookie, and every role from viewer up
    anon.cookies.set("_token", auth("viewer"))
    assert anon.get("/api/pipelines").status_code == 200
    anon.cookies.clear()
    for role in ("viewer", "user", "op", "admin"):
        assert anon.get("/api/pipelines", headers={"Authorization": f"Bearer {auth(role)}"}).status_code == 200


def test_settings_give_the_lake_root(lake, auth, monkeypatch):
    from etl_platform.lake_browser.app import create_app

    monkeypatch.setenv("ETL_LAKE_ROOT", str(lake))
    c = TestClient(create_app(), headers={"Authorization": f"Bearer {auth('viewer')}"})
    assert [p["name"] for p in c.get("/api/pipelines").json()["pipelines"]] == ["shop", "weather"]


def test_mounted_by_the_api_server_behind_its_login(lake, auth, monkeypatch):
    """The whole api-server app, with the plugin found in the plugins folder as Airflow finds it."""
    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app

    monkeypatch.setenv("ETL_LAKE_ROOT", str(lake))
    plugins, errors = plugins_manager._get_plugins()
    assert "lake_browser" in [p.name for p in plugins] and not errors, errors
    external, _ = plugins_manager._get_ui_plugins()
    view = next(v for v in external if v["name"] == "Lake")
    assert view["href"] == "/lake/" and view["url_route"] == "lake" and view["destination"] == "nav"

    api = TestClient(create_app(apps="core"), follow_redirects=False)
    assert api.get("/lake/api/pipelines").status_code == 401
    assert api.get("/lake/files/shop/orders/ds=2024-01-01/report.html").status_code == 401
    api.cookies.set("_token", auth("viewer"))
    resp = api.get("/lake/api/pipelines")
    assert resp.status_code == 200 and [p["name"] for p in resp.json()["pipelines"]] == ["shop", "weather"]
    page = api.get("/lake/pipelines/shop/tables/orders", headers={"Accept": "text/html"})
    assert page.status_code == 200 and 'href="/lake/reports/shop/orders/ds=2024-01-01/report.html"' in page.text
    assert api.get("/lake/files/shop/orders/ds=2024-01-01/report.html").text == REPORT


def test_loading_the_plugin_imports_nothing_heavy():
    """Every Airflow component loads plugins; only the api-server builds the FastAPI app."""
    code = textwrap.dedent(
        """
        import sys
        import lake_browser_plugin
        assert lake_browser_plugin.LakeBrowserPlugin.name == "lake_browser"
        heavy = ("fastapi", "starlette", "pandas", "pyarrow", "numpy", "dask", "pyspark", "narwhals", "polars")
        print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line == "HEAVY=", f"loading the plugin imported: {line[6:]}"


# ---------------------------------------------------------------- the runs' clusters (clusters.py)

DASK_URL, SPARK_URL = "http://127.0.0.1:8787/status", "http://127.0.0.1:4040"


def _records():
    """What Airflow recorded of six runs' cluster setups: every kind of cluster and status."""
    import datetime as dt

    from etl_platform.lake_browser.clusters import RunRecord

    t = dt.datetime(2024, 7, 8, 12, 0, tzinfo=dt.UTC)

    def handle(backend, url, owned=True, **kw):
        return {"backend": backend, "address": f"tcp://127.0.0.1:1{len(kw)}", "owned": owned, "dashboard_url": url,
                "pids": [1, 2], "workdir": f"/w/{backend}", "conn_id": None, "extra": {}, **kw}

    return [
        RunRecord("olympics_etl", "manual__own_running", "running", t, "start_cluster", start_state="success",
                  handle=handle("dask", DASK_URL)),
        RunRecord("olympics_etl", "manual__<script>alert(1)</script>", "running", t, "start_cluster",
                  start_state="running"),
        RunRecord("retail_daily", "scheduled__shared", "success", t, "start_cluster", start_state="success",
                  handle=handle("spark", SPARK_URL, owned=False, extra={"reuse": "shared"})),
        RunRecord("olympics_etl", "manual__own_stopped", "success", t, "start_cluster", start_state="success",
                  handle=handle("dask", "http://127.0.0.1:9999/status", workdir="/w/stopped"),
                  teardown_states=["success"]),
        RunRecord("nz_trade_etl", "manual__attached", "failed", t, "start_cluster", start_state="success",
                  handle=handle("dask", "javascript:alert(1)", owned=False, conn_id="dask_default")),
        RunRecord("secret_dag", "manual__hidden", "running", t, "start_cluster", start_state="success",
                  handle=handle("dask", DASK_URL)),
    ]


@pytest.fixture
def cluster_client(lake, auth, monkeypatch) -> tuple[TestClient, list]:
    """The app over :func:`_records`; the auth manager lets nobody read ``secret_dag``'s XComs."""
    from airflow.api_fastapi.app import get_auth_manager

    from etl_platform.lake_browser.app import create_app

    queries: list[dict] = []

    def runs(**query):
        queries.append(query)
        rows = [r for r in _records() if query.get("dag_id") in (None, r.dag_id) and query.get("run_id") in (None, r.run_id)]
        return rows[:query.get("limit") or None]

    am = get_auth_manager()
    allowed = am.is_authorized_dag
    monkeypatch.setattr(am, "is_authorized_dag", lambda **kw: kw["details"].id != "secret_dag" and allowed(**kw))
    checks = {
        "local": lambda handle: handle["workdir"] != "/w/stopped",  # the stopped run's processes are gone
        "shared": lambda backend: {"backend": backend, "address": "sc://127.0.0.1:15099", "dashboard_url": "http://127.0.0.1:4041"},
    }
    c = TestClient(create_app(lake_root=lake, cluster_runs=runs, cluster_checks=checks), root_path="/lake",
                   follow_redirects=False)
    c.headers["Authorization"] = f"Bearer {auth('viewer')}"
    return c, queries


def test_clusters_of_runs_with_their_status_and_dashboard(cluster_client):
    client, _ = cluster_client
    rows = {r["run_id"]: r for r in client.get("/api/clusters").json()["clusters"]}
    assert "manual__hidden" not in rows  # a DAG whose XComs the user may not read
    own = rows["manual__own_running"]
    assert (own["mode"], own["status"], own["dashboard_url"], own["dashboard_name"]) == ("own", "running", DASK_URL,
                                                                                         "Dask dashboard")
    assert own["run_start"] == "2024-07-08T12:00:00+00:00"
    starting = rows["manual__<script>alert(1)</script>"]
    assert (starting["status"], starting["dashboard_url"]) == ("starting", None)
    shared = rows["scheduled__shared"]  # the shared cluster running now, which replaced the run's
    assert (shared["mode"], shared["status"], shared["dashboard_url"]) == ("shared", "running", "http://127.0.0.1:4041")
    assert shared["address"] == "sc://127.0.0.1:15099" and "replaced since this run started" in shared["note"]
    stopped = rows["manual__own_stopped"]  # a dead address is not linked
    assert (stopped["status"], stopped["dashboard_url"]) == ("stopped", None)
    attached = rows["manual__attached"]  # never a link that is not http(s)
    assert (attached["status"], attached["dashboard_url"]) == ("attached", None)
    assert "connection dask_default" in attached["note"]


def test_clusters_page_links_each_running_dashboard(cluster_client):
    client, _ = cluster_client
    page = client.get("/clusters", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-security-policy"].startswith("default-src 'self'")
    text = page.text
    # On a page of its own a dashboard opens in a new tab: another origin, a plain link.
    assert f'<a class="dashboard-link" href="{DASK_URL}" target="_blank" rel="noopener noreferrer">Dask dashboard</a>' in text
    assert 'href="http://127.0.0.1:4041" target="_blank"' in text and ">Spark UI</a>" in text
    assert text.count('class="dashboard-link"') == 2  # not the stopped, starting, attached (javascript:) or hidden ones
    assert "9999" not in text.split("manual__own_stopped")[1].split("</tr>")[0].replace("tcp://", "")
    assert "javascript:" not in text and "<script>" not in text and "&lt;script&gt;" in text
    assert "secret_dag" not in text
    for status in ("running", "starting", "stopped", "attached"):
        assert f'class="status status-{status}"' in text
    # In the UI's frame (sandboxed without allow-popups, where target=_blank is blocked) it opens in the frame.
    framed = client.get("/clusters", headers={"Accept": "text/html", "Sec-Fetch-Dest": "iframe"}).text
    assert f'<a class="dashboard-link" href="{DASK_URL}">Dask dashboard</a>' in framed and 'target="_blank"' not in framed
    assert "Ctrl-click" in framed and "The Spark UI refuses to be shown inside another page" in framed


def test_lake_index_shows_the_clusters_of_running_runs(cluster_client):
    client, _ = cluster_client
    text = client.get("/", headers={"Accept": "text/html"}).text
    section = text.split('id="clusters"')[1].split("<h2>")[0]
    assert "manual__own_running" in section and f'href="{DASK_URL}"' in section
    assert "scheduled__shared" not in section and "manual__own_stopped" not in section  # their runs ended
    assert 'href="/lake/clusters"' in text


def test_a_runs_cluster_tab(cluster_client):
    client, queries = cluster_client
    resp = client.get("/clusters/run", params={"dag_id": "olympics_etl", "run_id": "manual__own_running"},
                      headers={"Accept": "text/html", "Sec-Fetch-Dest": "iframe"})
    assert resp.status_code == 200
    assert queries[-1] == {"dag_id": "olympics_etl", "run_id": "manual__own_running"}
    assert f'<a class="dashboard-link" href="{DASK_URL}">Dask dashboard</a>' in resp.text
    none = client.get("/clusters/run", params={"dag_id": "olympics_etl", "run_id": "manual__nothing"}).text
    assert "This run has no cluster task" in none and 'class="dashboard-link"' not in none
    hidden = client.get("/clusters/run", params={"dag_id": "secret_dag", "run_id": "manual__hidden"}).text
    assert 'class="dashboard-link"' not in hidden and "This run has no cluster task" in hidden
    assert client.get("/clusters/run", params={"dag_id": "olympics_etl"}).status_code == 422


def test_clusters_need_the_login_and_are_read_only(lake, auth):
    from etl_platform.lake_browser.app import create_app

    anon = TestClient(create_app(lake_root=lake, cluster_runs=lambda **q: _records()), root_path="/lake",
                      follow_redirects=False)
    for url in ("/clusters", "/api/clusters", "/clusters/run?dag_id=olympics_etl&run_id=manual__own_running"):
        resp = anon.get(url)
        assert resp.status_code == 401 and "olympics_etl" not in resp.text, url
        assert anon.post(url).status_code == 405
    resp = anon.get("/clusters", headers={"Accept": "text/html"})
    assert resp.status_code == 302 and resp.headers["location"] == "/auth/login?next=%2Flake%2Fclusters"
    assert anon.get("/api/clusters", headers={"Authorization": f"Bearer {auth(None)}"}).status_code == 403


def test_an_unreadable_airflow_db_is_shown_not_a_failed_page(lake, auth):
    from etl_platform.lake_browser.app import create_app

    def broken(**query):
        raise RuntimeError("database is locked")

    c = TestClient(create_app(lake_root=lake, cluster_runs=broken), root_path="/lake",
                   headers={"Authorization": f"Bearer {auth('viewer')}"})
    for url in ("/", "/clusters"):
        resp = c.get(url, headers={"Accept": "text/html"})
        assert resp.status_code == 200 and "RuntimeError: database is locked" in resp.text, url
    assert "shop" in c.get("/").text  # the lake itself is still listed
    assert c.get("/api/clusters").status_code == 503


def test_local_cluster_found_running_by_pid_marker_and_workdir(tmp_path):
    """A run's own cluster runs while its processes run, are the backend's, and carry its ETL_CLUSTER_WORKDIR."""
    from etl_platform.lake_browser.clusters import local_cluster_runs

    workdir = tmp_path / "logs" / "clusters" / "dag" / "run" / "start_cluster" / "dask"
    workdir.mkdir(parents=True)
    env = dict(os.environ, ETL_CLUSTER_WORKDIR=str(workdir))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dask-scheduler"], env=env)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dask-scheduler"],
                             env=dict(env, ETL_CLUSTER_WORKDIR=str(tmp_path / "other")))
    try:
        handle = {"backend": "dask", "pids": [proc.pid], "workdir": str(workdir)}
        assert local_cluster_runs(handle) is True
        assert local_cluster_runs({**handle, "pids": [other.pid]}) is False  # a reused pid: another cluster's
        assert local_cluster_runs({**handle, "backend": "spark"}) is False  # not a SparkConnectServer
        assert local_cluster_runs({**handle, "workdir": str(tmp_path / "elsewhere")}) is None  # not on this host
        assert local_cluster_runs({**handle, "pids": []}) is None
    finally:
        for p in (proc, other):
            p.kill()
            p.wait()
    assert local_cluster_runs(handle) is False


def test_shared_cluster_read_from_the_registry(tmp_path, monkeypatch):
    """The shared cluster of this AIRFLOW_HOME: its registry's handle while its processes run."""
    import json

    import psutil

    from etl_platform.lake_browser.clusters import shared_cluster

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert shared_cluster("dask") is False  # no registry here: clusters run elsewhere (or never ran)
    registry = tmp_path / "logs" / "clusters" / "_shared" / "dask"
    registry.mkdir(parents=True)
    assert shared_cluster("dask") is None  # a registry, no cluster
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dask-scheduler"])
    try:
        handle = {"backend": "dask", "address": "tcp://127.0.0.1:8786", "owned": True, "dashboard_url": DASK_URL,
                  "pids": [proc.pid], "workdir": str(registry), "conn_id": None, "extra": {}}
        (registry / "cluster.json").write_text(json.dumps(
            {"handle": handle, "start_times": {str(proc.pid): psutil.Process(proc.pid).create_time()}}))
        current = shared_cluster("dask")
        assert current["dashboard_url"] == DASK_URL and current["extra"]["reuse"] == "shared"
    finally:
        proc.kill()
        proc.wait()
    assert shared_cluster("dask") is None


def test_the_run_page_gets_a_cluster_tab():
    from airflow import plugins_manager

    external, _ = plugins_manager._get_ui_plugins()
    tab = next(v for v in external if v["name"] == "Cluster")
    assert tab["destination"] == "dag_run" and tab["url_route"] == "lake-cluster"
    assert tab["href"] == "/lake/clusters/run?dag_id={DAG_ID}&run_id={RUN_ID}"
