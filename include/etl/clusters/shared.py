"""One local cluster per backend, shared by the runs of one AIRFLOW_HOME (``ETL_CLUSTER_REUSE=shared``).

A run's start task asks the registry for the backend's shared cluster: if one runs, it gets
its handle at once (no start); if none runs, or the one recorded is gone (its processes
exited, were killed, or the pids now belong to other programs), it starts one. The registry is
a directory per backend under ``$AIRFLOW_HOME/logs/clusters/_shared/<backend>/``, which is also
the cluster's ``ETL_CLUSTER_WORKDIR`` (so ``bin/supervise.py``'s shutdown sweep finds it like
any run's cluster):

* ``cluster.json``: the handle of the running cluster plus each process's start time (pid
  reuse guard), replaced atomically (write + rename);
* ``.lock``: ``fcntl.flock``-ed while a cluster is checked and started, so that two runs
  starting at the same time do not start two clusters (the second waits and then finds the
  first one's).

Nobody's teardown stops a shared cluster: handles given to runs say ``owned=False`` (with
``extra["reuse"] == "shared"``), and a run stops only what it owns. The cluster stops itself
after ``ETL_CLUSTER_SHARED_IDLE_TIMEOUT`` seconds without work (the Dask scheduler's
``--idle-timeout``, the Spark server's idle watcher); :meth:`SharedClusters.stop` stops it on
demand (tests, an operator's clean-up).

The fast path (a cluster runs) reads one JSON file and checks a few pids with psutil: no lock,
no engine import, so job tasks can call :meth:`SharedClusters.current` each time and follow a
cluster that was replaced meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from include.etl.clusters import ClusterHandle, ClusterStartError

log = logging.getLogger(__name__)

SHARED_DIR = "_shared"  # under $AIRFLOW_HOME/logs/clusters/
STATE_FILE = "cluster.json"
LOCK_FILE = ".lock"
MARKERS = {"dask": "dask", "spark": "SparkConnectServer"}
CORE_PROCESSES = {"dask": 0, "spark": 1}  # how many leading pids the cluster cannot work without (0: all)


def clusters_root(airflow_home: str | Path | None = None) -> Path:
    """``$AIRFLOW_HOME/logs/clusters``: every local cluster's work directory is below it."""
    home = Path(airflow_home or os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return home / "logs" / "clusters"


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def _cmdline(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


class SharedClusters:
    """The registry of shared local clusters under ``root`` (``$AIRFLOW_HOME/logs/clusters``)."""

    def __init__(self, root: str | Path, lock_timeout: float = 300.0) -> None:
        self.root = Path(root) / SHARED_DIR
        self.lock_timeout = lock_timeout

    def workdir(self, backend: str) -> Path:
        return self.root / backend

    def state_file(self, backend: str) -> Path:
        return self.workdir(backend) / STATE_FILE

    # ---- state ----------------------------------------------------------------------

    def read(self, backend: str) -> dict | None:
        try:
            return json.loads(self.state_file(backend).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # half-written by a crashed writer (we rename, so rare): stale
            log.warning("unreadable shared-cluster state %s (%s): treating it as stale", self.state_file(backend), exc)
            return None

    def _write(self, backend: str, state: dict) -> None:
        path = self.state_file(backend)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)

    def _clear(self, backend: str) -> None:
        self.state_file(backend).unlink(missing_ok=True)

    @staticmethod
    def dead(state: dict) -> list[int]:
        """The recorded core processes that no longer run as recorded (exited, zombie, or pid reused)."""
        handle = state["handle"]
        pids = list(handle.get("pids") or [])
        core = CORE_PROCESSES.get(handle.get("backend"), 0)
        marker = MARKERS.get(handle.get("backend"), "")
        started = state.get("start_times", {})
        gone = []
        for pid in pids[:core] if core else pids:
            t, recorded = _start_time(pid), started.get(str(pid))
            if t is None or recorded is None or abs(t - float(recorded)) > 1.0 or (marker and marker not in _cmdline(pid)):
                gone.append(pid)
        return gone if pids else [-1]

    # ---- handles --------------------------------------------------------------------

    @staticmethod
    def _for_run(state: dict) -> ClusterHandle:
        """What a run gets: the cluster's handle, not owned (no run's teardown stops it)."""
        handle = ClusterHandle.from_dict(dict(state["handle"]))
        handle.owned = False
        handle.extra = {**handle.extra, "reuse": "shared", "shared_since": state.get("started_at"),
                        "idle_timeout_s": state.get("idle_timeout_s")}
        return handle

    def current(self, backend: str) -> ClusterHandle | None:
        """The running shared cluster of ``backend``, or None: no lock, no engine import."""
        state = self.read(backend)
        if state is None or self.dead(state):
            return None
        return self._for_run(state)

    @contextlib.contextmanager
    def lock(self, backend: str) -> Iterator[None]:
        """Hold the backend's registry lock (waiting at most ``lock_timeout`` s for another starter)."""
        workdir = self.workdir(backend)
        workdir.mkdir(parents=True, exist_ok=True)
        with open(workdir / LOCK_FILE, "a+") as f:
            deadline = time.monotonic() + self.lock_timeout
            waited = False
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise ClusterStartError(
                            f"waited {self.lock_timeout:.0f} s for the lock of the shared {backend} cluster "
                            f"({workdir / LOCK_FILE}): another start holds it") from exc
                    if not waited:
                        log.info("Another run is starting the shared %s cluster; waiting for it", backend)
                        waited = True
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def acquire(self, backend: str, start: Callable[[Path], ClusterHandle], *, idle_timeout: float) -> ClusterHandle:
        """The shared cluster of ``backend``: the running one, else one started by ``start(workdir)``.

        ``start`` must return an owned handle of a cluster that stops itself after ``idle_timeout``
        seconds without work; its work directory is the registry's directory of the backend.
        """
        if idle_timeout <= 0:
            raise ClusterStartError(
                "a shared cluster needs an idle timeout (ETL_CLUSTER_SHARED_IDLE_TIMEOUT > 0): nothing else stops it")
        handle = self.current(backend)
        if handle is not None:
            log.info("Reusing the shared %s cluster at %s (processes %s, running since %s)", backend, handle.address,
                     handle.pids, handle.extra.get("shared_since"))
            return handle
        with self.lock(backend):
            state = self.read(backend)
            if state is not None and not self.dead(state):  # another run started it while we waited
                handle = self._for_run(state)
                log.info("Reusing the shared %s cluster at %s, started meanwhile by another run", backend, handle.address)
                return handle
            workdir = self.workdir(backend)
            if state is not None:
                log.info("The shared %s cluster recorded in %s is gone (processes %s no longer run): starting a new one",
                         backend, self.state_file(backend), self.dead(state))
            self._stop_processes(backend, state)
            self._clear(backend)
            t0 = time.monotonic()
            started = start(workdir)
            started_at = time.time()
            self._write(backend, {
                "handle": started.to_dict(),
                "start_times": {str(p): _start_time(p) for p in started.pids},
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
                "start_s": round(time.monotonic() - t0, 2),
                "idle_timeout_s": idle_timeout,
            })
            log.info("Started the shared %s cluster at %s in %.1f s; it stops itself after %.0f s without work "
                     "(ETL_CLUSTER_SHARED_IDLE_TIMEOUT)", backend, started.address, time.monotonic() - t0, idle_timeout)
            return self._for_run(self.read(backend))

    def _stop_processes(self, backend: str, state: dict | None) -> list[int]:
        """Kill what is left of a recorded (or unrecorded) cluster of the backend's directory."""
        from include.etl.clusters import kill_groups, sweep_workdir

        killed: list[int] = []
        if state is not None:
            recorded = state.get("start_times", {})
            pids = [p for p in state["handle"].get("pids", [])
                    if _start_time(p) is not None and recorded.get(str(p)) is not None
                    and abs(_start_time(p) - float(recorded[str(p)])) <= 1.0]
            killed += kill_groups(pids, MARKERS.get(backend, ""), grace=5)
        return killed + sweep_workdir(self.workdir(backend), grace=3)

    def stop(self, backend: str) -> list[int]:
        """Stop the shared cluster of ``backend`` now (whatever runs use it); returns the pids killed."""
        with self.lock(backend):
            state = self.read(backend)
            if state is not None and backend == "spark":
                from include.etl.clusters.spark_local import close_clients

                close_clients(state["handle"]["address"])
            killed = self._stop_processes(backend, state)
            self._clear(backend)
        if state is not None:
            log.info("Stopped the shared %s cluster at %s", backend, state["handle"]["address"])
        return killed


def shared_settings(settings):
    """``settings`` for starting a shared cluster: its idle timeout is ``ETL_CLUSTER_SHARED_IDLE_TIMEOUT``."""
    return replace(settings, cluster_idle_timeout=settings.shared_idle_timeout)
