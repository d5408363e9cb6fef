"""The runtime's engines for a benchmark, started as ``make run`` starts them, and the processes to find.

:func:`runtime_engines` spawns one owner per backend, ``python -m include.etl.clusters.runtime
<backend>`` with ``ETL_RUNTIME_DIR`` = ``root`` (what ``bin/supervise.py`` starts under ``make
run``), waits until each engine is ready (:func:`include.etl.clusters.runtime.current`) and yields
an :class:`Engines`; a run attaches to them through the hooks with :meth:`Engines.settings`
(its ``runtime_dir`` is ``root``). On exit each owner gets SIGTERM (it stops its engine), whatever
is left after the grace period is killed by pid, and it is an error if an engine process is left.

:func:`processes_with_env`: the processes that inherited an environment variable (the engines'
``ETL_CLUSTER_WORKDIR``, a deployment's ``AIRFLOW_HOME``) under a directory, through psutil.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300.0  # a JVM and a Dask cluster starting on 2 busy cores
STOP_GRACE_S = 30.0
PR_SET_PDEATHSIG = 1

try:
    _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not in a forked child
except OSError:
    _LIBC = None


def _die_with_parent() -> None:  # in the owner, between fork and exec: SIGTERM when the benchmark dies
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _under(value: str, prefix: str) -> bool:
    prefix = str(prefix).rstrip(os.sep)
    return value == prefix or value.startswith(prefix + os.sep)


def processes_with_env(prefix: str | Path, variables: tuple[str, ...] = ("ETL_CLUSTER_WORKDIR",)) -> list[psutil.Process]:
    """Live (non-zombie) processes, other than this one and its parents, whose ``variables`` lie under ``prefix``."""
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.pid in me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            env = proc.environ()  # readable for this user's processes only
        except psutil.Error:
            continue
        if any(_under(env.get(var, ""), str(prefix)) for var in variables):
            found.append(proc)
    return found


def pids_with_env(prefix: str | Path, variables: tuple[str, ...] = ("ETL_CLUSTER_WORKDIR",)) -> list[int]:
    return sorted(p.pid for p in processes_with_env(prefix, variables))


@dataclass
class Engines:
    """The runtime's engines of a benchmark: owners started under ``root``."""

    root: Path
    owners: dict[str, subprocess.Popen] = field(default_factory=dict)
    ready_s: dict[str, float] = field(default_factory=dict)  # owner spawned -> engine ready, per backend
    stop_s: float | None = None  # SIGTERM to the owners -> all of them exited

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to attach its runs to these engines."""
        return {"ETL_RUNTIME_DIR": str(self.root)}

    def settings(self, env: dict[str, str] | None = None):
        """Settings (from the environment and ``env``) whose ``runtime_dir`` is these engines'."""
        from include.etl.settings import Settings

        return Settings.from_env({**os.environ, **(env or {}), **self.env})

    def handle(self, backend: str):
        """The engine's handle as a run sees it, or None while it is not ready."""
        from include.etl.clusters.runtime import current

        return current(backend, self.root)

    def log(self, backend: str, chars: int = 4000) -> str:
        try:
            return (self.root / f"{backend}-owner.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def engine_pids(self, backend: str | None = None) -> list[int]:
        """The processes of the engine (its workdir ``root/<backend>``), or of every engine here."""
        return pids_with_env(self.root / backend if backend else self.root)

    def wait_ready(self, backend: str, t0: float, timeout: float = START_TIMEOUT_S) -> None:
        from include.etl.clusters.runtime import state

        deadline = t0 + timeout
        while time.monotonic() < deadline:
            found = state(backend, self.root)
            if found["state"] == "ready":
                self.ready_s[backend] = time.monotonic() - t0
                return
            if found["state"] == "failed":
                raise RuntimeError(f"the {backend} engine failed to start: {found.get('error')}\n{self.log(backend)}")
            owner = self.owners[backend]
            if owner.poll() is not None:
                raise RuntimeError(f"the {backend} engine's owner exited with code {owner.returncode}:\n"
                                   f"{self.log(backend)}")
            time.sleep(0.1)
        raise RuntimeError(f"the {backend} engine was not ready within {timeout:.0f} s:\n{self.log(backend)}")


def _stop(owners: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM each owner (it stops its engine), SIGKILL what is left of it after ``grace`` s; by pid."""
    for proc in owners:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in owners:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def runtime_engines(root: Path, backends: tuple[str, ...] | list[str] = ("dask", "spark"),
                    env: dict[str, str] | None = None, timeout: float = START_TIMEOUT_S) -> Iterator[Engines]:
    """The runtime's engines of ``backends``, owned by processes started here, stopped (and checked) at exit.

    ``env`` is added to this process's environment for the owners (e.g. ``ETL_LOCAL_WORKERS``);
    each owner's output goes to ``root/<backend>-owner.log``.
    """
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {}), "ETL_RUNTIME_DIR": str(root)}
    paths = [str(ROOT), *(p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    full_env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    engines = Engines(root)
    try:
        started = {}
        for backend in backends:
            with open(root / f"{backend}-owner.log", "ab") as log:
                started[backend] = time.monotonic()
                engines.owners[backend] = subprocess.Popen(
                    [sys.executable, "-m", "include.etl.clusters.runtime", backend], env=full_env, cwd=ROOT,
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=_die_with_parent)
        for backend in backends:
            engines.wait_ready(backend, started[backend], timeout)
        yield engines
    finally:
        t0 = time.monotonic()
        _stop(list(engines.owners.values()), STOP_GRACE_S)
        engines.stop_s = time.monotonic() - t0
        _, left = psutil.wait_procs(processes_with_env(root), timeout=5)  # exiting as we look
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if left:
            raise RuntimeError(f"engine processes outlived their owners (now killed): {[p.pid for p in left]}")
