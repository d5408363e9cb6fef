"""Cluster hooks: resolve the Airflow connection, attach, health-check, connect, run jobs.

One hook per backend. A run's cluster comes, in this order, from:

* the backend's Airflow connection (``dask_default``, ``spark_connect_default``): attach to it;
* a one-off run (``airflow dags test``): an engine of its own, in its process, ending with it;
* the runtime's engine (``make run``, :mod:`include.etl.clusters.runtime`): attach to it.

A run stops only what it owns (a one-off run's engine); nothing else starts, finds or stops
an engine's processes.
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

ENGINE_WAIT_S = 300.0  # how long a run waits for the runtime's engine while its owner starts it


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


def is_runtime(handle: ClusterHandle) -> bool:
    """Is ``handle`` a run's view of the runtime's engine (owned by the runtime, never stopped by a run)?"""
    return bool((handle.extra or {}).get("runtime"))


class ClusterHook(BaseHook):
    """Common interface of the cluster hooks."""

    backend = ""
    marker = ""  # text of the command line of every process-group leader of a started cluster
    core_processes = 0  # how many of a started cluster's pids it cannot work without (0: all)

    def __init__(self, conn_id: str | None = None, settings: Settings | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id if conn_id is not None else self.default_conn_name
        self.settings = settings or Settings.from_env()

    def start_or_attach(self, workdir: Path, in_process: bool = False) -> ClusterHandle:
        """The configured cluster, else for a one-off run (``in_process``) its own engine, else the runtime's.

        :param workdir: where a one-off run's engine keeps its logs.
        """
        attached = self.attach()
        if attached is not None:
            return attached
        if in_process:
            return self.start_in_process(workdir)
        from include.etl.clusters.runtime import RUNTIME_DIR_VAR, wait_for

        where = self.settings.runtime_dir
        engine = wait_for(self.backend, where, ENGINE_WAIT_S) if where else None
        if engine is not None:
            log.info("Attaching to the runtime's %s engine at %s (dashboard %s)", self.backend, engine.address,
                     engine.dashboard_url)
            return self.open_run(engine)
        raise ClusterStartError(
            f"no {self.backend} cluster for this run: no Airflow connection {self.conn_id!r}, and "
            + (f"the runtime runs no {self.backend} engine ({where}: is `make run` up, with {self.backend} in "
               "ETL_RUNTIME_ENGINES?)" if where else f"no runtime ({RUNTIME_DIR_VAR} is not set: start the platform "
               "with `make run`)")
            + ". Configure the connection to attach to an existing cluster, or test a DAG with `airflow dags test`.")

    def start_in_process(self, workdir: Path) -> ClusterHandle:
        """An engine for a one-off run (every task in this process), ending with it."""
        raise NotImplementedError

    def attach(self) -> ClusterHandle | None:
        """The handle of the cluster a connection names (never stopped by the platform), or None."""
        return None

    def open_run(self, handle: ClusterHandle) -> ClusterHandle:
        """Per-run state on an engine runs share (Spark: the run's own session); Dask needs none."""
        return handle

    def resolve(self, handle: ClusterHandle) -> ClusterHandle:
        """The cluster a job task should use: ``handle``, or for the runtime's engine the one running now.

        The runtime starts a new engine when one dies, so a task (a retry, say) follows it.
        """
        root = (handle.extra or {}).get("runtime")
        if not root:
            return handle
        from include.etl.clusters.runtime import current

        engine = current(self.backend, Path(root))
        if engine is None:
            raise ClusterStartError(f"the runtime's {self.backend} engine (was at {handle.address}) is not running "
                                    f"now ({root}): is `make run` up?")
        if engine.address == handle.address:
            return handle
        log.warning("The runtime's %s engine at %s was replaced by the one at %s: using that one", self.backend,
                    handle.address, engine.address)
        return self.open_run(engine)

    def stop(self, handle: ClusterHandle) -> list[int]:
        raise NotImplementedError

    def engine(self, handle: ClusterHandle) -> Any:
        raise NotImplementedError

    def job_spec(self, job: str, job_kwargs: dict[str, Any] | None, ds: str, run: dict[str, Any] | None = None,
                 **extra: Any) -> Any:
        """The :class:`~include.etl.jobs.spec.JobSpec` of a task's job, with this hook's settings."""
        from include.etl.jobs.spec import JobSpec

        return JobSpec.for_task(self.settings, job, job_kwargs, ds, run, **extra)

    def run_job(self, handle: ClusterHandle, job: str, job_kwargs: dict[str, Any], ds: str,
                run: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the registered ``job`` for ``ds`` on the cluster, on its pipeline's lake; return its summary.

        ``run`` (dag, run, task and try) is recorded by every lake commit the job makes.
        """
        return self.job_spec(job, job_kwargs, ds, run).run_on(self.engine(handle))

    def relay(self, result: dict[str, Any], job: str, where: str) -> dict[str, Any]:
        """The summary of a job that ran elsewhere (:func:`~include.etl.jobs.spec.run_spec`'s answer): its
        log records logged here, its error raised here (a data error as its own class)."""
        here = logging.getLogger(type(self).__module__)  # the hook's own logger
        for _created, level, logger, message in result.get("logs", []):
            here.log(level, "[%s] %s", logger, message)
        if "error" in result:  # the operator logs what went wrong, then the traceback from where the job ran
            from include.etl.jobs.errors import decode

            if result["error"].get("class") == "ClusterStartError":  # the endpoint cannot reach its engine: retryable
                raise ClusterStartError(result["error"].get("message", ""))
            raise decode(result["error"])
        here.info("Job %s done in %.3f s %s", job, result.get("elapsed_s") or 0, where)
        return result["summary"]

    def lost(self, handle: ClusterHandle) -> str | None:
        """Why a cluster the platform started can no longer serve jobs (its processes are gone), or None.

        Attached clusters are never "lost" here: an external cluster may come back, so jobs
        on it fail (and retry) on their own connection errors.
        """
        from include.etl.clusters import is_alive, log_tail

        if not handle.owned:
            return None  # attached or the runtime's: resolve() follows the runtime's engine
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
        self._future = None  # the job submitted to a worker through a client (thin tasks, attached cluster)
        self._job: tuple[str, str] | None = None  # (endpoint, key) of the job submitted over HTTP

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
        ``include.etl.clusters.dask_jobs``). A local cluster takes the job through its scheduler's
        HTTP job endpoint (``include.etl.clusters.dask_http``), so this process imports no Dask
        at all; an attached cluster through a ``distributed`` client. The job's log records are
        logged here, and its error raised here (:func:`include.etl.jobs.errors.decode`).
        """
        if not self.settings.dask_thin_tasks:
            return super().run_job(handle, job, job_kwargs, ds, run)
        import time

        spec = self.job_spec(job, job_kwargs, ds, run)
        t0 = time.perf_counter()
        url = (handle.extra or {}).get("jobs_url")
        if url:
            from include.etl.clusters.dask_http import call_job

            self._job = (url, spec.key)
            try:
                result = call_job(url, spec.to_dict())
            finally:
                self._job = None
        else:
            from include.etl.clusters.dask_jobs import run_job_on_worker

            client = self._connect(handle, set_as_default=False, name=spec.key)
            self._future = client.submit(run_job_on_worker, spec.to_dict(), key=spec.key, pure=False, retries=0)
            result = self._future.result()
            self._future = None
        return self.relay(result, job, f"on worker {result.get('worker')} ({time.perf_counter() - t0:.3f} s from submit "
                                  "to result)")

    def cancel(self) -> None:
        """Cancel this task's job (its future; the job's driver then closes its own client), then close."""
        job, self._job = self._job, None
        if job is not None:
            from include.etl.clusters.dask_http import cancel_job

            if cancel_job(*job):
                log.info("Cancelled the job %s on the Dask cluster", job[1])
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


def get_cluster_hook(backend: str, conn_id: str | None = None, settings: Settings | None = None) -> ClusterHook:
    """The hook for ``backend`` ("dask" or "spark")."""
    backend = check_backend(backend)
    if backend == "dask":
        from etl_platform.hooks.gateway import gateway_hook_for

        return gateway_hook_for(conn_id, settings) or DaskClusterHook(conn_id, settings)
    from etl_platform.hooks.spark import SparkClusterHook

    return SparkClusterHook(conn_id, settings)
