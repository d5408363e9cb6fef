"""Start and stop a local Dask cluster: ``dask scheduler`` / ``dask worker`` processes, or one in-process.

The processes run in process groups of their own and get SIGTERM when the process that started
them dies: their one owner is the runtime (:mod:`include.etl.clusters.runtime`). A one-off run
(``airflow dags test``) gets a cluster inside its own process instead (:func:`start_in_process_dask`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from include.etl.clusters import ClusterHandle, ClusterStartError, die_with_parent, is_alive, kill_groups, log_tail
from include.etl.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

# Dask renames its processes ("dask scheduler [tcp://...]"), so match loosely; the process
# group id check in ``kill_groups`` guards against pid reuse as well.
MARKER = "dask"


def _spawn(args: list[str], logfile: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(logfile, "ab") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            preexec_fn=die_with_parent,
        )


# Imported by the scheduler and each worker as they start (see ``dask_setup``): the first job's
# graph and tasks then find them loaded instead of paying ~2 s of imports per process.
WARM_MODULES = ("numpy", "pandas", "pyarrow", "pyarrow.csv", "pyarrow.compute", "pyarrow.parquet", "dask.dataframe",
                "include.etl.engines.dask")


def dask_setup(server) -> None:
    """Preload hook of the scheduler and the workers (``--preload include.etl.clusters.dask_local``).

    Imports :data:`WARM_MODULES`, synchronously, before a worker joins the scheduler (the
    scheduler too: it unpickles the graphs), so the first job's tasks find them loaded. Why
    synchronously: docs/runtime.md, "Dask cluster notes".
    """
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a warm-up only; the job reports real import errors
            log.warning("warm-up import of %s failed: %s", name, exc)
    from distributed import Worker

    if isinstance(server, Worker):
        _watch_cancelled_tasks(server)


STUCK_CANCELLED_S = 5.0  # a cancelled task still running after this long gets its worker restarted


def _watch_cancelled_tasks(worker, grace: float = STUCK_CANCELLED_S) -> None:
    """Restart this worker (its nanny starts a fresh one) when a cancelled task keeps running.

    Python code running in a worker thread cannot be interrupted: the task of a killed Airflow
    task (cancelled by ``on_kill``) keeps its thread until it returns, while the scheduler,
    which released it, sends the worker other tasks, which wait behind it. On a cluster
    shared by several runs that would stall the other runs' work, so after ``grace`` seconds
    the worker process exits and its nanny restarts it; the scheduler reruns the tasks it lost
    elsewhere (as for any lost worker).
    """
    import os
    import time

    from tornado.ioloop import PeriodicCallback

    since: dict[str, float] = {}

    def check() -> None:
        now = time.monotonic()
        stuck = {ts.key for ts in worker.state.executing | worker.state.long_running if ts.state == "cancelled"}
        for key in list(since):
            if key not in stuck:
                del since[key]
        for key in stuck:
            since.setdefault(key, now)
        overdue = [k for k, t in since.items() if now - t > grace]
        if overdue:
            log.warning("cancelled task(s) %s still running after %.0f s: restarting this worker so that they do "
                        "not hold its thread(s)", overdue, grace)
            logging.shutdown()
            os._exit(75)  # the nanny restarts the worker

    PeriodicCallback(check, 1000).start()


def worker_env(workdir: Path | None = None) -> dict[str, str]:
    """Environment of cluster processes: the project importable, so workers can load job code.

    ``ETL_CLUSTER_WORKDIR`` is inherited by every descendant, which lets operators and tests
    find each process that belongs to a cluster.
    """
    env = dict(os.environ)
    if workdir is not None:
        env["ETL_CLUSTER_WORKDIR"] = str(workdir)
    env["SPT_NOENV"] = "1"  # setproctitle must not overwrite the environment (it holds the marker above)
    # A failed Dask task's traceback travels whole to the job's driver (Dask cuts it at 10 kB).
    env.setdefault("DASK_DISTRIBUTED__ADMIN__MAX_ERROR_LENGTH", "1000000")
    # Idle cost: Dask's defaults wake every process 50 times a second to time its event loop and
    # twice a second for the dashboard's system graphs: an idle engine (scheduler, 2 workers and
    # their nannies) took 10 % of a core, 2.7 % with these (docs/runtime.md, "Dask cluster notes").
    env.setdefault("DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL", "1s")
    env.setdefault("DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL", "2s")
    # The memory monitor polls every worker's process tree 10 times a second: half the rest.
    # Spill and pause are also checked whenever data is stored; only the nanny's restart at 95 % waits.
    env.setdefault("DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL", "500ms")
    paths = [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


# Generous: several clusters starting at once on 2 cores each import pandas and dask.dataframe
# (docs/runtime.md, "Dask cluster notes"). A start that truly fails says so earlier.
START_TIMEOUT_S = 180.0


def start_local_dask(settings: Settings, workdir: Path, timeout: float = START_TIMEOUT_S) -> ClusterHandle:
    """Start a scheduler and ``settings.local_workers`` workers bound to ``settings.bind_host``.

    The workers start at the same time as the scheduler and find it through the scheduler file
    (they wait for it to appear), so the two Python start-ups overlap instead of adding up.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    host = settings.bind_host
    scheduler_file = workdir / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)  # before any worker starts: they must not find an old one
    env = worker_env(workdir)
    started: list[int] = []
    py = sys.executable
    try:
        sched = _spawn(
            [py, "-m", "distributed.cli.dask_scheduler", "--host", host, "--port", "0",
             "--dashboard-address", f"{host}:0", "--scheduler-file", str(scheduler_file),
             "--preload", "include.etl.clusters.dask_local"],
            workdir / "scheduler.log", env,
        )
        started.append(sched.pid)
        workers = _spawn(
            [py, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file), "--host", host,
             "--nworkers", str(settings.local_workers), "--nthreads", str(settings.local_threads),
             "--memory-limit", settings.dask_memory_limit, "--dashboard-address", f"{host}:0",
             "--death-timeout", "60", "--local-directory", str(workdir / "workers"),
             "--preload", "include.etl.clusters.dask_local"],
            workdir / "workers.log", env,
        )
        started.append(workers.pid)
        deadline = time.monotonic() + timeout
        info = None
        while time.monotonic() < deadline:
            if sched.poll() is not None:
                raise ClusterStartError(
                    f"Dask scheduler exited with code {sched.returncode} while starting; "
                    f"its log {workdir / 'scheduler.log'} ends with:\n{log_tail(workdir / 'scheduler.log')}"
                )
            if scheduler_file.exists():
                try:
                    info = json.loads(scheduler_file.read_text())
                    break
                except ValueError:
                    pass  # being written
            time.sleep(0.05)
        if info is None:
            raise ClusterStartError(f"Dask scheduler did not start within {timeout:.0f} s; see {workdir / 'scheduler.log'}")
        address = info["address"]
        dash_port = info.get("services", {}).get("dashboard")
        handle = ClusterHandle(
            backend="dask", address=address, owned=True, pids=started, workdir=str(workdir),
            dashboard_url=f"http://{host}:{dash_port}/status" if dash_port else None,
        )
        wait_for_workers(address, settings.local_workers, max(1.0, deadline - time.monotonic()), workdir, workers)
        return handle
    except BaseException:
        kill_groups(started, MARKER, grace=5)
        raise


def wait_for_workers(address: str, n: int, timeout: float, workdir: Path | None = None,
                     process: subprocess.Popen | None = None) -> None:
    """Wait until ``n`` workers joined the scheduler; fail early if the workers' ``process`` exits."""
    from distributed import Client

    def failure(what: str) -> ClusterStartError:
        where = f"; see {workdir / 'workers.log'}:\n{log_tail(workdir / 'workers.log')}" if workdir else ""
        return ClusterStartError(f"Dask scheduler {address} {what}{where}")

    deadline = time.monotonic() + timeout
    with Client(address, timeout=timeout, set_as_default=False) as client:
        while True:
            try:
                client.wait_for_workers(n, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                return
            except TimeoutError:
                joined = len(client.scheduler_info()["workers"])
                if process is not None and process.poll() is not None:
                    raise failure(f"has {joined} of {n} workers: the workers exited with code {process.returncode}") from None
                if time.monotonic() >= deadline:
                    raise failure(f"has {joined} of {n} workers after {timeout:.0f} s") from None


def check_dask(address: str, timeout: float = 10.0) -> dict:
    """Health of the Dask cluster at ``address``: raises :class:`ClusterStartError` if unusable."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout, set_as_default=False) as client:
            info = client.scheduler_info()
    except (OSError, TimeoutError) as exc:
        raise ClusterStartError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    workers = info.get("workers", {})
    if not workers:
        raise ClusterStartError(f"the Dask scheduler at {address} is up but has no workers")
    return {"workers": len(workers), "threads": sum(w.get("nthreads", 0) for w in workers.values())}


# Clusters inside this process (one-off runs), by scheduler address: kept alive until stopped.
_IN_PROCESS: dict[str, object] = {}


def start_in_process_dask(settings: Settings) -> ClusterHandle:
    """A Dask cluster inside this process (a scheduler and ``local_workers`` workers as threads), for
    a one-off run whose tasks all run here (``airflow dags test``): it ends with the process."""
    from distributed import LocalCluster

    host = settings.bind_host
    cluster = LocalCluster(n_workers=settings.local_workers, threads_per_worker=settings.local_threads,
                           processes=False, protocol="tcp://", host=host, dashboard_address=f"{host}:0",
                           memory_limit=settings.dask_memory_limit)
    _IN_PROCESS[cluster.scheduler_address] = cluster
    return ClusterHandle("dask", cluster.scheduler_address, owned=True, dashboard_url=cluster.dashboard_link,
                         extra={"in_process": os.getpid()})


def stop_local_dask(handle: ClusterHandle, timeout: float = 10.0) -> list[int]:
    """Stop a cluster this platform started: a polite shutdown, then its process groups. Idempotent."""
    if not handle.owned:
        raise ValueError(f"refusing to stop the Dask cluster at {handle.address}: it was attached, not started here")
    in_process = _IN_PROCESS.pop(handle.address, None)
    if in_process is not None:
        in_process.close()
        return []
    if any(is_alive(p, MARKER) for p in handle.pids):
        try:
            from distributed import Client

            with Client(handle.address, timeout=5, set_as_default=False) as client:
                client.shutdown()
        except Exception as exc:  # noqa: BLE001 - the process kill below is the real guarantee
            log.info("polite shutdown of %s failed (%s); killing its processes", handle.address, exc)
    return kill_groups(handle.pids, MARKER, grace=timeout)
