"""The runtime's local engines, each with exactly one owner: a process running this module.

``python -m include.etl.clusters.runtime dask|spark`` starts one engine bound to
``ETL_BIND_HOST``: a Dask scheduler and its workers, or a Spark Connect server. Under
``make run`` ``bin/supervise.py`` starts one per backend beside Airflow's components; tests start
them the same way. The owner

* keeps the engine's state in ``$ETL_RUNTIME_DIR/<backend>.json`` (written atomically, with the
  owner's pid and start time, so a stale file of a killed owner is never believed): ``starting``,
  then ``ready`` with the engine's handle once it answers, or ``failed`` with the error. A run
  that finds its engine starting waits for it (:func:`wait_for`);
* starts a new engine when the engine dies (a run's next task or retry follows it: job tasks
  read the file again, :func:`current`), and gives up after a few starts that fail in a row;
* stops the engine on SIGTERM, SIGINT or SIGHUP and removes the file. The engine's processes
  get SIGTERM from the kernel if the owner itself is killed (``PR_SET_PDEATHSIG``).

Runs never start, find or stop these processes: they read the file and attach.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from include.etl.clusters import ClusterHandle, ClusterStartError, is_alive
from include.etl.settings import BACKENDS

log = logging.getLogger("etl.runtime")

RUNTIME_DIR_VAR = "ETL_RUNTIME_DIR"
MAX_FAILED_STARTS = 3


def runtime_dir() -> Path | None:
    """``ETL_RUNTIME_DIR`` (see :class:`include.etl.settings.Settings`)."""
    from include.etl.settings import Settings

    return Settings.from_env().runtime_dir


def engine_file(root: Path, backend: str) -> Path:
    return Path(root) / f"{backend}.json"


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def state(backend: str, root: Path | None = None) -> dict[str, Any]:
    """``{"state": "ready" | "starting" | "failed" | "none", ...}`` of the runtime's engine of ``backend``.

    ``none``: no owner runs (no file, or its owner is gone); ``ready`` has the ``handle`` (a dict).
    """
    root = root or runtime_dir()
    if root is None:
        return {"state": "none"}
    try:
        data = json.loads(engine_file(root, backend).read_text())
    except (OSError, ValueError):
        return {"state": "none"}
    owner = data.get("owner", {})
    started = _start_time(int(owner.get("pid", -1)))
    if started is None or abs(started - float(owner.get("started", 0))) > 1.0:
        return {"state": "none"}  # its owner is gone: the file is stale
    return data


def current(backend: str, root: Path | None = None) -> ClusterHandle | None:
    """The runtime's ready engine of ``backend``, as a handle no run owns; None when none is ready."""
    root = root or runtime_dir()
    found = state(backend, root)
    if found["state"] != "ready":
        return None
    handle = ClusterHandle.from_dict(found["handle"])
    handle.owned, handle.pids, handle.workdir = False, [], None  # a run must never stop it
    handle.extra = {**handle.extra, "runtime": str(root)}
    return handle


def wait_for(backend: str, root: Path, timeout: float) -> ClusterHandle | None:
    """The runtime's engine of ``backend``, waiting while its owner starts it; None when no owner runs.

    Raises :class:`ClusterStartError` with the owner's error when the engine failed to start,
    or when it is still starting after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    said = False
    while True:
        found = state(backend, root)
        if found["state"] == "ready":
            return current(backend, root)
        if found["state"] == "none":
            return None
        if found["state"] == "failed":
            raise ClusterStartError(f"the runtime's {backend} engine failed to start: {found.get('error')}")
        if time.monotonic() > deadline:
            raise ClusterStartError(f"the runtime's {backend} engine is still starting after {timeout:.0f} s "
                                    f"(see the {backend} lines of make run's output)")
        if not said:
            log.info("The runtime's %s engine is starting: waiting for it (at most %.0f s)", backend, timeout)
            said = True
        time.sleep(0.5)


def _start(backend: str, workdir: Path) -> ClusterHandle:
    from include.etl.settings import Settings

    settings = Settings.from_env()
    if backend == "dask":
        from include.etl.clusters.dask_local import start_local_dask

        return start_local_dask(settings, workdir)
    from include.etl.clusters.spark_local import release_session, start_local_spark_connect

    handle = start_local_spark_connect(settings, workdir)
    # Each run opens a Spark session of its own (open_run): the start's health-check session and
    # its Python workers (about 300 MiB) would only idle.
    session_id = handle.extra.pop("session_id", None)
    if session_id:
        release_session(handle.address, session_id)
    return handle


def _stop(backend: str, handle: ClusterHandle) -> None:
    if backend == "dask":
        from include.etl.clusters.dask_local import stop_local_dask

        stop_local_dask(handle)
    else:
        from include.etl.clusters.spark_local import stop_local_spark_connect

        stop_local_spark_connect(handle)


def _alive(backend: str, handle: ClusterHandle) -> bool:
    core = handle.pids[:1] if backend == "spark" else handle.pids  # the Spark server; the Dask scheduler and workers
    return all(is_alive(p) for p in core)


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class Stopping(BaseException):
    """Raised in the owner's main thread by a stop signal that comes while the engine is starting:
    the start gives back what it spawned (its clean-up catches ``BaseException``)."""


def own(backend: str, root: Path, stop: threading.Event, starting: threading.Event | None = None) -> int:
    """Keep one engine of ``backend`` running until ``stop`` is set; 1 when it cannot be started.

    ``starting`` is set while an engine starts (a stop signal then raises :class:`Stopping`).
    """
    failures = 0
    me = {"pid": os.getpid(), "started": _start_time(os.getpid())}
    starting = starting or threading.Event()
    path = engine_file(root, backend)
    while not stop.is_set():
        t0 = time.monotonic()
        _write(path, {"state": "starting", "owner": me})
        try:
            starting.set()
            try:
                handle = _start(backend, root / backend)
            finally:
                starting.clear()
        except Stopping:
            log.info("stopped while the %s engine was starting", backend)
            break
        except Exception as exc:  # noqa: BLE001 - ClusterStartError and the like: the owner goes on
            failures += 1
            log.error("the %s engine did not start (%d of %d tries): %s", backend, failures, MAX_FAILED_STARTS, exc)
            if failures >= MAX_FAILED_STARTS:
                _write(path, {"state": "failed", "error": str(exc), "owner": me})
                stop.wait()  # runs are told why until the platform stops
                break
            stop.wait(2.0)
            continue
        _write(path, {"state": "ready", "handle": handle.to_dict(), "owner": me})
        log.info("%s engine ready in %.1f s at %s (dashboard %s, processes %s); runs attach through %s", backend,
                 time.monotonic() - t0, handle.address, handle.dashboard_url, handle.pids, engine_file(root, backend))
        while not stop.wait(1.0):
            if not _alive(backend, handle):
                log.error("the %s engine at %s died (processes %s); starting a new one", backend, handle.address,
                          handle.pids)
                break
        _stop(backend, handle)
        log.info("stopped the %s engine at %s", backend, handle.address)
        failures = failures + 1 if time.monotonic() - t0 < 30 else 0
        if failures >= MAX_FAILED_STARTS:
            log.error("the %s engine died %d times in a row within 30 s of its start: giving up", backend, failures)
            _write(path, {"state": "failed", "error": f"it died {failures} times in a row", "owner": me})
            stop.wait()
            break
    path.unlink(missing_ok=True)
    return 0 if failures < MAX_FAILED_STARTS else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=BACKENDS)
    parser.add_argument("--root", type=Path, default=runtime_dir(),
                        help=f"where the engine's handle file and work directory go (default ${RUNTIME_DIR_VAR})")
    args = parser.parse_args(argv)
    if args.root is None:
        parser.error(f"give --root or set {RUNTIME_DIR_VAR}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop, starting = threading.Event(), threading.Event()

    def on_signal(*_):
        stop.set()
        if starting.is_set():
            raise Stopping

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    return own(args.backend, args.root.absolute(), stop, starting)


if __name__ == "__main__":
    sys.exit(main())
