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


@pytest.fixture
def client(lake, auth) -> TestClient:
    from etl_platform.lake_browser.app import create_app

    c = TestClient(create_app(lake_root=lake), root_path="/lake", follow_redirects=False)
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
