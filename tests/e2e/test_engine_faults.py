"""Faults inside the runtime's engines while a real job runs: the job completes and the tables are right.

The engines are the runtime's (``include.etl.clusters.runtime``, one owner per backend, as
``make run`` starts them), a runtime of this module's own: its last tests kill the engines.

* Dask: a worker process is SIGKILLed while it computes a task of the athletes ingest; the
  scheduler reschedules the task (on the other worker, or on the one its nanny restarts), and
  the engine stays the same (its owner sees no death).
* Spark (local mode): the Python workers are SIGKILLed while they parse the athletes file;
  the failed task attempts are retried (the server runs ``local[N,3]``: 3 attempts per task).
* A lost engine (every process of it SIGKILLed; on Spark local mode the driver JVM is the
  engine): its owner starts a new one and names it in the handle file, a run's job task that
  is retried meanwhile is told so (a retryable error), and the retry then runs on the new
  engine through the run's old handle (``hook.resolve``) with the right table.

The input is generated (300,000 rows, ~45 MB) so the ingest runs long enough to be hit; the
marts are checked against the independent SQLite computation of ``tests/e2e/expected.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.jobs import JobContext, resolve_job
from include.etl.lake import Lake
from include.etl.settings import Settings
from tests.e2e.clusters import alive_pids, kill_leftovers, runtime
from tests.e2e.expected import assert_marts_match
from tests.lake import part, read_partition
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow
DS = "2024-07-07"
ROWS = 300_000  # about 44 MB of CSV
# Dask reads a file of one block as one pandas frame in the job's driver (here this process): the
# Dask test reads the athletes in several blocks, so that its ingest is work on the engine's workers.
DASK_BLOCK_BYTES = 8 << 20


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine-faults")
    yield path
    assert kill_leftovers(str(path)) == [], "a test left cluster processes running"


@pytest.fixture(scope="module")
def rt(base):
    """The runtime's Dask and Spark engines, this module's own (its tests kill them)."""
    with runtime(base / "runtime") as engines:
        yield engines


@pytest.fixture(scope="module")
def inputs(base) -> dict:
    from include.pipelines.olympics.generate import generate_athletes
    from tests.e2e.expected import expected_marts

    summary = generate_athletes(base / "input", ROWS, seed=7)
    athletes = Path(summary["athletes_path"])
    return {"athletes": str(athletes), "regions": summary["regions_path"], "venues": summary["venues_path"],
            "expected": expected_marts(athletes.parent, athletes.name)}  # computed once, for both engines


def _chain(engine, lake_root: Path, sources: dict, during_athletes=None, block_bytes: int = 64 << 20) -> dict:
    """The olympics_etl jobs in order; ``during_athletes(done)`` runs beside the athletes ingest."""
    ctx = JobContext(engine=engine, lake=Lake(lake_root, "olympics"), ds=DS, max_reject_ratio=0.01, block_bytes=block_bytes)
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


def _owner_saw_no_death(rt, backend: str, address: str) -> None:
    assert rt.handle(backend).address == address, f"the {backend} engine was replaced: {rt.log(backend)}"
    assert "died" not in rt.log(backend, 10**6), rt.log(backend)


def test_dask_worker_killed_during_ingest_job_still_completes(base, inputs, rt):
    from distributed import Client

    from include.etl.engines.dask import DaskEngine

    handle = rt.handle("dask")
    killed: dict = {}
    with Client(handle.address, timeout=30, set_as_default=False) as client:
        worker_pids = client.run(os.getpid)  # worker address -> pid
        assert set(worker_pids.values()) <= set(rt.engine_pids("dask")), "not the runtime's engine"

        def kill_a_busy_worker(done: threading.Event) -> None:
            while not done.is_set():
                busy = {addr: keys for addr, keys in client.processing().items() if keys}
                if busy:
                    addr, keys = next(iter(busy.items()))
                    os.kill(worker_pids[addr], signal.SIGKILL)
                    killed.update(pid=worker_pids[addr], keys=[str(k) for k in keys])
                    return
                time.sleep(0.02)

        summaries = _chain(DaskEngine(client), base / "dask-lake", inputs, kill_a_busy_worker, DASK_BLOCK_BYTES)
        assert killed, "no worker was busy during the athletes ingest: the fault was never injected"
        assert killed["pid"] not in rt.engine_pids("dask"), "the SIGKILLed worker still runs"
        # the nanny replaced the killed worker: the engine is whole again, and it is the same engine
        client.wait_for_workers(2, timeout=60)
        assert killed["pid"] not in client.run(os.getpid).values()
    _owner_saw_no_death(rt, "dask", handle.address)
    _assert_complete(summaries, base / "dask-lake", inputs)


@pytest.fixture(scope="module")
def spark(base, rt):
    """A run's view of the runtime's Spark Connect server: its own session, released at the end."""
    from etl_platform.hooks.spark import SparkClusterHook

    settings = Settings.from_env({"ETL_LAKE_ROOT": str(base / "spark-lake"), "ETL_RUNTIME_DIR": str(rt.root)})
    hook = SparkClusterHook(settings=settings)
    handle = hook.open_run(rt.handle("spark"))
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


def test_spark_python_workers_killed_during_ingest_job_still_completes(base, inputs, spark, rt):
    from etl_platform.hooks.spark import SparkClusterHook

    settings, handle = spark
    app = _spark_app(handle)
    failed_before = sum(s.get("numFailedTasks", 0) for s in _stages(handle, app))
    killed: list[int] = []

    def failed_tasks() -> int:
        return sum(s.get("numFailedTasks", 0) for s in _stages(handle, app))

    def kill_busy_python_workers(done: threading.Event) -> None:
        """SIGKILL the Python workers while one of them computes: one whose CPU time grows by >= 40 % of a core.

        Watching the workers' CPU time (cheap: psutil on the daemons' children, every 50 ms)
        catches the parse however fast it is; Spark's stage API lags its tasks by up to a
        second, and with the fast parser the Python part of the athletes stage can be shorter
        than that (an earlier version of this test, which waited for an ACTIVE stage, then
        never saw a busy worker). 40 %, not more: under a load of 10 a busy worker gets less than
        a core (an idle one gets none).

        Every worker of the daemons is killed, not only the busy one: a worker seen busy can have
        finished its task (and gone back to the daemon's pool, to be reused) by the time it is
        killed, which fails nothing (one clean-clone run in four of session 13: "Spark saw no
        failed task"). A round that fails no task is tried again, up to 4 rounds; a round that
        does ends the injection, so no task is hit 3 times (3 attempts are allowed).
        """
        rounds, seen = 0, {}
        daemons: list[int] = []
        while not done.is_set() and rounds < 4:
            daemons = daemons or _daemons(rt.root / "spark")
            busy = []
            for pid in (c for d in daemons for c in _children(d)):
                ticks = _cpu_ticks(pid)
                if ticks is not None and pid in seen and ticks - seen[pid] >= 2:  # 2 ticks in 50 ms
                    busy.append(pid)
                seen[pid] = ticks
            if not busy:
                time.sleep(0.05)
                continue
            rounds += 1
            for pid in [c for d in daemons for c in _children(d)]:
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
    _owner_saw_no_death(rt, "spark", handle.address)
    _assert_complete(summaries, base / "spark-lake", inputs)


class _TI:
    def __init__(self, task_id: str, try_number: int = 1):
        self.dag_id, self.run_id, self.task_id, self.map_index = "olympics_etl", "manual__2024-07-07", task_id, -1
        self.try_number = try_number
        self.xcom: dict = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


def _ran_a_job(rt, backend: str) -> bool:
    """Has the engine now running run a job (the regions ingest) since it started?"""
    handle = rt.handle(backend)
    if backend == "spark":  # a Spark job of the server tagged by a job task's hook (its addTag)
        app = _spark_app(handle)
        with urllib.request.urlopen(f"{handle.dashboard_url}/api/v1/applications/{app}/jobs", timeout=10) as r:
            return any("etl-task-" in tag for job in json.load(r) for tag in job.get("jobTags", []))
    from distributed import Client

    with Client(handle.address, timeout=30, set_as_default=False) as client:  # the job's driver task, by its key
        keys = client.run_on_scheduler(lambda dask_scheduler: {str(t[0]) for t in dask_scheduler.transition_log})
    return any(k.startswith("etl-job-olympics.ingest-") for k in keys)


@pytest.mark.parametrize("backend", ["dask", "spark"])
def test_a_lost_engine_is_replaced_and_the_job_tasks_retry_runs_on_the_new_one(backend, rt, inputs, tmp_path,
                                                                                 monkeypatch):
    from etl_platform.operators import SparkJobOperator, StartClusterOperator

    monkeypatch.setenv("ETL_RUNTIME_DIR", str(rt.root))  # as under `make run`
    monkeypatch.setenv("ETL_LAKE_ROOT", str(tmp_path / "lake"))
    handle = StartClusterOperator(task_id="start_cluster", backend=backend).execute({"ti": _TI("start_cluster")})
    old = rt.handle(backend)
    assert handle["address"] == old.address and handle["extra"]["runtime"] == str(rt.root), handle

    def job_try(n: int) -> tuple[dict, _TI]:
        ti = _TI("ingest_regions", n)
        op = SparkJobOperator(task_id="ingest_regions", job="olympics.ingest", cluster=handle,
                              job_kwargs={"table": "regions", "source": inputs["regions"]})
        return op.execute({"ti": ti, "ds": DS}), ti

    engine = rt.engine_pids(backend)
    assert engine, f"the runtime's {backend} engine has no processes"
    for pid in engine:  # the engine is lost: every process of it at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Its owner notices and no longer hands the engine out while it starts a new one: a try of the
    # job task meanwhile fails with a retryable error (not AirflowFailException), touching nothing.
    deadline = time.monotonic() + 60
    while rt.handle(backend) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rt.handle(backend) is None, f"the owner did not notice its engine died: {rt.log(backend)}"
    with pytest.raises(ClusterStartError, match="is not running now"):
        job_try(2)
    new = rt.wait_ready(backend, other_than=old.address)
    assert alive_pids(engine) == [], "processes of the lost engine still run"
    assert "died" in rt.log(backend, 10**6), rt.log(backend)

    summary, ti = job_try(3)  # the retry, with the run's handle of the lost engine
    assert summary["rows_accepted"] == 230 and summary["rows_rejected"] == 0, summary
    assert Lake(tmp_path / "lake", "olympics").row_count("regions", DS) == 230
    assert list(ti.xcom.values()) == [new.dashboard_url], ti.xcom  # the task links the new engine's dashboard
    assert _ran_a_job(rt, backend), f"the retry did not run on the new {backend} engine at {new.address}"
    assert rt.handle(backend).address == new.address
