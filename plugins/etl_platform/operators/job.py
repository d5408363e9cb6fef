"""Run one registered job of ``include.etl.jobs`` on the run's cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from etl_platform.hooks.cluster import ClusterHook, get_cluster_hook
from etl_platform.operators.links import ClusterDashboardLink
from include.etl.clusters import ClusterHandle


class SparkJobOperator(BaseOperator):
    """Run a job (a plain function registered in ``include.etl.jobs.JOBS``) on a cluster.

    Despite its name (kept from the platform's first design), it runs on either backend: the
    cluster handle says which engine to use, and the job code is the same for both.

    :param job: registered job name, e.g. ``olympics.ingest`` (or ``module:function``).
    :param cluster: the start task's handle (pass ``start_task.output``).
    :param job_kwargs: keyword arguments of the job (templated, e.g. from ``params``).

    The job reads and writes the lake partition of the run's logical date (``ds``); its small
    summary (paths and row counts) is the task's XCom. Data errors (unusable file, too many
    rejected rows, failed quality checks) fail the task without retries: retrying cannot fix
    the data.
    """

    template_fields: Sequence[str] = ("job_kwargs", "cluster")
    template_fields_renderers = {"job_kwargs": "json"}
    operator_extra_links = (ClusterDashboardLink(),)
    ui_color = "#cfe1f2"

    def __init__(self, *, job: str, cluster: Any, job_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.cluster = cluster
        self.job_kwargs = job_kwargs or {}
        self._hook: ClusterHook | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from include.etl.jobs import resolve_job
        from include.etl.jobs.olympics import RejectThresholdExceeded
        from include.etl.parse import InputFileError
        from include.etl.quality import QualityCheckFailed

        resolve_job(self.job)  # an unknown job fails before touching the cluster
        handle = ClusterHandle.from_dict(self.cluster)
        self._hook = get_cluster_hook(handle.backend, handle.conn_id)
        lost = self._hook.lost(handle)
        if lost:
            # Retrying this task cannot bring a started cluster back; clearing it re-runs its setup.
            raise AirflowFailException(
                f"{lost}. Retries cannot help: clear this task (its setup start_cluster is cleared with it and "
                "starts a new cluster), or clear the whole run."
            )
        ClusterDashboardLink.persist(context, handle.dashboard_url)
        try:
            self.log.info("Running job %s on %s cluster %s with %s", self.job, handle.backend, handle.address, self.job_kwargs)
            summary = self._hook.run_job(handle, self.job, self.job_kwargs, context["ds"])
        except (InputFileError, RejectThresholdExceeded, QualityCheckFailed) as exc:
            raise AirflowFailException(str(exc)) from exc
        finally:
            self._hook.close()
        self.log.info("Job %s done: %s", self.job, summary)
        return summary

    def on_kill(self) -> None:
        if self._hook is not None:
            self.log.info("Task killed: cancelling the job's work on the cluster")
            self._hook.cancel()
