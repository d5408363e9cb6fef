"""Run one registered job (``include.etl.jobs``) on the run's cluster."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from etl_platform.hooks import ClusterHook, get_cluster_hook
from etl_platform.operators.links import ClusterDashboardLink
from include.etl.clusters import ClusterHandle


def log_job_failure(task_log: Any, job: str, exc: BaseException) -> bool:
    """Log what went wrong first, in one line (``<job> failed: <Class>: <message>``), then the traceback
    from where the job ran (a Dask worker, a spark-submit driver) if it ran elsewhere.
    True for a data error (:class:`include.etl.errors.DataError`): the task must fail without retries."""
    from include.etl.errors import DataError
    from include.etl.jobs.errors import headline

    data_error = isinstance(exc, DataError)
    task_log.error("%s failed: %s", job, headline(exc))
    remote = getattr(exc, "remote_traceback", "")
    if remote:  # a data error's traceback is for the platform's developers: below, at INFO
        task_log.log(logging.INFO if data_error else logging.ERROR, "Traceback where the job ran:\n%s", remote.rstrip())
    return data_error


def run_identity(context: Any) -> dict[str, Any]:
    """Who runs a job (DAG, run, task, try): every lake commit of the job records it."""
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "try_number": ti.try_number}


def describe_backend(cluster: Any) -> str:
    """Which engine runs a job on ``cluster`` (a handle dict): ``dask``, ``spark (Spark Connect)``, ..."""
    if not isinstance(cluster, dict) or "backend" not in cluster:
        return "unknown until the start task's handle is rendered"
    backend = cluster["backend"]
    if backend == "spark":
        extra = cluster.get("extra") or {}
        if extra.get("in_process"):
            return "spark (a classic session in the run's process)"
        mode = "spark-submit" if extra.get("mode") == "submit" else "Spark Connect"
        return f"spark ({mode} at {cluster.get('address')})"
    return f"{backend} (at {cluster.get('address')})"


def engine_label(cluster: Any) -> str:
    """What the UI's Operator column says of a job task: its engine when the start task names one,
    else that the run's ``backend`` param chooses (the task's rendered ``backend`` then says which)."""
    backend = getattr(getattr(cluster, "operator", None), "backend", None)
    if backend in ("dask", "spark"):
        return f"{backend.capitalize()} job"
    return "Dask or Spark job (param backend)"


class SparkJobOperator(BaseOperator):
    """Run a registered job (``<pipeline>.<job>``, see ``include.etl.jobs``) on a cluster.

    Despite its name (kept from the platform's first design), it runs on either backend: the
    cluster handle says which engine to use, and the job code is the same for both. The task's
    rendered field ``backend`` (UI: task instance -> Rendered Templates) shows which engine ran
    it, e.g. ``dask (at tcp://127.0.0.1:8786)`` or ``spark (spark-submit at spark://...)``.

    :param job: registered job name, e.g. ``<pipeline>.ingest`` (or ``module:function``).
    :param cluster: the start task's handle (pass ``start_task.output``).
    :param job_kwargs: keyword arguments of the job (templated, e.g. from ``params``).

    The job reads and writes the lake partition of the run's logical date (``ds``) in its
    pipeline's lake; its small summary (paths and row counts) is the task's XCom. Data errors
    (:class:`include.etl.errors.DataError`: unusable file, too many rejected rows, failed
    quality checks, contract errors) fail the task without retries, on every backend:
    retrying cannot fix the data. A failed task's log says first what went wrong
    (``<job> failed: <Class>: <message>``), then the traceback from where the job ran.
    """

    template_fields: Sequence[str] = ("job_kwargs", "cluster", "backend")
    template_fields_renderers = {"job_kwargs": "json", "cluster": "json"}
    operator_extra_links = (ClusterDashboardLink(),)
    ui_color = "#cfe1f2"

    def __init__(self, *, job: str, cluster: Any, job_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.cluster = cluster
        self.job_kwargs = job_kwargs or {}
        self.backend = ""  # rendered from the cluster handle: which engine runs the job
        self.custom_operator_name = engine_label(cluster)  # the UI's Operator column
        self._hook: ClusterHook | None = None

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        self.backend = describe_backend(self.cluster)

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from include.etl.jobs import get_job

        get_job(self.job)  # an unknown job fails before touching the cluster
        handle = ClusterHandle.from_dict(self.cluster)
        self._hook = get_cluster_hook(handle.backend, handle.conn_id)
        handle = self._hook.resolve(handle)  # the runtime's engine running now (it may have been replaced)
        lost = self._hook.lost(handle)
        if lost:
            # Retrying this task cannot bring a started cluster back; clearing it re-runs its setup.
            raise AirflowFailException(
                f"{lost}. Retries cannot help: clear this task (its setup start_cluster is cleared with it and "
                "starts a new cluster), or clear the whole run."
            )
        ClusterDashboardLink.persist(context, handle.dashboard_url)
        try:
            self.log.info("Running job %s on %s with %s", self.job, describe_backend(handle.to_dict()), self.job_kwargs)
            summary = self._hook.run_job(handle, self.job, self.job_kwargs, context["ds"], self.run_of(context))
        except Exception as exc:
            if log_job_failure(self.log, self.job, exc):  # the data is at fault: the same run would fail the same way
                raise AirflowFailException(str(exc)) from exc
            raise
        finally:
            self._hook.close()
        self.log.info("Job %s done: %s", self.job, summary)
        return summary

    def run_of(self, context: Any) -> dict[str, Any]:
        """:func:`run_identity`, asking the lake to wait for the run's publish step when the DAG has one."""
        from etl_platform.operators.lake import publishes_per_run

        return {**run_identity(context), **({"publish": "run"} if publishes_per_run(self) else {})}

    def on_kill(self) -> None:
        if self._hook is not None:
            self.log.info("Task killed: cancelling the job's work on the cluster")
            self._hook.cancel()
