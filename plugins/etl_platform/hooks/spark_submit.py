"""spark-submit: each job is a Spark application on a standalone (or YARN, Kubernetes) master, through
the provider's ``SparkSubmitHook`` and its ``spark_default`` connection (a ``spark://`` master)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from etl_platform.hooks.base import ClusterHook, _connection_or_none
from include.etl.clusters import ClusterHandle, ClusterStartError

log = logging.getLogger(__name__)

SUBMIT_CONN_ID = "spark_default"  # the provider's connection, for a spark:// standalone master
HEALTH_TIMEOUT = 10.0


def submit_connection():
    """The provider's ``spark_default`` connection when it names a ``spark://`` master, else None."""
    conn = _connection_or_none(SUBMIT_CONN_ID)
    return conn if conn is not None and (conn.conn_type or "").lower() == "spark" and conn.host else None


def submit_result(result: dict[str, Any] | None, *, job: str, address: str,
                  failure: Exception | None = None) -> dict[str, Any]:
    """The summary a spark-submit application wrote, or its error raised in this process.

    The application (``include/etl/spark_submit_app.py``) exits 1 on any error, so the provider's
    ``SparkSubmitHook.submit`` raised ``AirflowException`` (``failure``): that alone would be
    retried. A data error (:class:`~include.etl.errors.DataError` and its subclasses, the
    pipeline's own included) is raised here as the same platform class, chained to the submit
    failure, so the operator fails the task without retries, as on the other backends. Any
    other error stays retryable.
    """
    from include.etl.jobs.errors import decode

    if result is None:  # the application died before reporting (driver lost, killed, bad Python path...)
        if failure is not None:
            raise failure
        raise RuntimeError(f"spark-submit of {job} on {address} wrote no summary; see the log above")
    if "error" not in result:
        if failure is not None:  # a summary but a failed submit: do not trust the summary
            raise failure
        return result["summary"]
    raise decode(result) from failure  # the application's error_report: the error's encoding


class SparkSubmitClusterHook(ClusterHook):
    """A Spark standalone master: attach (never start, never stop); each job is one ``spark-submit``."""

    conn_name_attr = "conn_id"
    default_conn_name = SUBMIT_CONN_ID
    conn_type = "spark"
    hook_name = "Spark standalone master (spark-submit)"
    backend = "spark"

    def __init__(self, conn_id: str | None = None, settings: Any = None) -> None:
        super().__init__(conn_id or SUBMIT_CONN_ID, settings)
        self._submit_hook = None

    def attach(self) -> ClusterHandle | None:
        """The master of the provider's ``spark_default`` connection, when it names a ``spark://`` master."""
        conn = submit_connection()
        if conn is None:
            return None
        host = conn.host.split("://", 1)[-1].rstrip("/")
        if ":" in host:
            host, _, port_text = host.partition(":")
            port = int(port_text)
        else:
            port = conn.port or 7077
        master = f"spark://{host}:{port}"
        log.info("Attaching to the Spark standalone master of connection %r at %s (jobs go through spark-submit)",
                 SUBMIT_CONN_ID, master)
        try:
            socket.create_connection((host, port), timeout=HEALTH_TIMEOUT).close()
        except OSError as exc:
            raise ClusterStartError(
                f"cannot reach the Spark master at {master} (from Airflow connection {SUBMIT_CONN_ID!r}): {exc}"
            ) from None
        dashboard = conn.extra_dejson.get("dashboard_url")
        return ClusterHandle("spark", master, owned=False, dashboard_url=dashboard, conn_id=SUBMIT_CONN_ID,
                             extra={"mode": "submit"})

    def run_job(self, handle: ClusterHandle, job: str, job_kwargs: dict[str, Any], ds: str,
                run: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._submit(handle, job, job_kwargs, ds, run)

    def _submit(self, handle: ClusterHandle, job: str, job_kwargs: dict[str, Any], ds: str,
                run: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the job as a Spark application through the provider's SparkSubmitHook (client mode)."""
        import json
        import sys
        import tempfile

        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        from include.etl.clusters.spark_local import java_options
        from include.etl.settings import PROJECT_ROOT

        s = self.settings
        # The driver runs here (client mode) and starts from this machine's class-data archive;
        # executors do too when the master is on this machine (elsewhere the file is not theirs).
        driver_opts = java_options(s)
        local = handle.address.split("://", 1)[-1].split(":", 1)[0] in ("127.0.0.1", "localhost")
        executor_opts = driver_opts if local else s.spark_java_options
        with tempfile.TemporaryDirectory(prefix="etl-submit-") as tmp:
            summary_file = Path(tmp) / "summary.json"
            self._submit_hook = SparkSubmitHook(
                conn_id=handle.conn_id or SUBMIT_CONN_ID,
                name=f"{job} {ds}",
                conf={
                    "spark.pyspark.python": sys.executable,
                    "spark.executorEnv.PYTHONPATH": str(PROJECT_ROOT),
                    "spark.sql.shuffle.partitions": "4",
                    "spark.driver.host": s.bind_host,
                    "spark.driver.bindAddress": s.bind_host,
                    "spark.ui.enabled": "false",
                    **({"spark.driver.extraJavaOptions": driver_opts} if driver_opts else {}),
                    **({"spark.executor.extraJavaOptions": executor_opts} if executor_opts else {}),
                },
                env_vars={"PYTHONPATH": str(PROJECT_ROOT)},
                application_args=["--spec", json.dumps(self.job_spec(job, job_kwargs, ds, run).to_dict()),
                                  "--summary", str(summary_file)],
            )
            failure: Exception | None = None
            try:
                self._submit_hook.submit(application=str(PROJECT_ROOT / "include" / "etl" / "spark_submit_app.py"))
            except Exception as exc:  # noqa: BLE001 - AirflowException on a non-zero exit: the summary says why
                failure = exc
            result = json.loads(summary_file.read_text()) if summary_file.exists() else None
        return submit_result(result, job=job, address=handle.address, failure=failure)

    def stop(self, handle: ClusterHandle) -> list[int]:
        log.info("Spark master %s was attached (connection %r): leaving it running", handle.address, handle.conn_id)
        return []

    def cancel(self) -> None:
        if self._submit_hook is not None:
            self._submit_hook.on_kill()  # kills the spark-submit driver (and the app on the cluster)
