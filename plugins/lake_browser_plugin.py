"""Registers the lake browser (``etl_platform.lake_browser``) with Airflow's plugin manager.

Airflow scans the plugins folder for ``AirflowPlugin`` subclasses; this module is where it finds
the lake browser's. Importing it stays light: the FastAPI app is only built in the api-server.
"""

from etl_platform.lake_browser import LakeBrowserPlugin

__all__ = ["LakeBrowserPlugin"]
