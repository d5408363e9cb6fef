"""The base of the cluster hooks: resolve the Airflow connection, attach, health-check, connect, run jobs.

One hook class per way of running (:mod:`etl_platform.hooks`: Dask, dask-gateway, Spark Connect,
spark-submit). A run's cluster comes, in this order, from:

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
from include.etl.settings import Settings

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

    def job_spec(self, job: str, job_kwargs: dict[str, Any] | None, ds: str, run: dict[str, Any] | None = None) -> Any:
        """The :class:`~include.etl.jobs.spec.JobSpec` of a task's job, with this hook's settings."""
        from include.etl.jobs.spec import JobSpec

        return JobSpec.for_task(self.settings, job, job_kwargs, ds, run)

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
