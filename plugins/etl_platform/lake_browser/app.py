"""The lake browser: a read-only FastAPI app the api-server mounts under ``/lake`` (see ``__init__``).

Only GET routes. Every route requires an Airflow user (the JWT the UI keeps in its ``_token``
cookie, or an ``Authorization: Bearer`` token from ``/auth/token``) whom the auth manager allows
to read the custom view ``LakeBrowser``; a page requested by a browser without a session is
redirected to Airflow's login, anything else gets Airflow's own 401/403.

Pages (HTML)                                   JSON
  /                      pipelines, reports,    /api/pipelines
                         clusters in use
  /pipelines/{p}         tables                 /api/pipelines/{p}
  /pipelines/{p}/tables/{t}  partitions         /api/pipelines/{p}/tables/{t}
  /pipelines/{p}/tables/{t}/versions            /api/pipelines/{p}/tables/{t}/versions
                         the table's commits (time, run, task, rows added and removed)
  /pipelines/{p}/tables/{t}/partitions/{ds}     /api/pipelines/{p}/tables/{t}/partitions/{ds}
                         columns and first rows; ``?version=N`` as of an older version,
                         ``?rejects=true`` the rejected rows of that day, ``?limit=`` rows shown
  /reports/{path}        a report in a frame    /files/{path}  a report file (under ``_reports``)
  /clusters              clusters of running    /api/clusters[?dag_id=&run_id=]
                         and recent runs
  /clusters/run?dag_id=&run_id=  one run's cluster (the run page's "Cluster" tab)

The lake is ``ETL_LAKE_URI`` (``file://`` or ``s3://``, read through ``catalog.py``). The clusters
are read from Airflow's metadata DB (``clusters.py``), and shown only for the DAGs whose XComs the
user may read.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from etl_platform.lake_browser import clusters as cluster_status
from etl_platform.lake_browser import templates
from etl_platform.lake_browser.catalog import (
    MAX_PREVIEW_ROWS,
    NOT_PROCESSED,
    PREVIEW_ROWS,
    Catalog,
    PartitionView,
    VersionNotFound,
    partition_ds,
    valid_ds,
)
from include.etl.lake import LakeLocation

RESOURCE_NAME = "LakeBrowser"  # the custom view the auth manager authorises (method GET)

# Headers of every page of the browser: no caching of lake contents, framed only by Airflow's UI.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; script-src 'none'; "
                               "img-src 'self' data:; frame-ancestors 'self'",
}
# A report is the pipeline's HTML, served from Airflow's origin: sandboxed into an opaque origin
# (its scripts run, but cannot read the session cookie, the UI or the API) and cut off from the
# network (charts must be inline: SVG, canvas drawn by inline script, data: images).
REPORT_CSP = ("sandbox allow-scripts allow-popups allow-downloads; default-src 'none'; "
              "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
              "frame-ancestors 'self'")


class _LoginRequired(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


def _full_path(request: Request) -> str:
    """The path as the browser sees it, mount prefix included (Starlette keeps it in ``path`` or not)."""
    root, path = request.scope.get("root_path", ""), request.scope["path"]
    full = path if root and path.startswith(root + "/") else root + path
    return full + (f"?{request.url.query}" if request.url.query else "")


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def require_reader(request: Request) -> Any:
    """The Airflow user of this request, authorised to read the lake browser; else 401/403 (or login)."""
    # Imported here: the api-server has loaded them already; nothing else needs them.
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    try:
        user = await get_user(request, None, await bearer_scheme(request))
    except HTTPException as exc:
        if exc.status_code in (401, 403) and _wants_html(request) and request.method == "GET":
            raise _LoginRequired(_full_path(request)) from exc
        raise
    if not get_auth_manager().is_authorized_custom_view(method="GET", resource_name=RESOURCE_NAME, user=user):
        raise HTTPException(status_code=403, detail="Forbidden: this user may not read the lake browser")
    request.state.user = user
    return user


def lake_location(request: Request) -> LakeLocation:
    """The lake this app shows: the one given to :func:`create_app`, else ``ETL_LAKE_URI`` (read per request)."""
    root = request.app.state.lake_root
    if root is not None:
        return LakeLocation.resolve(root)
    from include.etl.settings import Settings

    settings = Settings.from_env()
    return LakeLocation.resolve(settings.lake_uri, settings.lake_conn_id)


def catalog(request: Request) -> Catalog:
    return Catalog(lake_location(request))


def base(request: Request) -> str:
    """Where this app is mounted (``/lake``), for the links of its pages."""
    return request.scope.get("root_path", "").rstrip("/")


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=PAGE_HEADERS)


def _pipeline(cat: Catalog, name: str) -> str:
    if not cat.has_pipeline(name):
        raise HTTPException(404, f"no pipeline {name!r} in the lake")
    return name


def _table(cat: Catalog, pipeline: str, table: str) -> str:
    _pipeline(cat, pipeline)
    if not cat.has_table(pipeline, table):
        raise HTTPException(404, f"no table {table!r} in pipeline {pipeline!r}")
    return table


def _ds(ds: str) -> str:
    if valid_ds(ds) is None:
        raise HTTPException(404, f"{ds!r} is not a day (YYYY-MM-DD)")
    return ds


def _partition(request: Request, pipeline: str, table: str, ds: str, version: int | None, rejects: bool,
               limit: int) -> PartitionView:
    """The partition page's content; 404 for a day not processed, a version the log lacks, no rejects table."""
    cat = catalog(request)
    _table(cat, pipeline, table)
    _ds(ds)
    try:
        view = cat.partition(pipeline, table, ds, version=version, rejects=rejects, limit=limit)
    except VersionNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    what = f"the rejects of {table!r}" if rejects else f"table {table!r}"
    if view is None:
        raise HTTPException(404, f"{what} has no Delta table in pipeline {pipeline!r}")
    if view.state == NOT_PROCESSED:
        as_of = f" as of version {view.version}" if version is not None else ""
        raise HTTPException(404, f"ds={ds} of {what} was not processed{as_of}: no commit publishes it")
    return view


def _table_content(cat: Catalog, pipeline: str, table: str) -> dict[str, Any]:
    """A table's partitions, the days a daily table skipped, its version; a damaged log is an error, not a 500."""
    error = cat.table_error(pipeline, table)
    parts = [] if error else cat.partitions(pipeline, table)
    return {"pipeline": pipeline, "table": table, "version": None if error else cat.table_version(pipeline, table),
            "partitions": parts, "missing_days": cat.missing_days(parts), "error": error}


def _readable_dags(request: Request, dag_ids: set[str]) -> set[str]:
    """The DAGs of ``dag_ids`` whose XComs (a cluster handle is one) the request's user may read."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    am, user = get_auth_manager(), request.state.user
    return {d for d in dag_ids
            if am.is_authorized_dag(method="GET", access_entity=DagAccessEntity.XCOM, details=DagDetails(id=d), user=user)}


def _clusters(request: Request, **query: Any) -> tuple[list[cluster_status.RunCluster], str | None]:
    """The rows of the clusters the user may see, or an error message when Airflow's DB cannot be read."""
    source = request.app.state.cluster_runs or cluster_status.airflow_runs
    try:
        records = source(**query)
    except Exception as exc:  # noqa: BLE001 - the page says what failed instead of failing
        return [], f"cannot read the runs' clusters from Airflow's database: {type(exc).__name__}: {exc}"
    readable = _readable_dags(request, {r.dag_id for r in records})
    return cluster_status.clusters([r for r in records if r.dag_id in readable], **request.app.state.cluster_checks), None


def framed(request: Request) -> bool:
    """Is the page shown in a frame (the UI's view of the plugin)? Browsers say so in ``Sec-Fetch-Dest``."""
    return request.headers.get("sec-fetch-dest") == "iframe"


def _pipelines(cat: Catalog) -> list[dict]:
    return [{"name": p, "tables": len(cat.tables(p)), "latest": cat.latest_ds(p)} for p in cat.pipelines()]


router = APIRouter()

# -- HTML ------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def index(request: Request):
    cat = catalog(request)
    rows, error = _clusters(request, limit=cluster_status.DEFAULT_LIMIT)
    in_use = [r for r in rows if r.run_state in cluster_status.ACTIVE_RUN_STATES]
    return html(templates.index(base(request), str(cat.root), _pipelines(cat), cat.reports(limit=50),
                                clusters=in_use, clusters_error=error, framed=framed(request)))


@router.get("/clusters", response_class=HTMLResponse)
def clusters_page(request: Request, limit: int = Query(cluster_status.DEFAULT_LIMIT, ge=1, le=500)):
    rows, error = _clusters(request, limit=limit)
    return html(templates.clusters(base(request), rows, error, framed=framed(request)))


@router.get("/clusters/run", response_class=HTMLResponse)
def run_cluster_page(request: Request, dag_id: str = Query(..., min_length=1), run_id: str = Query(..., min_length=1)):
    rows, error = _clusters(request, dag_id=dag_id, run_id=run_id)
    return html(templates.run_clusters(base(request), dag_id, run_id, rows, error, framed=framed(request)))


@router.get("/pipelines/{pipeline}", response_class=HTMLResponse)
def pipeline_page(request: Request, pipeline: str):
    cat = catalog(request)
    return html(templates.pipeline(base(request), _pipeline(cat, pipeline), cat.table_summaries(pipeline)))


@router.get("/pipelines/{pipeline}/tables/{table}", response_class=HTMLResponse)
def table_page(request: Request, pipeline: str, table: str):
    cat = catalog(request)
    _table(cat, pipeline, table)
    content = _table_content(cat, pipeline, table)
    return html(templates.partitions(base(request), pipeline, table, content["partitions"],
                                     missing=content["missing_days"], version=content["version"],
                                     error=content["error"]))


@router.get("/pipelines/{pipeline}/tables/{table}/versions", response_class=HTMLResponse)
def versions_page(request: Request, pipeline: str, table: str, rejects: bool = False,
                  limit: int = Query(1000, ge=1, le=100_000)):
    cat = catalog(request)
    _table(cat, pipeline, table)
    try:
        rows = cat.versions(pipeline, table, rejects=rejects, limit=limit)
    except Exception as exc:  # noqa: BLE001 - a damaged log is shown, not a failed page
        return html(templates.versions(base(request), pipeline, table, [], rejects=rejects,
                                       error=f"{type(exc).__name__}: {exc}"))
    return html(templates.versions(base(request), pipeline, table, rows, rejects=rejects))


@router.get("/pipelines/{pipeline}/tables/{table}/partitions/{ds}", response_class=HTMLResponse)
def partition_page(request: Request, pipeline: str, table: str, ds: str, version: int | None = Query(None, ge=0),
                   rejects: bool = False, limit: int = Query(PREVIEW_ROWS, ge=0, le=MAX_PREVIEW_ROWS)):
    view = _partition(request, pipeline, table, ds, version, rejects, limit)
    return html(templates.partition_view(base(request), view))


@router.get("/reports/{path:path}", response_class=HTMLResponse)
def report_page(request: Request, path: str):
    target = catalog(request).resolve_file(path)
    if target is None:
        raise HTTPException(404, "no such report in the lake")
    parts = target.relative.split("/")  # {pipeline}/_reports/{table}/ds={ds}/.../{name}
    return html(templates.report(base(request), parts[0], parts[2], partition_ds(parts[3]), target.relative))


@router.get("/files/{path:path}")
def lake_file(request: Request, path: str):
    cat = catalog(request)
    target = cat.resolve_file(path)
    if target is None:
        raise HTTPException(404, "no such file in the lake")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
               "Content-Length": str(target.size), "Content-Disposition": "inline"}
    if media_type == "text/html":
        headers["Content-Security-Policy"] = REPORT_CSP
        media_type = "text/html; charset=utf-8"
    else:
        headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return StreamingResponse(cat.read_chunks(target), media_type=media_type, headers=headers)


# -- JSON ------------------------------------------------------------------------------------


@router.get("/api/pipelines")
def api_pipelines(request: Request):
    cat = catalog(request)
    return {"lake_root": str(cat.root), "pipelines": _pipelines(cat), "reports": [r.to_dict() for r in cat.reports()]}


@router.get("/api/pipelines/{pipeline}")
def api_pipeline(request: Request, pipeline: str):
    cat = catalog(request)
    _pipeline(cat, pipeline)
    return {"pipeline": pipeline, "tables": [t.to_dict() for t in cat.table_summaries(pipeline)]}


@router.get("/api/pipelines/{pipeline}/tables/{table}")
def api_table(request: Request, pipeline: str, table: str):
    cat = catalog(request)
    _table(cat, pipeline, table)
    content = _table_content(cat, pipeline, table)
    return {**content, "partitions": [p.to_dict() for p in content["partitions"]]}


@router.get("/api/pipelines/{pipeline}/tables/{table}/versions")
def api_versions(request: Request, pipeline: str, table: str, rejects: bool = False,
                 limit: int = Query(1000, ge=1, le=100_000)):
    cat = catalog(request)
    _table(cat, pipeline, table)
    try:
        rows = cat.versions(pipeline, table, rejects=rejects, limit=limit)
    except Exception as exc:  # noqa: BLE001 - the log cannot be read: say why
        raise HTTPException(503, f"cannot read the versions of {table!r}: {type(exc).__name__}: {exc}") from exc
    return {"pipeline": pipeline, "table": table, "rejects": rejects, "versions": [v.to_dict() for v in rows]}


@router.get("/api/pipelines/{pipeline}/tables/{table}/partitions/{ds}")
def api_partition(request: Request, pipeline: str, table: str, ds: str, version: int | None = Query(None, ge=0),
                  rejects: bool = False, limit: int = Query(PREVIEW_ROWS, ge=0, le=MAX_PREVIEW_ROWS)):
    return _partition(request, pipeline, table, ds, version, rejects, limit).to_dict()


@router.get("/api/clusters")
def api_clusters(request: Request, dag_id: str | None = None, run_id: str | None = None,
                 limit: int = Query(cluster_status.DEFAULT_LIMIT, ge=1, le=500)):
    rows, error = _clusters(request, limit=limit, dag_id=dag_id, run_id=run_id)
    if error:
        raise HTTPException(503, error)
    return {"clusters": [r.to_dict() for r in rows]}


async def _to_login(request: Request, exc: _LoginRequired):
    from airflow.api_fastapi.app import get_auth_manager

    return RedirectResponse(get_auth_manager().get_url_login(next_url=exc.next_url), status_code=302)


async def _http_error(request: Request, exc: StarletteHTTPException):
    headers = dict(exc.headers or {})
    if _wants_html(request) and exc.status_code == 404:
        return HTMLResponse(templates.error(base(request), exc.status_code, str(exc.detail)),
                            status_code=exc.status_code, headers={**PAGE_HEADERS, **headers})
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def create_app(lake_root: str | Path | LakeLocation | None = None, cluster_runs: Any = None,
               cluster_checks: dict | None = None) -> FastAPI:
    """The app; ``lake_root`` (a path, URI or :class:`LakeLocation`) fixed (tests), else ``ETL_LAKE_URI``
    read through Settings on each request.

    ``cluster_runs`` (tests): what Airflow recorded of the runs' cluster setups, instead of its DB
    (:func:`.clusters.airflow_runs`'s signature); ``cluster_checks``: keyword arguments of
    :func:`.clusters.describe` (how a local cluster or the runtime's engine is found running).
    """
    app = FastAPI(title="Lake browser", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(require_reader)])
    app.state.lake_root = lake_root
    app.state.cluster_runs = cluster_runs
    app.state.cluster_checks = cluster_checks or {}
    app.add_exception_handler(_LoginRequired, _to_login)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(router)
    # -- further pages of the browser mount their routers here (the SQL page: sql_page.py) ----------
    from etl_platform.lake_browser import sql_page

    app.include_router(sql_page.router)
    return app
