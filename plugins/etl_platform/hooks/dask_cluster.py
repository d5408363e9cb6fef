"""Dask: attach to a scheduler (a connection, or the runtime's engine), or a one-off run's own cluster."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from etl_platform.hooks.base import ClusterHook, _connection_or_none, is_runtime
from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.settings import ConfigError, Settings

log = logging.getLogger(__name__)


class DaskClusterHook(ClusterHook):
    """A Dask distributed cluster.

    Connection ``dask_default`` (any type; host and port of the scheduler, e.g.
    ``AIRFLOW_CONN_DASK_DEFAULT=tcp://dask-scheduler:8786``; extra ``dashboard_url`` optional):
    attach to it. No such connection: start a local scheduler and workers.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "dask_default"
    conn_type = "dask"
    hook_name = "Dask cluster"
    backend = "dask"
    marker = "dask"  # include.etl.clusters.dask_local.MARKER (not imported: parse-time code stays light)

    def __init__(self, conn_id: str | None = None, settings: Settings | None = None) -> None:
        super().__init__(conn_id, settings)
        self._client = None
        self._future = None  # the job submitted to a worker through a client (thin tasks, attached cluster)

    def configured_address(self) -> tuple[str, str | None] | None:
        conn = _connection_or_none(self.conn_id)
        if conn is None:
            return None
        if not conn.host:
            raise ConfigError(f"connection {self.conn_id!r} has no host; expected e.g. tcp://dask-scheduler:8786")
        extra = conn.extra_dejson
        scheme = extra.get("protocol") or (conn.conn_type if conn.conn_type in ("tcp", "tls", "ucx") else "tcp")
        address = f"{scheme}://{conn.host}:{conn.port or 8786}"
        return address, extra.get("dashboard_url")

    def attach(self) -> ClusterHandle | None:
        from include.etl.clusters.dask_local import check_dask

        configured = self.configured_address()
        if configured is None:
            return None
        address, dashboard = configured
        log.info("Attaching to the Dask cluster of connection %r at %s", self.conn_id, address)
        try:
            health = check_dask(address)
        except ClusterStartError as exc:
            raise ClusterStartError(f"{exc} (from Airflow connection {self.conn_id!r})") from None
        log.info("Dask cluster at %s is healthy: %s", address, health)
        return ClusterHandle("dask", address, owned=False, dashboard_url=dashboard, conn_id=self.conn_id, extra=health)

    def start_in_process(self, workdir: Path) -> ClusterHandle:
        from include.etl.clusters.dask_local import start_in_process_dask

        handle = start_in_process_dask(self.settings)
        log.info("A Dask cluster in this process (%s workers x %s threads) at %s, dashboard %s: it ends with the run",
                 self.settings.local_workers, self.settings.local_threads, handle.address, handle.dashboard_url)
        return handle

    def stop(self, handle: ClusterHandle) -> list[int]:
        from include.etl.clusters.dask_local import stop_local_dask

        if is_runtime(handle):
            log.info("Dask cluster at %s is the runtime's engine: leaving it running for other runs", handle.address)
            return []
        if not handle.owned:
            log.info("Dask cluster at %s was attached (connection %r), not started here: leaving it running",
                     handle.address, handle.conn_id)
            return []
        killed = stop_local_dask(handle)
        if killed:
            log.info("Stopped the local Dask cluster at %s (processes %s; %s did not stop on their own and were killed)",
                     handle.address, handle.pids, killed)
        else:
            log.info("Stopped the local Dask cluster at %s (%s)", handle.address,
                     f"processes {handle.pids}" if handle.pids else "it ran in this process")
        return killed

    def _connect(self, handle: ClusterHandle, **kwargs: Any):
        from distributed import Client

        self.close()  # one client per hook: a second connection must not leak the first
        log.info("Connecting to the Dask scheduler at %s", handle.address)
        try:
            self._client = Client(handle.address, timeout=30, **kwargs)
        except (OSError, TimeoutError) as exc:
            raise ClusterStartError(f"cannot reach the Dask scheduler at {handle.address}: {exc}") from None
        return self._client

    def engine(self, handle: ClusterHandle) -> Any:
        from include.etl.engines.dask import DaskEngine

        return DaskEngine(self._connect(handle))

    def run_job(self, handle: ClusterHandle, job: str, job_kwargs: dict[str, Any], ds: str,
                run: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the job; with ``ETL_DASK_THIN_TASKS`` (default) its driver runs on a worker, not here.

        The worker has pandas, ``dask.dataframe`` and the job code loaded already (see
        ``include.etl.clusters.dask_jobs``); this process submits the driver through a
        ``distributed`` client. The job's log records are logged here, and its error raised here
        (:func:`include.etl.jobs.errors.decode`).
        """
        if not self.settings.dask_thin_tasks:
            return super().run_job(handle, job, job_kwargs, ds, run)
        import time

        from include.etl.clusters.dask_jobs import run_job_on_worker

        spec = self.job_spec(job, job_kwargs, ds, run)
        t0 = time.perf_counter()
        client = self._connect(handle, set_as_default=False, name=spec.key)
        self._future = client.submit(run_job_on_worker, spec.to_dict(), key=spec.key, pure=False, retries=0)
        result = self._future.result()
        self._future = None
        return self.relay(result, job, f"on worker {result.get('worker')} ({time.perf_counter() - t0:.3f} s from submit "
                                  "to result)")

    def cancel(self) -> None:
        """Cancel this task's job (its future; the job's driver then closes its own client), then close."""
        future, self._future = self._future, None
        if future is not None:
            try:
                future.cancel()
                log.info("Cancelled the job %s on the Dask cluster", future.key)
            except Exception as exc:  # noqa: BLE001 - the cluster may be gone
                log.warning("Could not cancel the job on the Dask cluster: %s", exc)
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
