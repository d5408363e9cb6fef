"""Cluster hooks: resolve the Airflow connection, start or attach, health-check, connect, stop.

One hook per backend. With no connection configured the hook starts a local cluster as
detached processes (see ``include.etl.clusters``); with a connection it attaches to that
cluster and never stops it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.settings import ConfigError, Settings, check_backend

log = logging.getLogger(__name__)


def _connection_or_none(conn_id: str | None):
    """The Airflow connection ``conn_id``, or None when it is not defined anywhere."""
    if not conn_id:
        return None
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def safe_path_part(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("_") or "run"


def _sweep(handle: ClusterHandle) -> list[int]:
    """After a stop: kill whatever of the cluster's workdir survived its process groups (orphaned workers)."""
    from include.etl.clusters import sweep_workdir

    return sweep_workdir(handle.workdir) if handle.owned and handle.workdir else []


class ClusterHook(BaseHook):
    """Common interface of the cluster hooks."""

    backend = ""
    marker = ""  # text of the command line of every process-group leader of a started cluster
    core_processes = 0  # how many of a started cluster's pids it cannot work without (0: all)

    def __init__(self, conn_id: str | None = None, settings: Settings | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id if conn_id is not None else self.default_conn_name
        self.settings = settings or Settings.from_env()

    def start_or_attach(self, workdir: Path) -> ClusterHandle:
        raise NotImplementedError

    def stop(self, handle: ClusterHandle) -> list[int]:
        raise NotImplementedError

    def engine(self, handle: ClusterHandle) -> Any:
        raise NotImplementedError

    def run_job(self, handle: ClusterHandle, job: str, job_kwargs: dict[str, Any], ds: str) -> dict[str, Any]:
        """Run the registered ``job`` for ``ds`` on the cluster, on its pipeline's lake; return its summary."""
        from include.etl.jobs import get_job

        registered = get_job(job)
        s = self.settings
        ctx = registered.context(engine=self.engine(handle), lake_root=s.lake_root, ds=ds,
                                 max_reject_ratio=s.max_reject_ratio, block_bytes=s.ingest_block_bytes)
        return registered(ctx, **job_kwargs)

    def lost(self, handle: ClusterHandle) -> str | None:
        """Why a cluster the platform started can no longer serve jobs (its processes are gone), or None.

        Attached clusters are never "lost" here: an external cluster may come back, so jobs
        on it fail (and retry) on their own connection errors.
        """
        from include.etl.clusters import is_alive, log_tail

        if not handle.owned:
            return None
        core = handle.pids[: self.core_processes] if self.core_processes else handle.pids
        gone = [p for p in core if not is_alive(p, self.marker)]
        if not gone:
            return None
        message = (f"the {handle.backend} cluster started by this run at {handle.address} is gone: its processes "
                   f"{gone} no longer run")
        if handle.workdir:
            logs = sorted(Path(handle.workdir).glob("*.log"), key=lambda f: f.stat().st_mtime)
            if logs:
                message += f" (logs in {handle.workdir}; {logs[-1].name} ends with:\n{log_tail(logs[-1], 5)}\n)"
        return message

    def close(self) -> None:
        """Release client resources (not the cluster)."""

    def cancel(self) -> None:
        """Cancel work this hook submitted (called from ``on_kill``)."""
        self.close()


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

    def start_or_attach(self, workdir: Path) -> ClusterHandle:
        from include.etl.clusters.dask_local import check_dask, start_local_dask

        configured = self.configured_address()
        if configured is not None:
            address, dashboard = configured
            log.info("Attaching to the Dask cluster of connection %r at %s", self.conn_id, address)
            try:
                health = check_dask(address)
            except ClusterStartError as exc:
                raise ClusterStartError(f"{exc} (from Airflow connection {self.conn_id!r})") from None
            log.info("Dask cluster at %s is healthy: %s", address, health)
            return ClusterHandle("dask", address, owned=False, dashboard_url=dashboard, conn_id=self.conn_id, extra=health)
        s = self.settings
        log.info(
            "No connection %r: starting a local Dask cluster (%s workers x %s threads, %s each) on %s, logs in %s",
            self.conn_id, s.dask_workers, s.dask_threads, s.dask_memory_limit, s.bind_host, workdir,
        )
        handle = start_local_dask(s, workdir)
        log.info("Local Dask cluster up at %s (dashboard %s), processes %s", handle.address, handle.dashboard_url, handle.pids)
        return handle

    def stop(self, handle: ClusterHandle) -> list[int]:
        from include.etl.clusters.dask_local import stop_local_dask

        if not handle.owned:
            log.info("Dask cluster at %s was attached (connection %r), not started here: leaving it running",
                     handle.address, handle.conn_id)
            return []
        killed = stop_local_dask(handle)
        log.info("Stopped the local Dask cluster at %s (processes %s; still running before the kill: %s)",
                 handle.address, handle.pids, killed or "none")
        return killed + _sweep(handle)

    def engine(self, handle: ClusterHandle) -> Any:
        from distributed import Client

        from include.etl.engines.dask import DaskEngine

        self.close()  # one client per hook: a second engine() must not leak the first
        log.info("Connecting to the Dask scheduler at %s", handle.address)
        try:
            self._client = Client(handle.address, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise ClusterStartError(f"cannot reach the Dask scheduler at {handle.address}: {exc}") from None
        return DaskEngine(self._client)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def get_cluster_hook(backend: str, conn_id: str | None = None, settings: Settings | None = None) -> ClusterHook:
    """The hook for ``backend`` ("dask" or "spark")."""
    backend = check_backend(backend)
    if backend == "dask":
        return DaskClusterHook(conn_id, settings)
    from etl_platform.hooks.spark import SparkClusterHook

    return SparkClusterHook(conn_id, settings)
