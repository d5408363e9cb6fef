"""The lake browser plugin (plugins/etl_platform/lake_browser) on small Delta lakes built here.

The fixture lake is written as the platform writes it (``Lake.stage``, Parquet files from pyarrow,
``Lake.commit``), with re-runs, an empty day, a skipped day, rejects and a report. The app runs
under FastAPI's TestClient with Airflow's SimpleAuthManager and real JWTs: listing, row and reject
counts from the Delta log, versions with their run and task, a partition as of an older version,
an empty day shown apart from a day not processed, report serving, path traversal refused,
read-only routes, Airflow's login enforced (also once through the whole api-server app, mounted by
the plugin manager from the plugins folder), the same views of a lake on S3, and a year of daily
commits answered in well under 2 s.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from include.etl.lake import Lake
from tests.conftest import ROOT
from tests.lake import stage_files
from tests.s3 import s3_server_fixture  # noqa: F401 - the fixture `s3_server`

REPORT = """<!doctype html><html><head><meta charset="utf-8"><title>Monthly report</title></head>
<body><h1>Revenue</h1><svg id="revenue-chart" width="200" height="100">
<rect class="bar" x="10" y="40" width="30" height="60"/><rect class="bar" x="50" y="20" width="30" height="80"/>
</svg></body></html>
"""
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
REPORT_PATH = "shop/_reports/orders/ds=2024-01-01/report.html"


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": list(range(start, start + n)), "name": [f"n{i}" for i in range(start, start + n)]},
                    schema=SCHEMA)


def run_of(run_id: str, task_id: str, try_number: int = 1, dag_id: str = "shop_daily") -> dict[str, str]:
    return {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "try_number": str(try_number)}


def publish(lake: Lake, table: str, ds: str, *files: pa.Table, run: dict[str, str] | None = None) -> dict:
    """What a job does: stage Parquet files of ``table``'s ``ds`` (none: an empty day) and commit them."""
    if run is not None:
        lake = Lake(lake.root, lake.domain, run=run)
    if not files:
        return lake.commit(table, ds, None, schema=SCHEMA)
    staged = stage(lake, table, ds, *files)
    return lake.commit(table, ds, staged)


stage = stage_files  # tests/lake.py


def write_report(lake: Lake, table: str, ds: str, name: str, text: str) -> None:
    fs = lake.root.filesystem()
    uri = lake.report_uri(table, ds, name)
    fs.create_dir(lake.engine_path(uri.rsplit("/", 1)[0]))
    with fs.open_output_stream(lake.engine_path(uri)) as out:
        out.write(text.encode())


def build_shop(root) -> dict[str, int]:
    """The ``shop`` pipeline of the fixture lakes; returns the versions of orders' commits by name."""
    shop = Lake(root, "shop")
    v = {}
    v["first"] = publish(shop, "orders", "2024-01-01", rows(3), rows(4, 3),
                         run=run_of("scheduled__2024-01-01", "ingest_orders"))["version"]
    v["empty"] = publish(shop, "orders", "2024-01-02", run=run_of("scheduled__2024-01-02", "ingest_orders"))["version"]
    publish(shop, "orders", "2024-01-03", rows(5, 100), run=run_of("scheduled__2024-01-03", "ingest_orders"))
    # 2024-01-04: never run; 2024-01-05 ran
    publish(shop, "orders", "2024-01-05", rows(1, 500), run=run_of("scheduled__2024-01-05", "ingest_orders"))
    v["rerun"] = publish(shop, "orders", "2024-01-01", rows(2, 1000),
                         run=run_of("manual__rerun", "ingest_orders", try_number=2))["version"]
    stage(shop, "orders", "2024-01-06", rows(9))  # a failed run's files: never committed, never shown
    publish(shop, shop.rejects("orders"), "2024-01-01", rows(2), run=run_of("scheduled__2024-01-01", "ingest_orders"))
    publish(shop, shop.rejects("lines"), "2024-01-01", rows(1))  # the rejects of a table with no data yet
    publish(shop, "customers", "2024-01-03", rows(10))
    write_report(shop, "orders", "2024-01-01", "report.html", REPORT)
    return v


@pytest.fixture(scope="module")
def lake_template(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("template") / "lake"
    versions = build_shop(root)
    publish(Lake(root, "weather"), "daily", "2023-12-31", rows(6))
    return root, versions


@pytest.fixture
def versions(lake_template) -> dict[str, int]:
    return lake_template[1]


@pytest.fixture
def lake(lake_template, tmp_path) -> Path:
    """A copy of the template lake, with everything that must not show up around it."""
    root = tmp_path / "lake"
    shutil.copytree(lake_template[0], root)
    shop = root / "shop"
    (shop / "notes").mkdir()  # a directory that is no Delta table
    (shop / "notes" / "a.txt").write_text("not a table")
    (shop / "_tmp").mkdir()
    (shop / ".staging-x").mkdir()
    (root / ".trash").mkdir()
    (root / "_internal" / "t" / "_delta_log").mkdir(parents=True)
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


def _client(root, auth) -> TestClient:
    from etl_platform.lake_browser.app import create_app

    # No Airflow DB in this process: the runs' clusters come from the tests (below).
    c = TestClient(create_app(lake_root=root, cluster_runs=_no_runs), root_path="/lake", follow_redirects=False)
    c.headers["Authorization"] = f"Bearer {auth('viewer')}"
    return c


@pytest.fixture
def client(lake, auth) -> TestClient:
    return _client(lake, auth)


HTML = {"Accept": "text/html"}


def test_lists_pipelines_ignoring_hidden_and_internal_names(client, lake):
    body = client.get("/api/pipelines").json()
    assert body["lake_root"] == f"file://{lake.resolve()}"
    assert [p["name"] for p in body["pipelines"]] == ["shop", "weather"]
    assert {p["name"]: p["tables"] for p in body["pipelines"]} == {"shop": 3, "weather": 1}
    assert {p["name"]: p["latest"] for p in body["pipelines"]} == {"shop": "2024-01-05", "weather": "2023-12-31"}
    page = client.get("/", headers=HTML)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/lake/pipelines/shop"' in page.text and 'href="/lake/pipelines/weather"' in page.text
    for hidden in (".trash", "_internal", "README.txt", ".staging", "notes", "_tmp"):
        assert hidden not in page.text
    assert f'href="/lake/reports/{REPORT_PATH}"' in page.text  # the latest reports


def test_tables_of_a_pipeline_with_latest_counts_and_versions(client, versions):
    tables = {t["name"]: t for t in client.get("/api/pipelines/shop").json()["tables"]}
    # `_rejects/lines` is the rejects of a table `lines` that has no data partition yet
    assert list(tables) == ["customers", "lines", "orders"]
    orders = tables["orders"]
    assert orders | {"updated": None} == {
        "name": "orders", "partitions": 4, "latest": "2024-01-05", "latest_rows": 1, "latest_rejects": None,
        "has_rejects": True, "reports": 1, "version": versions["rerun"], "updated": None, "empty_days": 1,
        "error": None}
    assert dt.datetime.fromisoformat(orders["updated"]).tzinfo is not None
    assert tables["customers"]["latest_rows"] == 10 and tables["customers"]["has_rejects"] is False
    assert tables["lines"]["partitions"] == 0 and tables["lines"]["has_rejects"] is True
    page = client.get("/pipelines/shop").text
    assert 'href="/lake/pipelines/shop/tables/orders"' in page
    assert f'href="/lake/pipelines/shop/tables/orders/versions">{versions["rerun"]}</a>' in page


def test_partitions_with_row_and_reject_counts_from_the_log(client, versions):
    body = client.get("/api/pipelines/shop/tables/orders").json()
    assert body["version"] == versions["rerun"] and body["error"] is None
    parts = body["partitions"]
    assert [p["ds"] for p in parts] == ["2024-01-05", "2024-01-03", "2024-01-02", "2024-01-01"]  # newest first
    by_ds = {p["ds"]: p for p in parts}
    first = by_ds["2024-01-01"]  # re-run: 2 rows in one file replaced 7 rows in two
    assert (first["rows"], first["files"], first["rejects"], first["state"]) == (2, 1, 2, "data")
    assert first["bytes"] > 0 and first["reports"] == [REPORT_PATH]
    assert (first["version"], first["run_id"], first["task_id"], first["dag_id"]) == (
        versions["rerun"], "manual__rerun", "ingest_orders", "shop_daily")
    assert by_ds["2024-01-03"]["rows"] == 5 and by_ds["2024-01-03"]["rejects"] is None
    assert "2024-01-06" not in by_ds  # staged, never committed
    lines = client.get("/api/pipelines/shop/tables/lines").json()["partitions"]
    assert [(p["ds"], p["rows"], p["rejects"], p["state"]) for p in lines] == [("2024-01-01", None, 1, "rejects only")]

    page = client.get("/pipelines/shop/tables/orders", headers=HTML).text
    assert page.count('<span class="ds">') == 5  # four published days and the skipped one
    assert f'href="/lake/reports/{REPORT_PATH}"' in page
    assert 'href="/lake/pipelines/shop/tables/orders/partitions/2024-01-01"' in page
    assert 'href="/lake/pipelines/shop/tables/orders/partitions/2024-01-01?rejects=true">2</a>' in page
    assert 'href="/lake/pipelines/shop/tables/orders/versions"' in page
    assert "manual__rerun" in page and "ingest_orders (try" not in page


def test_an_empty_day_is_shown_apart_from_a_day_not_processed(client, versions):
    body = client.get("/api/pipelines/shop/tables/orders").json()
    empty = next(p for p in body["partitions"] if p["ds"] == "2024-01-02")
    assert (empty["rows"], empty["state"], empty["version"]) == (0, "empty", versions["empty"])
    assert empty["run_id"] == "scheduled__2024-01-02"
    assert body["missing_days"] == ["2024-01-04"]  # inside the daily range, no commit names it
    view = client.get("/api/pipelines/shop/tables/orders/partitions/2024-01-02").json()
    assert (view["state"], view["state_text"], view["rows"], view["preview"]) == ("empty", "no data that day", 0, [])
    assert [c["name"] for c in view["columns"]] == ["id", "name"]
    missing = client.get("/api/pipelines/shop/tables/orders/partitions/2024-01-04")
    assert missing.status_code == 404 and "not processed" in missing.json()["detail"]
    assert client.get("/api/pipelines/shop/tables/orders/partitions/2030-01-01").status_code == 404

    page = client.get("/pipelines/shop/tables/orders", headers=HTML).text
    row_empty = page.split('<span class="ds">2024-01-02</span>')[1].split("</tr>")[0]
    row_missing = page.split('<span class="ds">2024-01-04</span>')[1].split("</tr>")[0]
    assert "no data that day" in row_empty and ">0<" in row_empty
    assert "not processed" in row_missing and "no data that day" not in row_missing
    day = client.get("/pipelines/shop/tables/orders/partitions/2024-01-02", headers=HTML)
    assert day.status_code == 200 and "no data that day" in day.text
    gone = client.get("/pipelines/shop/tables/orders/partitions/2024-01-04", headers=HTML)
    assert gone.status_code == 404 and "not processed" in gone.text


def test_versions_are_listed_with_their_run_and_task(client, versions):
    body = client.get("/api/pipelines/shop/tables/orders/versions").json()
    rows = body["versions"]
    assert [v["version"] for v in rows] == list(range(versions["rerun"], -1, -1))  # newest first, to the creation
    assert rows[-1]["operation"] == "CREATE TABLE" and rows[-1]["ds"] is None
    rerun = rows[0]
    assert (rerun["ds"], rerun["rows"], rerun["rows_removed"]) == ("2024-01-01", 2, 7)
    assert (rerun["dag_id"], rerun["run_id"], rerun["task_id"], rerun["try_number"]) == (
        "shop_daily", "manual__rerun", "ingest_orders", "2")
    first = next(v for v in rows if v["version"] == versions["first"])
    assert (first["ds"], first["rows"], first["rows_removed"], first["run_id"]) == (
        "2024-01-01", 7, 0, "scheduled__2024-01-01")
    assert dt.datetime.fromisoformat(first["time"]) <= dt.datetime.fromisoformat(rerun["time"])
    assert [v["version"] for v in client.get("/api/pipelines/shop/tables/orders/versions?limit=2").json()["versions"]] \
        == [versions["rerun"], versions["rerun"] - 1]
    rejects = client.get("/api/pipelines/shop/tables/orders/versions?rejects=true").json()["versions"]
    assert [(v["ds"], v["rows"]) for v in rejects if v["ds"]] == [("2024-01-01", 2)]

    page = client.get("/pipelines/shop/tables/orders/versions", headers=HTML).text
    assert page.count('<span class="version">') == versions["rerun"] + 1
    assert "manual__rerun" in page and "ingest_orders (try 2)" in page and "CREATE TABLE" in page
    link = f'href="/lake/pipelines/shop/tables/orders/partitions/2024-01-01?version={versions["first"]}"'
    assert link in page


def test_a_partition_as_of_an_older_version(client, versions):
    latest = client.get("/api/pipelines/shop/tables/orders/partitions/2024-01-01").json()
    assert (latest["version"], latest["latest_version"], latest["rows"], latest["files"]) == (
        versions["rerun"], versions["rerun"], 2, 1)
    assert [r["id"] for r in latest["preview"]] == [1000, 1001]
    assert latest["rejects"] == 2 and latest["reports"] == [REPORT_PATH]
    assert [v["version"] for v in latest["versions"]] == [versions["rerun"], versions["first"]]

    old = client.get(f"/api/pipelines/shop/tables/orders/partitions/2024-01-01?version={versions['first']}").json()
    assert (old["version"], old["latest_version"], old["rows"], old["files"], old["state"]) == (
        versions["first"], versions["rerun"], 7, 2, "data")
    assert sorted(r["id"] for r in old["preview"]) == list(range(7))
    assert {"id": 0, "name": "n0"} in old["preview"]
    # a day published after that version was not processed yet, as of it
    before = client.get(f"/api/pipelines/shop/tables/orders/partitions/2024-01-03?version={versions['first']}")
    assert before.status_code == 404 and f"as of version {versions['first']}" in before.json()["detail"]
    limited = client.get(f"/api/pipelines/shop/tables/orders/partitions/2024-01-01?version={versions['first']}&limit=3")
    assert len(limited.json()["preview"]) == 3
    for bad in ("version=999", "version=-1", "limit=100000"):
        assert client.get(f"/api/pipelines/shop/tables/orders/partitions/2024-01-01?{bad}").status_code in (404, 422)
    assert client.get("/api/pipelines/shop/tables/orders/partitions/2024-13-01").status_code == 404

    page = client.get(f"/pipelines/shop/tables/orders/partitions/2024-01-01?version={versions['first']}",
                      headers=HTML).text
    assert f"version {versions['first']} (latest: " in page
    assert 'href="/lake/pipelines/shop/tables/orders/partitions/2024-01-01"' in page  # back to the latest
    assert "<h2>First 7 rows</h2>" in page and ">n6<" in page and ">n1000<" not in page
    assert "scheduled__2024-01-01" in page and "manual__rerun" in page  # the versions that wrote the day


def test_the_rejected_rows_of_a_day(client):
    view = client.get("/api/pipelines/shop/tables/orders/partitions/2024-01-01?rejects=true").json()
    assert view["of_rejects"] is True and view["rows"] == 2 and len(view["preview"]) == 2
    lines = client.get("/api/pipelines/shop/tables/lines/partitions/2024-01-01?rejects=true").json()
    assert lines["rows"] == 1
    assert client.get("/api/pipelines/shop/tables/lines/partitions/2024-01-01").status_code == 404
    assert client.get("/api/pipelines/shop/tables/customers/partitions/2024-01-03?rejects=true").status_code == 404
    page = client.get("/pipelines/shop/tables/orders/partitions/2024-01-01?rejects=true", headers=HTML).text
    assert "shop / orders (rejects) / ds=2024-01-01" in page


def test_an_unreadable_table_is_shown_not_a_failed_page(client, lake):
    log = lake / "weather" / "daily" / "_delta_log"
    for f in log.glob("*.json"):
        f.write_text("garbage, not a Delta log")
    body = client.get("/api/pipelines/weather/tables/daily").json()
    assert body["partitions"] == [] and body["error"]
    assert "cannot be read" in client.get("/pipelines/weather/tables/daily").text
    assert "unreadable" in client.get("/pipelines/weather").text
    tables = client.get("/api/pipelines/weather").json()["tables"]
    assert tables[0]["error"] and tables[0]["latest"] is None
    assert client.get("/").status_code == 200


def test_report_is_served_sandboxed_and_framed_by_its_page(client):
    resp = client.get(f"/files/{REPORT_PATH}")
    assert resp.status_code == 200 and resp.text == REPORT
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert resp.headers["content-length"] == str(len(REPORT.encode()))
    csp = resp.headers["content-security-policy"]
    assert csp.startswith("sandbox allow-scripts") and "default-src 'none'" in csp
    assert "allow-same-origin" not in csp
    page = client.get(f"/reports/{REPORT_PATH}")
    assert page.status_code == 200
    assert f'src="/lake/files/{REPORT_PATH}"' in page.text and 'sandbox="allow-scripts' in page.text
    assert 'href="/lake/pipelines/shop/tables/orders"' in page.text  # breadcrumbs back to the table
    assert "ds=2024-01-01" in page.text
    # only reports are files of the browser: data files are read through their tables
    data_file = next((Path(client.app.state.lake_root) / "shop/orders/ds=2024-01-01").glob("w-*/part-0.parquet"))
    rel = data_file.relative_to(client.app.state.lake_root).as_posix()
    assert client.get(f"/files/{rel}").status_code == 404
    assert client.get(f"/reports/{rel}").status_code == 404
    assert client.get("/files/shop/_reports/orders/ds=2024-01-01/missing.html").status_code == 404
    assert client.get("/files/shop/orders/_delta_log/00000000000000000000.json").status_code == 404


@pytest.mark.parametrize("path", [
    "%2e%2e/secret.txt",
    "shop/%2e%2e/%2e%2e/secret.txt",
    "shop/_reports/orders/ds=2024-01-01/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "shop%2F..%2F..%2Fsecret.txt",
    "shop/_reports/orders/ds=2024-01-01/.hidden.html",
    "shop/_reports/orders/ds=2024-01-01/link-out.html",
    "shop/_reports/orders/ds=2024-01-01/linkdir/secret.html",
    "shop/_reports/orders/ds=2024-01-01%00.html",
    "shop\\..\\..\\secret.txt",
    "shop/_reports/orders/ds=2024-01-01",
    "shop/_reports/orders/ds=2024-01-01/secret.txt",
])
def test_path_traversal_and_hidden_files_are_refused(client, lake, path):
    reports = lake / "shop" / "_reports" / "orders" / "ds=2024-01-01"
    (lake.parent / "secret.html").write_text("TOP SECRET outside the lake")
    (reports / "link-out.html").symlink_to(lake.parent / "secret.html")  # a symlink out of the lake
    (reports / "linkdir").symlink_to(lake.parent)
    (reports / ".hidden.html").write_text("TOP SECRET hidden")
    (reports / "secret.txt").write_text("TOP SECRET not a report")
    for route in ("files", "reports"):
        resp = client.get(f"/{route}/{path}")
        assert resp.status_code == 404, (route, path, resp.status_code)
        assert "TOP SECRET" not in resp.text and "root:" not in resp.text


def test_traversal_through_names_is_refused(client):
    for url in ("/api/pipelines/%2e%2e", "/api/pipelines/shop/tables/%2e%2e", "/api/pipelines/_rejects",
                "/api/pipelines/shop/tables/_rejects", "/api/pipelines/.trash", "/api/pipelines/_internal",
                "/pipelines/nope", "/pipelines/shop/tables/nope", "/api/pipelines/shop/tables/.staging-x",
                "/api/pipelines/shop/tables/notes", "/api/pipelines/shop/tables/_reports",
                "/api/pipelines/shop/tables/_rejects%2Forders/versions",
                "/api/pipelines/shop/tables/orders/partitions/..%2F..%2Fsecret"):
        assert client.get(url).status_code == 404, url


def test_resolve_file_directly(lake):
    from etl_platform.lake_browser.catalog import Catalog

    cat = Catalog(lake)
    found = cat.resolve_file(REPORT_PATH)
    assert found is not None and Path(found.path) == (lake / REPORT_PATH).resolve() and found.size == len(REPORT)
    assert b"".join(cat.read_chunks(found)).decode() == REPORT
    for bad in ("../secret.txt", "shop/../../secret.txt", "/etc/passwd", "", "shop//orders", "./shop",
                str(lake.parent / "secret.txt"), "shop/_reports/orders/ds=2024-01-01/_SUCCESS",
                "shop/_reports/orders/report.html", "shop/orders/_delta_log/00000000000000000000.json"):
        assert cat.resolve_file(bad) is None, bad


def test_only_get_routes(client):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for url in ("/", "/api/pipelines", f"/files/{REPORT_PATH}", "/api/pipelines/shop/tables/orders/versions",
                    "/api/pipelines/shop/tables/orders/partitions/2024-01-01"):
            assert client.request(method, url).status_code == 405, (method, url)
    from etl_platform.lake_browser.app import create_app

    methods = {m for r in create_app(Path("/nonexistent")).routes for m in getattr(r, "methods", ())}
    assert methods <= {"GET", "HEAD"}, methods


def test_airflow_login_is_required(lake, auth):
    from etl_platform.lake_browser.app import create_app

    anon = TestClient(create_app(lake_root=lake), root_path="/lake", follow_redirects=False)
    for url in ("/", "/api/pipelines", "/pipelines/shop/tables/orders", f"/files/{REPORT_PATH}",
                f"/reports/{REPORT_PATH}", "/pipelines/shop/tables/orders/versions",
                "/api/pipelines/shop/tables/orders/partitions/2024-01-01?version=1"):
        resp = anon.get(url)
        assert resp.status_code == 401, (url, resp.status_code)
        assert "Revenue" not in resp.text and "orders" not in resp.text and "n1000" not in resp.text
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


def test_settings_give_the_lake(lake, auth, monkeypatch):
    from etl_platform.lake_browser.app import create_app

    monkeypatch.setenv("ETL_LAKE_URI", f"file://{lake}")
    c = TestClient(create_app(), headers={"Authorization": f"Bearer {auth('viewer')}"})
    assert [p["name"] for p in c.get("/api/pipelines").json()["pipelines"]] == ["shop", "weather"]
    monkeypatch.delenv("ETL_LAKE_URI")
    monkeypatch.setenv("ETL_LAKE_ROOT", str(lake))  # the older, local-only setting
    assert [p["name"] for p in c.get("/api/pipelines").json()["pipelines"]] == ["shop", "weather"]


def test_mounted_by_the_api_server_behind_its_login(lake, auth, monkeypatch):
    """The whole api-server app, with the plugin found in the plugins folder as Airflow finds it."""
    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app

    monkeypatch.setenv("ETL_LAKE_URI", f"file://{lake}")
    plugins, errors = plugins_manager._get_plugins()
    assert "lake_browser" in [p.name for p in plugins] and not errors, errors
    external, _ = plugins_manager._get_ui_plugins()
    view = next(v for v in external if v["name"] == "Lake")
    assert view["href"] == "/lake/" and view["url_route"] == "lake" and view["destination"] == "nav"

    api = TestClient(create_app(apps="core"), follow_redirects=False)
    assert api.get("/lake/api/pipelines").status_code == 401
    assert api.get(f"/lake/files/{REPORT_PATH}").status_code == 401
    api.cookies.set("_token", auth("viewer"))
    resp = api.get("/lake/api/pipelines")
    assert resp.status_code == 200 and [p["name"] for p in resp.json()["pipelines"]] == ["shop", "weather"]
    page = api.get("/lake/pipelines/shop/tables/orders", headers=HTML)
    assert page.status_code == 200 and f'href="/lake/reports/{REPORT_PATH}"' in page.text
    assert api.get(f"/lake/files/{REPORT_PATH}").text == REPORT
    assert api.get("/lake/api/pipelines/shop/tables/orders/versions").status_code == 200


def test_loading_the_plugin_imports_nothing_heavy():
    """Every Airflow component loads plugins; only the api-server builds the FastAPI app."""
    code = textwrap.dedent(
        """
        import sys
        import lake_browser_plugin
        assert lake_browser_plugin.LakeBrowserPlugin.name == "lake_browser"
        heavy = ("fastapi", "starlette", "pandas", "pyarrow", "numpy", "dask", "pyspark", "narwhals", "polars",
                 "deltalake")
        print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line == "HEAVY=", f"loading the plugin imported: {line[6:]}"


# ---------------------------------------------------------------- a lake on S3


def test_the_same_views_of_a_lake_on_s3(s3_server, auth):
    location = s3_server.location("browser")
    versions = build_shop(location)
    c = _client(location, auth)
    body = c.get("/api/pipelines").json()
    assert body["lake_root"] == f"s3://{s3_server.bucket}/browser" and [p["name"] for p in body["pipelines"]] == ["shop"]
    parts = {p["ds"]: p for p in c.get("/api/pipelines/shop/tables/orders").json()["partitions"]}
    assert (parts["2024-01-01"]["rows"], parts["2024-01-01"]["rejects"], parts["2024-01-02"]["state"]) == (2, 2, "empty")
    assert parts["2024-01-01"]["reports"] == [REPORT_PATH]
    rows = c.get("/api/pipelines/shop/tables/orders/versions").json()["versions"]
    assert rows[0]["run_id"] == "manual__rerun" and rows[0]["task_id"] == "ingest_orders"
    old = c.get(f"/api/pipelines/shop/tables/orders/partitions/2024-01-01?version={versions['first']}").json()
    assert old["rows"] == 7 and sorted(r["id"] for r in old["preview"]) == list(range(7))
    assert c.get(f"/files/{REPORT_PATH}").text == REPORT
    assert c.get("/files/shop/_reports/orders/ds=2024-01-01/nope.html").status_code == 404
    assert c.get("/pipelines/shop/tables/orders", headers=HTML).status_code == 200


# ---------------------------------------------------------------- a year of daily commits


def publish_year(lake: Lake, table: str, start: dt.date, days: int) -> None:
    """``days`` daily commits (every 7th day empty), as a year of a daily DAG leaves them."""
    for i in range(days):
        ds = (start + dt.timedelta(days=i)).isoformat()
        run = run_of(f"scheduled__{ds}", f"ingest_{table}")
        if i % 7 == 6:
            publish(lake, table, ds, run=run)
        else:
            publish(lake, table, ds, rows(i % 5 + 1, i * 10), run=run)


@pytest.fixture(scope="module")
def year_lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("year") / "lake"
    publish_year(Lake(root, "shop"), "orders", dt.date(2024, 1, 1), 365)
    return root


def test_a_year_of_daily_partitions_is_served_whole_cold_and_warm(year_lake, auth, capsys):
    from etl_platform.lake_browser import catalog

    c = _client(year_lake, auth)
    urls = ["/", "/pipelines/shop", "/pipelines/shop/tables/orders", "/pipelines/shop/tables/orders/versions",
            "/pipelines/shop/tables/orders/partitions/2024-12-30", "/pipelines/shop/tables/orders/partitions/2024-03-01"
            "?version=100", "/api/pipelines/shop/tables/orders", "/api/pipelines/shop/tables/orders/versions"]
    timings = {}
    for label, clear in (("cold", True), ("warm", False)):
        for url in urls:
            if clear:
                catalog._CACHE.clear()
            started = time.perf_counter()
            resp = c.get(url, headers=HTML)
            timings[(label, url)] = time.perf_counter() - started
            assert resp.status_code == 200, (url, resp.text[:300])
    body = c.get("/api/pipelines/shop/tables/orders").json()
    assert len(body["partitions"]) == 365 and body["version"] == 365 and body["missing_days"] == []
    assert sum(p["state"] == "empty" for p in body["partitions"]) == 52
    assert len(c.get("/api/pipelines/shop/tables/orders/versions").json()["versions"]) == 366
    with capsys.disabled():
        print("\nlake view over 365 daily commits (s): " + ", ".join(
            f"{label} {url.split('/lake')[-1]}={t:.3f}" for (label, url), t in timings.items()))
    # The times are printed, not asserted (a noisy machine is no benchmark): `make bench` measures them.


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
        RunRecord("retail_daily", "scheduled__runtime", "success", t, "start_cluster", start_state="success",
                  handle=handle("spark", SPARK_URL, owned=False, extra={"runtime": "/rt"})),
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
        "engine": lambda backend, root: {"backend": backend, "address": "sc://127.0.0.1:15099",
                                         "dashboard_url": "http://127.0.0.1:4041"} if root == "/rt" else None,
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
    engine = rows["scheduled__runtime"]  # the runtime's engine running now, which replaced the run's
    assert (engine["mode"], engine["status"], engine["dashboard_url"]) == ("runtime", "running", "http://127.0.0.1:4041")
    assert engine["address"] == "sc://127.0.0.1:15099" and "replaced since this run started" in engine["note"]
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
    assert "scheduled__runtime" not in section and "manual__own_stopped" not in section  # their runs ended
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


def test_the_runtimes_engine_read_from_its_owners_file(tmp_path, monkeypatch):
    """The runtime's engine: its owner's handle file, believed only while that owner runs."""
    import json

    import psutil

    from etl_platform.lake_browser.clusters import runtime_engine

    monkeypatch.delenv("ETL_RUNTIME_DIR", raising=False)
    assert runtime_engine("dask") is False  # no runtime here: the engines run elsewhere (or never ran)
    root = tmp_path / "runtime"
    root.mkdir()
    assert runtime_engine("dask", str(root)) is None  # a runtime, no engine
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"pid": proc.pid, "started": psutil.Process(proc.pid).create_time()}
        (root / "dask.json").write_text(json.dumps({"state": "starting", "owner": owner}))
        assert runtime_engine("dask", str(root)) is None  # not ready yet
        handle = {"backend": "dask", "address": "tcp://127.0.0.1:8786", "owned": True, "dashboard_url": DASK_URL,
                  "pids": [11, 12], "workdir": str(root / "dask"), "conn_id": None, "extra": {}}
        (root / "dask.json").write_text(json.dumps({"state": "ready", "handle": handle, "owner": owner}))
        current = runtime_engine("dask", str(root))
        assert current["dashboard_url"] == DASK_URL and current["extra"]["runtime"] == str(root)
        assert current["owned"] is False and current["pids"] == []  # what a run sees: never its to stop
    finally:
        proc.kill()
        proc.wait()
    assert runtime_engine("dask", str(root)) is None  # its owner is gone: a stale file is not believed


def test_the_run_page_gets_a_cluster_tab():
    from airflow import plugins_manager

    external, _ = plugins_manager._get_ui_plugins()
    tab = next(v for v in external if v["name"] == "Cluster")
    assert tab["destination"] == "dag_run" and tab["url_route"] == "lake-cluster"
    assert tab["href"] == "/lake/clusters/run?dag_id={DAG_ID}&run_id={RUN_ID}"
