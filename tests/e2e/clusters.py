"""The engines of end-to-end tests, in one place: the runtime's own engine owners, as `make run` starts them.

:func:`runtime` starts ``python -m include.etl.clusters.runtime <backend>`` per backend (the
owner that ``bin/supervise.py`` starts under ``make run``) with ``ETL_RUNTIME_DIR`` = ``root``, waits
until each engine answers and yields a :class:`Runtime`: give its :attr:`Runtime.env` to a
deployment (runs then attach, as under ``make run``), or attach with the hooks. On exit the
owners get SIGTERM (they stop their engines), and whatever of them is left is killed by pid.

The session fixture ``engine_runtime`` (``include.etl.testing.pytest_plugin``) shares one such
pair per test process with every test that does not kill an engine: starting a JVM and a Dask
cluster costs 20-40 s here. A test that kills an engine starts a runtime of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.procs import processes_with_env

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240.0  # two engines starting at once on 2 busy cores


def kill_leftovers(prefix: str) -> list[int]:
    """Safety net: SIGKILL every process that inherited a cluster workdir under ``prefix``."""
    left = processes_with_env(prefix)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@dataclass
class Runtime:
    root: Path
    owners: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What a deployment needs to attach its runs to these engines."""
        return {"ETL_RUNTIME_DIR": str(self.root)}

    def handle(self, backend: str):
        """The engine's current handle (as a run sees it), or None while it is not running."""
        from include.etl.clusters.runtime import current

        return current(backend, self.root)

    def log(self, backend: str, chars: int = 4000) -> str:
        return (self.root / f"{backend}-owner.log").read_text(errors="replace")[-chars:]

    def engine_pids(self, backend: str) -> list[int]:
        """Every process of the backend's engine (not its owner)."""
        return processes_with_env(str(self.root / backend))

    def wait_ready(self, backend: str, timeout: float = START_TIMEOUT_S, other_than: str | None = None):
        """The engine's handle once it answers (a new one when ``other_than`` is the old address)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            handle = self.handle(backend)
            if handle is not None and handle.address != other_than:
                return handle
            owner = self.owners[backend]
            if owner.poll() is not None:
                raise AssertionError(f"the {backend} engine's owner exited with code {owner.returncode}:\n{self.log(backend)}")
            time.sleep(0.2)
        raise AssertionError(f"the {backend} engine did not answer within {timeout:.0f} s:\n{self.log(backend)}")


def _stop(procs: list[subprocess.Popen], grace: float = 30.0) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def runtime(root: Path, backends: tuple[str, ...] = ("dask", "spark"), env: dict[str, str] | None = None,
            ) -> Iterator[Runtime]:
    """The runtime's engine owners for ``backends``, started together, stopped (and checked) at exit."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "ETL_LOCAL_WORKERS": "2", "ETL_LOCAL_THREADS": "1", **(env or {}),
                "ETL_RUNTIME_DIR": str(root)}
    rt = Runtime(root)
    try:
        for backend in backends:
            with open(root / f"{backend}-owner.log", "ab") as log:
                rt.owners[backend] = subprocess.Popen(
                    [sys.executable, "-m", "include.etl.clusters.runtime", backend], env=full_env, cwd=ROOT,
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        for backend in backends:
            rt.wait_ready(backend)
        yield rt
    finally:
        _stop(list(rt.owners.values()))
        left = kill_leftovers(str(root))
        assert not left, f"engine processes outlived their owners (now killed): {left}"


@contextlib.contextmanager
def local_engines(rt: Runtime, lake: Path) -> Iterator[dict[str, Any]]:
    """``{"dask": DaskEngine, "spark": SparkEngine}`` attached to the runtime ``rt``'s engines."""
    from distributed import Client

    from etl_platform.hooks.spark import SparkClusterHook
    from include.etl.engines.dask import DaskEngine
    from include.etl.settings import Settings

    settings = Settings.from_env({"ETL_LAKE_ROOT": str(lake), "ETL_LOCAL_WORKERS": "2", "ETL_LOCAL_THREADS": "1"})
    spark_hook = SparkClusterHook(settings=settings)
    spark_handle = spark_hook.open_run(rt.handle("spark"))  # the run's session, as StartClusterOperator opens it
    job_hook = SparkClusterHook(settings=settings)  # as SparkJobOperator does: a separate hook for the jobs
    # Not this process's default client: other tests here run Dask's threaded scheduler (no cluster),
    # which a default distributed client would take over (its shuffles would go p2p and fail).
    client = Client(rt.handle("dask").address, timeout=30, set_as_default=False)
    try:
        yield {"dask": DaskEngine(client), "spark": job_hook.engine(spark_handle)}
    finally:
        job_hook.close()
        client.close()
        spark_hook.stop(spark_handle)


def alive_pids(pids: list[int]) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
