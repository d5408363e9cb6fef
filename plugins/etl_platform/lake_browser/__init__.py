"""The lake browser: an Airflow UI page that lists the lake's pipelines, its Delta tables, their
partitions (row and reject counts, which run wrote each day) and versions, opens a partition (as of
any version still in the lake) and the reports written beside it. Read-only, behind Airflow's login.

Two extension points of an Airflow 3 plugin:

* ``fastapi_apps``: the FastAPI app of ``app.py``, which the api-server mounts under ``/lake``;
* ``external_views``: a "Lake" entry in the UI's navigation that shows ``/lake/`` inside the UI
  (at ``/plugin/lake``), and a "Cluster" tab on every DAG run's page that shows the run's cluster
  with the link to its dashboard (``/lake/clusters/run?dag_id=...&run_id=...``).

Plugins are loaded by every Airflow component (scheduler, dag-processor, task processes), but only
the api-server reads ``fastapi_apps``: the FastAPI app, and with it FastAPI itself, is built the
first time that attribute is read, so loading the plugin elsewhere imports nothing more than this
module. ``plugins/lake_browser_plugin.py`` is the module Airflow finds in the plugins folder; this
package's own files are excluded from that scan by its ``.airflowignore`` (Airflow would otherwise
execute each of them as a top-level module).
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/lake"
ROUTE = "lake"  # the UI shows the view at /plugin/lake
# A small "database" glyph for the navigation (an inline SVG, so nothing is fetched).
ICON = (
    "data:image/svg+xml;utf8,"
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='%23718096' stroke-width='2'>"
    "<ellipse cx='12' cy='5' rx='8' ry='3'/><path d='M4 5v14c0 1.7 3.6 3 8 3s8-1.3 8-3V5'/>"
    "<path d='M4 12c0 1.7 3.6 3 8 3s8-1.3 8-3'/></svg>"
)
CLUSTER_ROUTE = "lake-cluster"  # the run's tab: /dags/{dag}/runs/{run}/plugin/lake-cluster
# Three linked nodes: a cluster.
CLUSTER_ICON = (
    "data:image/svg+xml;utf8,"
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='%23718096' stroke-width='2'>"
    "<circle cx='12' cy='5' r='3'/><circle cx='5' cy='19' r='3'/><circle cx='19' cy='19' r='3'/>"
    "<path d='M10.5 7.6 6.5 16.4M13.5 7.6l4 8.8M8 19h8'/></svg>"
)


class _LazyFastAPIApps:
    """``fastapi_apps`` built on first read (by the api-server), once per process."""

    def __init__(self) -> None:
        self._apps: list[dict[str, Any]] | None = None

    def __get__(self, obj: object, owner: type | None = None) -> list[dict[str, Any]]:
        if self._apps is None:
            from etl_platform.lake_browser.app import create_app

            self._apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Lake browser"}]
        return self._apps


class LakeBrowserPlugin(AirflowPlugin):
    name = "lake_browser"
    fastapi_apps = _LazyFastAPIApps()  # type: ignore[assignment]
    external_views = [
        {
            "name": "Lake",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": ROUTE,
            "nav_top_level": True,
            "icon": ICON,
        },
        {
            "name": "Cluster",
            # The UI fills in {DAG_ID} and {RUN_ID} (URL-encoded) for a view on a run's page.
            "href": f"{URL_PREFIX}/clusters/run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": CLUSTER_ROUTE,
            "icon": CLUSTER_ICON,
        },
    ]
