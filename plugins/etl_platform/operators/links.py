from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink


class ClusterDashboardLink(BaseOperatorLink):
    """Link from a cluster or job task to its cluster's dashboard (Dask dashboard, Spark UI).

    The URL is stored in the task's XCom under :attr:`xcom_key` while the task runs; the UI
    reads it from there.
    """

    name = "Cluster dashboard"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.bases.xcom import BaseXCom

        return BaseXCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""

    @classmethod
    def persist(cls, context: Any, url: str | None) -> None:
        if url:
            context["ti"].xcom_push(key=cls().xcom_key, value=url)
