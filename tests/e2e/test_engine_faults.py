"""Faults inside the engines while a real job runs: the job completes and the tables are right.

* Dask: a worker process is SIGKILLed while it computes a task of the athletes ingest; the
  scheduler reschedules the task (on the other worker, or on the one its nanny restarts).
* Spark (local mode): the Python workers are SIGKILLed while they parse the athletes file;
  the failed task attempts are retried (the server runs ``local[N,3]``: 3 attempts per task).
  Local mode has no separate executor JVM to kill: killing the driver JVM is losing the cluster,
  which ``tests/plugins/test_cluster_recovery.py`` covers.
* Spark's idle watcher: it does not stop a server during a job longer than the idle timeout,
  and stops the server (and itself) once nothing ran for that long.

The input is generated (300,000 rows, ~45 MB) so the ingest runs long enough to be hit; the
marts are checked against the independent SQLite computation of ``tests/e2e/expected.py``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from include.etl.clusters import ClusterHandle
from include.etl.jobs import JobContext, resolve_job
from include.etl.lake import Lake
from include.etl.settings import Settings
from tests.e2e.expected import assert_marts_match
from tests.lake import part, read_partition
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow
DS = "2024-07-07"
ROWS = 300_000


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine-faults")
    yield path
    left = processes_with_env(str(path))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "a test left cluster processes running"


@pytest.fixture(scope="module")
def inputs(base) -> dict:
    from include.pipelines.olympics.generate import generate_athletes
    from tests.e2e.expected import expected_marts

    summary = generate_athletes(base / "input", ROWS, seed=7)
    athletes = Path(summary["athletes_path"])
    return {"athletes": str(athletes), "regions": summary["regions_path"], "venues": summary["venues_path"],
            "expected": expected_marts(athletes.parent, athletes.name)}  # computed once, before any cluster idles


def _chain(engine, lake_root: Path, sources: dict, during_athletes=None) -> dict:
    """The olympics_etl jobs in order; ``during_athletes(done)`` runs beside the athletes ingest."""
    ctx = JobContext(engine=engine, lake=Lake(lake_root, "olympics"), ds=DS, max_reject_ratio=0.01)
    out = {}
    for table in ("regions", "venues", "athletes"):
        if table == "athletes" and during_athletes is not None:
            done = threading.Event()
            injector = threading.Thread(target=during_athletes, args=(done,), daemon=True)
            injector.start()
            try:
                out[table] = resolve_job("olympics.ingest")(ctx, table=table, source=sources[table])
            finally:
                done.set()
                injector.join(60)
        else:
            out[table] = resolve_job("olympics.ingest")(ctx, table=table, source=sources[table])
    out["enrich"] = resolve_job("olympics.enrich")(ctx)
    out["aggregate"] = resolve_job("olympics.aggregate")(ctx)
    return out


def _assert_complete(summaries: dict, lake_root: Path, sources: dict) -> None:
    athletes = summaries["athletes"]
    assert athletes["rows_in"] == ROWS and athletes["rows_accepted"] == ROWS and athletes["rows_rejected"] == 0, athletes
    # the published table holds each row once: no file of a killed attempt was committed beside its retry's
    lake = Lake(lake_root, "olympics")
    assert lake.row_count("athletes", DS) == ROWS == read_partition(part(lake_root, "olympics", "athletes", DS)).num_rows
    assert [h["version"] for h in lake.history("athletes")] == [1, 0]  # one commit (0 created the table)
    assert_marts_match(lake_root, DS, Path(sources["athletes"]).parent, expected=sources["expected"])


def test_dask_worker_killed_during_ingest_job_still_completes(base, inputs):
    from distributed import Client

    from include.etl.clusters.dask_local import start_local_dask, stop_local_dask
    from include.etl.engines.dask import DaskEngine

    settings = Settings.from_env({"ETL_LAKE_ROOT": str(base / "dask-lake"), "ETL_LOCAL_WORKERS": "2"})
    handle = start_local_dask(settings, base / "dask")
    killed: dict = {}
    try:
        with Client(handle.address, timeout=30, set_as_default=False) as client:
            worker_pids = client.run(os.getpid)  # worker address -> pid

            def kill_a_busy_worker(done: threading.Event) -> None:
                while not done.is_set():
                    busy = {addr: keys for addr, keys in client.processing().items() if keys}
                    if busy:
                        addr, keys = next(iter(busy.items()))
                        os.kill(worker_pids[addr], signal.SIGKILL)
                        killed.update(pid=worker_pids[addr], keys=[str(k) for k in keys])
                        return
                    time.sleep(0.02)

            summaries = _chain(DaskEngine(client), base / "dask-lake", inputs, kill_a_busy_worker)
            assert killed, "no worker was busy during the athletes ingest: the fault was never injected"
            assert killed["pid"] not in processes_with_env(str(base / "dask")), "the SIGKILLed worker still runs"
            # the nanny replaced the killed worker: the cluster is whole again
            client.wait_for_workers(2, timeout=60)
            assert killed["pid"] not in client.run(os.getpid).values()
    finally:
        stop_local_dask(handle)
    _assert_complete(summaries, base / "dask-lake", inputs)


@pytest.fixture(scope="module")
def spark(base):
    """A local Spark Connect server with a short idle timeout (the watcher's test needs it)."""
    from etl_platform.hooks.spark import SparkClusterHook

    settings = Settings.from_env({"ETL_LAKE_ROOT": str(base / "spark-lake"), "ETL_LOCAL_WORKERS": "2",
                                  "ETL_CLUSTER_IDLE_TIMEOUT": "15"})
    hook = SparkClusterHook(settings=settings)
    handle = hook.start_or_attach(base / "spark")
    try:
        yield settings, handle
    finally:
        hook.stop(handle)


def _spark_app(handle: ClusterHandle) -> str:
    with urllib.request.urlopen(f"{handle.dashboard_url}/api/v1/applications", timeout=10) as resp:
        return json.load(resp)[0]["id"]


def _stages(handle: ClusterHandle, app: str) -> list[dict]:
    with urllib.request.urlopen(f"{handle.dashboard_url}/api/v1/applications/{app}/stages", timeout=10) as resp:
        return json.load(resp)


def _cmdline(pid: int) -> bytes:
    try:
        return " ".join(psutil.Process(pid).cmdline()).encode()
    except psutil.Error:
        return b""


def _parent(pid: int) -> int:
    return psutil.Process(pid).ppid()


def _daemons(workdir: Path) -> list[int]:
    """The server's ``pyspark.daemon`` processes (one per session), which fork the Python workers."""
    found = []
    for pid in processes_with_env(str(workdir)):
        try:
            if b"pyspark.daemon" in _cmdline(pid) and b"pyspark.daemon" not in _cmdline(_parent(pid)):
                found.append(pid)
        except psutil.Error:
            continue
    return found


def _cpu_ticks(pid: int) -> int | None:
    """CPU time (user + system) of ``pid`` in hundredths of a second, or None once it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return round((times.user + times.system) * 100)


def _children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def test_spark_python_workers_killed_during_ingest_job_still_completes(base, inputs, spark):
    from etl_platform.hooks.spark import SparkClusterHook

    settings, handle = spark
    app = _spark_app(handle)
    failed_before = sum(s.get("numFailedTasks", 0) for s in _stages(handle, app))
    killed: list[int] = []

    def failed_tasks() -> int:
        return sum(s.get("numFailedTasks", 0) for s in _stages(handle, app))

    def kill_busy_python_workers(done: threading.Event) -> None:
        """SIGKILL a Python worker while it computes: one whose CPU time grows by >= 60 % of a core.

        Watching the workers' CPU time (cheap: psutil on the daemons' children, every 50 ms)
        catches the parse however fast it is; Spark's stage API lags its tasks by up to a
        second, and with the fast parser the Python part of the athletes stage can be shorter
        than that (an earlier version of this test, which waited for an ACTIVE stage, then
        never saw a busy worker).
        """
        rounds, seen = 0, {}
        daemons: list[int] = []
        while not done.is_set() and rounds < 2:  # at most 2 failures per task: 3 attempts are allowed
            daemons = daemons or _daemons(base / "spark")
            busy = []
            for pid in (c for d in daemons for c in _children(d)):
                ticks = _cpu_ticks(pid)
                if ticks is not None and pid in seen and ticks - seen[pid] >= 3:  # 3 ticks in 50 ms
                    busy.append(pid)
                seen[pid] = ticks
            if not busy:
                time.sleep(0.05)
                continue
            rounds += 1
            for pid in busy:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                if failed_tasks() > failed_before:
                    return  # a running task was hit: Spark now retries it
                time.sleep(0.1)

    hook = SparkClusterHook(settings=settings)
    try:
        summaries = _chain(hook.engine(handle), base / "spark-lake", inputs, kill_busy_python_workers)
    finally:
        hook.close()
    assert killed, "no Python worker was busy during the athletes ingest: the fault was never injected"
    failed = failed_tasks() - failed_before
    assert failed >= 1, "Spark saw no failed task: the kill did not hit a running task"
    _assert_complete(summaries, base / "spark-lake", inputs)


def _sleepy(batches):
    import time as _time

    for batch in batches:
        _time.sleep(25)
        yield batch


def test_spark_idle_watcher_spares_a_long_job_then_stops_the_idle_server(base, spark):
    from etl_platform.hooks.spark import SparkClusterHook

    settings, handle = spark  # idle timeout: 15 s
    assert len(handle.pids) == 2, handle.pids  # the server and its watcher
    hook = SparkClusterHook(settings=settings)
    try:
        rows = hook.engine(handle).session.range(2).mapInPandas(_sleepy, "id bigint").collect()  # 25 s > 15 s
    finally:
        hook.close()
    assert len(rows) == 2
    assert processes_with_env(str(base / "spark")), "the watcher stopped a server that was running a job"
    t0 = time.monotonic()
    while processes_with_env(str(base / "spark")) and time.monotonic() - t0 < 90:
        time.sleep(1)
    left = processes_with_env(str(base / "spark"))
    assert left == [], f"the idle server (or its watcher) still runs after {time.monotonic() - t0:.0f} s: {left}"
    watch_log = (base / "spark" / "idle-watch.log").read_text()
    assert "idle for" in watch_log and "stopping it now" in watch_log, watch_log
