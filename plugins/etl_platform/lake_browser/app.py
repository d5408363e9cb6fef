"""The lake browser: a read-only FastAPI app the api-server mounts under ``/lake`` (see ``__init__``).

Only GET routes. Every route requires an Airflow user (the JWT the UI keeps in its ``_token``
cookie, or an ``Authorization: Bearer`` token from ``/auth/token``) whom the auth manager allows
to read the custom view ``LakeBrowser``; a page requested by a browser without a session is
redirected to Airflow's login, anything else gets Airflow's own 401/403.

Pages (HTML)                                   JSON
  /                      pipelines, reports     /api/pipelines
  /pipelines/{p}         tables                 /api/pipelines/{p}
  /pipelines/{p}/tables/{t}  partitions         /api/pipelines/{p}/tables/{t}
  /reports/{path}        a report in a frame    /files/{path}  any file under the lake root
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from etl_platform.lake_browser import templates
from etl_platform.lake_browser.catalog import REPORT_SUFFIXES, Catalog, partition_ds

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
    return user


def _default_root() -> Path:
    from include.etl.settings import Settings

    return Settings.from_env().lake_root


def catalog(request: Request) -> Catalog:
    root = request.app.state.lake_root
    return Catalog(Path(root) if root is not None else _default_root())


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


def _pipelines(cat: Catalog) -> list[dict]:
    return [{"name": p, "tables": len(cat.tables(p)), "latest": cat.latest_ds(p)} for p in cat.pipelines()]


router = APIRouter()

# -- HTML ------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def index(request: Request):
    cat = catalog(request)
    return html(templates.index(base(request), str(cat.root), _pipelines(cat), cat.reports(limit=50)))


@router.get("/pipelines/{pipeline}", response_class=HTMLResponse)
def pipeline_page(request: Request, pipeline: str):
    cat = catalog(request)
    return html(templates.pipeline(base(request), _pipeline(cat, pipeline), cat.table_summaries(pipeline)))


@router.get("/pipelines/{pipeline}/tables/{table}", response_class=HTMLResponse)
def table_page(request: Request, pipeline: str, table: str):
    cat = catalog(request)
    _table(cat, pipeline, table)
    return html(templates.partitions(base(request), pipeline, table, cat.partitions(pipeline, table)))


@router.get("/reports/{path:path}", response_class=HTMLResponse)
def report_page(request: Request, path: str):
    target = catalog(request).resolve_file(path)
    if target is None or target.suffix.lower() not in REPORT_SUFFIXES:
        raise HTTPException(404, "no such report in the lake")
    parts = path.split("/")
    ds = next((d for d in map(partition_ds, parts) if d), None)
    return html(templates.report(base(request), parts[0] if len(parts) > 1 else None,
                                 parts[1] if len(parts) > 2 else None, ds, path))


@router.get("/files/{path:path}")
def lake_file(request: Request, path: str):
    target = catalog(request).resolve_file(path)
    if target is None:
        raise HTTPException(404, "no such file in the lake")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if media_type == "text/html":
        headers["Content-Security-Policy"] = REPORT_CSP
        media_type = "text/html; charset=utf-8"
    else:
        headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return FileResponse(target, media_type=media_type, headers=headers, content_disposition_type="inline")


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
    return {"pipeline": pipeline, "table": table, "partitions": [p.to_dict() for p in cat.partitions(pipeline, table)]}


async def _to_login(request: Request, exc: _LoginRequired):
    from airflow.api_fastapi.app import get_auth_manager

    return RedirectResponse(get_auth_manager().get_url_login(next_url=exc.next_url), status_code=302)


async def _http_error(request: Request, exc: StarletteHTTPException):
    headers = dict(exc.headers or {})
    if _wants_html(request) and exc.status_code == 404:
        return HTMLResponse(templates.error(base(request), exc.status_code, str(exc.detail)),
                            status_code=exc.status_code, headers={**PAGE_HEADERS, **headers})
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def create_app(lake_root: Path | None = None) -> FastAPI:
    """The app; ``lake_root`` fixed (tests), else ``ETL_LAKE_ROOT`` read through Settings on each request."""
    app = FastAPI(title="Lake browser", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(require_reader)])
    app.state.lake_root = lake_root
    app.add_exception_handler(_LoginRequired, _to_login)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(router)
    return app
