"""Faults through a real scheduler and LocalExecutor (each task its own process), not `dags test`.

A deployment like `make run` (SQLite, LocalExecutor) started as separate components
(api-server, scheduler, dag-processor) beside a runtime of its own (the engine owners
`make run` starts: one Dask and one Spark engine, which every run attaches to; not the shared
``engine_runtime``: its jobs are killed here). Then:

* six runs of the fixture DAGs `long_job` / `timeout_job` (a job that keeps the engine busy for
  10 minutes) on Dask and Spark, all at once on the runtime's engines, whose job task is killed
  while its job runs: "mark failed" through the REST API (what the UI's button does), SIGTERM
  and SIGKILL of the task process, and its execution timeout. Each run ends failed within
  seconds, its job is cancelled on the engine (no task of it is left on the Dask scheduler or
  executing on a worker; no running Spark job), no task process
  survives, and the engines themselves keep running (same processes, same address) and still
  take new jobs;
* two concurrent runs on the runtime's Dask engine, one of them killed: an `olympics_etl` run
  succeeds with the right marts while the job of a `long_job` run beside it is killed (SIGKILL)
  and cancelled on the engine; both runs attached to the runtime's engine (their cluster handles
  name it, own no process), and neither teardown stopped it;
* the scheduler SIGKILLed (a crash) during an `olympics_etl` run and started again: the run
  still completes and its marts are right.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from include.etl.lake import Lake
from tests.conftest import DATA, ROOT
from tests.e2e.airflow_env import project_env
from tests.e2e.clusters import runtime
from tests.e2e.expected import assert_marts_match
from tests.e2e.stack import Api, Stack, free_port, wait
from tests.procs import alive, kill_started_under, processes_with_env

pytestmark = pytest.mark.slow

FAULTS = [("dask", "mark_failed"), ("spark", "timeout"), ("dask", "timeout"), ("dask", "sigterm"), ("dask", "sigkill"),
          ("spark", "sigkill")]
JOB_KEY = "etl-job-tests.fixtures.jobs_sleep_on_cluster-"  # the Dask key of every long_job job's driver (its prefix)


@pytest.fixture(scope="module")
def deployment(migrated_home_template, tmp_path_factory):
    base = tmp_path_factory.mktemp("executor-faults")
    home = base / "airflow"
    shutil.copytree(migrated_home_template, home, ignore=shutil.ignore_patterns("airflow.cfg", "logs"))
    dags = base / "dags"
    dags.mkdir()
    (dags / "olympics_etl.py").symlink_to(ROOT / "dags" / "olympics_etl.py")
    (dags / "long_job.py").symlink_to(ROOT / "tests" / "fixtures" / "dags" / "long_job.py")
    port = free_port()
    root = base / "runtime"
    env = project_env(
        home,
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5",
        # The restarted scheduler resets the crashed one's tasks at its first orphan check after the
        # crashed one's heartbeat is 30 s old (scheduler_health_check_threshold): Airflow checks every
        # 300 s, which made the crash test wait 5 min idle whenever a task was queued at the crash.
        AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL="10",
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",  # only the runs this test triggers
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        ETL_RUNTIME_DIR=str(root),  # = the runtime's env: known before its engines answer
    )
    stack = Stack(base)
    bin_airflow = str(ROOT / "bin" / "airflow")
    api = Api(port, home)
    try:
        # Airflow's components and the engines start at the same time (the runtime waits for its engines).
        for component in ("api-server", "scheduler", "dag-processor"):
            stack.start(component, [bin_airflow, component], env)
        with runtime(root) as rt:
            assert {**env, **rt.env} == env
            wait("the DAGs to be parsed",
                 lambda: all(api("GET", f"dags/{d}")["dag_id"] for d in ("long_job", "timeout_job", "olympics_etl")),
                 300, stack, interval=2)
            for dag_id in ("long_job", "timeout_job", "olympics_etl"):
                assert api("PATCH", f"dags/{dag_id}", {"is_paused": False})["is_paused"] is False
            yield {"home": home, "api": api, "stack": stack, "env": env, "bin": bin_airflow, "rt": rt}
    finally:
        stack.stop_all()
        # Runs attach to the runtime's engines and start none: nothing of the deployment may be left.
        left = kill_started_under(str(home))
    assert left == [], f"processes survived the deployment (now killed): {left}"


def _ti(home: Path, dag_id: str, run_id: str, task_id: str) -> tuple | None:
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        return db.execute("select state, pid, try_number from task_instance where dag_id=? and run_id=? and task_id=?",
                          (dag_id, run_id, task_id)).fetchone()


def _run_state(api, run: dict) -> str:
    return api("GET", f"dags/{run['dag']}/dagRuns/{quote(run['id'], safe='')}")["state"]


def _task_log(home: Path, run: dict, task_id: str, chars: int = 4000) -> str:
    """The end of a task's log in this run (every try), to say why it failed."""
    return "".join(f.read_text(errors="replace") for f in sorted((home / "logs" / f"dag_id={run['dag']}").rglob("*"))
                   if f.is_file() and f"run_id={run['id']}" in str(f) and f"task_id={task_id}" in str(f))[-chars:]


def _trigger(api, dag_id: str, day: int, backend: str, **extra) -> dict:
    run = api("POST", f"dags/{dag_id}/dagRuns",
              {"logical_date": f"2024-07-{day:02d}T00:00:00Z", "conf": {"backend": backend}})
    return {"dag": dag_id, "id": run["dag_run_id"], "backend": backend, **extra}


def _engine(rt, backend: str) -> dict:
    """The engine's handle as its owner wrote it (with its processes, which a run's view leaves out)."""
    found = json.loads((rt.root / f"{backend}.json").read_text())
    assert found["state"] == "ready", found
    return found["handle"]


# ---- what runs on the engines -------------------------------------------------------------------


def _dask_jobs(client) -> dict:
    """The long_job jobs on the Dask engine: ``{"scheduler": {key: state}, "workers": [keys executing]}``.

    A job is its driver (key ``etl-job-...``) and the tasks its driver's client (named after the
    key) wants; on the workers, whatever still holds a thread for them (``executing`` counts
    cancelled tasks too: Dask cannot interrupt a running task).
    """
    prefix = JOB_KEY

    def on_scheduler(dask_scheduler):
        return {str(key): ts.state for key, ts in dask_scheduler.tasks.items()
                if str(key).startswith(prefix) or any(prefix in c.client_key for c in ts.who_wants or ())}

    def on_worker(dask_worker):
        state = dask_worker.state
        return [str(ts.key) for ts in (*state.executing, *state.long_running)
                if str(ts.key).startswith((prefix, "sleep-"))]

    return {"scheduler": client.run_on_scheduler(on_scheduler),
            "workers": [k for keys in client.run(on_worker).values() for k in keys]}


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - the engine's own loopback ports
        return json.load(resp)


def _spark_jobs(rt) -> list[int]:
    """Spark's running jobs on the Spark engine (REST API); a long_job job is one Spark job."""
    handle = rt.handle("spark")
    app = _get(f"{handle.dashboard_url}/api/v1/applications")[0]["id"]
    return [j["jobId"] for j in _get(f"{handle.dashboard_url}/api/v1/applications/{app}/jobs?status=running")]


def _core_alive(rt, engines: dict) -> None:
    """The engines are the very ones of before (same address and processes) and their owners saw no death."""
    for backend, before in engines.items():
        now = _engine(rt, backend)
        assert now["address"] == before["address"], f"the {backend} engine was replaced: {before} -> {now}"
        core = before["pids"][:1] if backend == "spark" else before["pids"]  # the server; the scheduler and workers
        assert all(alive(p) for p in core), (backend, core, rt.log(backend))
        assert "died" not in rt.log(backend, 10**6), rt.log(backend)


# ---- the tests -----------------------------------------------------------------------------------


def test_the_executors_workers_start_with_the_engines_clients_loaded(deployment):
    """bin/airflow starts the scheduler through include/etl/clusters/preload.py: LocalExecutor's workers,
    forked from it, and so every task process forked from them, have Spark Connect's gRPC and Arrow
    loaded before any task ran (the per-task overhead: docs/runtime.md)."""
    import psutil

    scheduler = psutil.Process(deployment["stack"].procs["scheduler"].pid)
    workers = wait("LocalExecutor's workers", lambda: scheduler.children(), 120, deployment["stack"], interval=0.5)
    for proc in (scheduler, *workers):
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "cygrpc" in maps and "libarrow" in maps and "pyarrow" in maps, (proc.pid, proc.cmdline())


def test_killed_job_tasks_are_cancelled_on_the_runtimes_engines(deployment):
    from distributed import Client

    home, api, stack, rt = deployment["home"], deployment["api"], deployment["stack"], deployment["rt"]
    engines = {b: _engine(rt, b) for b in ("dask", "spark")}
    # All six at once: a run attaches to the engine in well under a second, there is nothing to start.
    runs = [_trigger(api, "timeout_job" if fault == "timeout" else "long_job", i + 1, backend, fault=fault)
            for i, (backend, fault) in enumerate(FAULTS)]
    with Client(engines["dask"]["address"], timeout=30, set_as_default=False) as client:

        def jobs_busy():
            """Every job task runs and its job is on the engine (a timed-out one may have ended already)."""
            running = {"dask": 0, "spark": 0}
            for run in runs:
                ti = _ti(home, run["dag"], run["id"], "long_job")
                if run["fault"] == "timeout" and ti and ti[0] == "failed":
                    continue  # its 25 s ran out while the other jobs were starting
                assert ti is None or ti[0] not in ("failed", "success", "upstream_failed"), (
                    f"{run} {ti}\n{_task_log(home, run, 'start_cluster')}\n{_task_log(home, run, 'long_job')}")
                if not (ti and ti[0] == "running" and ti[1] and alive(ti[1])):
                    return None
                run["pid"] = ti[1]
                running[run["backend"]] += 1
            on_dask = _dask_jobs(client)["scheduler"]
            drivers = [k for k in on_dask if k.startswith(JOB_KEY)]
            spark = _spark_jobs(rt)
            busy = (len(drivers) == running["dask"] and any(s == "processing" for s in on_dask.values())
                    and len(spark) == running["spark"])
            return busy and {"dask": drivers, "spark": spark}

        before = wait("every job to run on its engine", jobs_busy, 300, stack, interval=1)
        for run in runs:
            _kill(api, run)
        t0 = time.monotonic()

        def all_ended():
            states = {r["id"]: _run_state(api, r) for r in runs}
            return all(s in ("failed", "success") for s in states.values()) and states

        states = wait("the killed runs to end", all_ended, 240, stack, interval=1)
        elapsed = time.monotonic() - t0
        # Nothing of the killed jobs runs on the engines any more (a task already running ends within its second).
        def jobs_gone():
            dask, spark = _dask_jobs(client), _spark_jobs(rt)
            return not dask["scheduler"] and not dask["workers"] and spark == [] and (
                dask, spark)

        left = wait("the jobs to be gone from the engines", jobs_gone, 30, stack, interval=0.5)
        report = [_assert_killed(home, stack, run, states[run["id"]]) for run in runs]
        assert elapsed < 120, f"the 600 s jobs were waited for, not cancelled: {elapsed:.0f} s"
        # The engines themselves were not touched by the kills and the teardowns, and take new jobs.
        _core_alive(rt, engines)
        assert processes_with_env(str(home)) == [], "a run started an engine of its own"
        _new_job_runs(rt, home)
    print("killed runs:", report, f"ended {elapsed:.0f} s after the kills; on the engines before: {before}, "
          f"after: {left}")


def _kill(api, run: dict) -> None:
    if run["fault"] == "mark_failed":  # the UI's "Mark as failed" on the running task
        patched = api("PATCH", f"dags/long_job/dagRuns/{quote(run['id'], safe='')}/taskInstances/long_job",
                      {"new_state": "failed"})
        assert patched["task_instances"][0]["state"] == "failed", patched
    elif run["fault"] in ("sigterm", "sigkill"):
        os.kill(run["pid"], signal.SIGTERM if run["fault"] == "sigterm" else signal.SIGKILL)
    # "timeout": killed by its execution timeout (25 s)


def _assert_killed(home: Path, stack: Stack, run: dict, state: str) -> tuple:
    """The run failed, its job task failed, its teardown succeeded and its task process is gone."""
    job, stop = _ti(home, run["dag"], run["id"], "long_job"), _ti(home, run["dag"], run["id"], "stop_cluster")
    seen = (run["backend"], run["fault"], state, job[0], stop[0])
    assert state == "failed" and job[0] == "failed", seen
    assert stop[0] == "success", f"the teardown did not run or failed: {seen}\n{stack.log('scheduler')}"
    if "pid" in run:
        assert not alive(run["pid"]), f"the killed task process {run['pid']} still runs: {run}"
    if run["fault"] == "timeout":
        logs = _task_log(home, run, "long_job", 10**6)
        assert "timeout" in logs.lower() or "timed out" in logs.lower(), logs[-3000:]
    return seen


def _new_job_runs(rt, home: Path) -> None:
    """A new job on each engine, as a new run's job task runs it (the Spark one in a session of its own)."""
    from etl_platform.hooks.dask_cluster import DaskClusterHook
    from etl_platform.hooks.spark import SparkClusterHook
    from include.etl.settings import Settings

    settings = Settings.from_env({"ETL_LAKE_ROOT": str(home / "lake"), "ETL_RUNTIME_DIR": str(rt.root)})
    for hook in (DaskClusterHook(settings=settings), SparkClusterHook(settings=settings)):
        handle = hook.open_run(rt.handle(hook.backend))
        try:
            assert hook.run_job(handle, "noop", {}, "2024-07-01") == {"job": "noop"}, hook.backend
        finally:
            hook.close()
            assert hook.stop(handle) == []  # the run's teardown: the runtime's engine stays


def test_two_concurrent_runs_on_the_runtimes_engine_one_killed_the_other_correct(deployment):
    from distributed import Client

    home, api, stack, rt = deployment["home"], deployment["api"], deployment["stack"], deployment["rt"]
    engine = _engine(rt, "dask")
    killed = _trigger(api, "long_job", 9, "dask")
    with Client(engine["address"], timeout=30, set_as_default=False) as client:

        def long_job_busy():
            job = _ti(home, "long_job", killed["id"], "long_job")
            assert job is None or job[0] not in ("failed", "success", "upstream_failed"), (
                job, _task_log(home, killed, "long_job"))
            on_engine = _dask_jobs(client)["scheduler"]
            return job and job[0] == "running" and job[1] and any(k.startswith(JOB_KEY) for k in on_engine) and job[1]

        # The long job holds the engine first; the olympics run then works beside it (one after the
        # other, so that neither a loaded machine nor the scheduler's order can make them miss each other).
        wait("the long job to run on the engine", long_job_busy, 300, stack, interval=0.5)
        olympics = _trigger(api, "olympics_etl", 10, "dask")

        def both_busy():
            states = {t: _ti(home, "olympics_etl", olympics["id"], t) for t in ("ingest_athletes", "ingest_regions")}
            assert not [s for s in states.values() if s and s[0] in ("failed", "upstream_failed")], states
            job = long_job_busy()
            # an ingest runs (or already ran) while the long job is still on the engine
            return job and any(s and s[0] in ("running", "success") for s in states.values()) and job

        pid = wait("the long job and an olympics ingest to run on the engine", both_busy, 300, stack, interval=0.5)
        os.kill(pid, signal.SIGKILL)  # the harshest kill: no on_kill, the scheduler sees its client go

        def cancelled():
            on_engine = _dask_jobs(client)
            return not on_engine["scheduler"] and not on_engine["workers"]

        wait("the killed job to be cancelled on the engine", cancelled, 60, stack, interval=0.5)

        def ended():
            states = [_run_state(api, r) for r in (olympics, killed)]
            return all(s in ("success", "failed") for s in states) and states

        states = wait("both runs to end", ended, 420, stack, interval=2)
    assert states == ["success", "failed"], (states, api("GET", f"dags/olympics_etl/dagRuns/"
                                                                f"{quote(olympics['id'], safe='')}/taskInstances"))
    assert _ti(home, "long_job", killed["id"], "long_job")[0] == "failed"
    assert _ti(home, "long_job", killed["id"], "stop_cluster")[0] == "success"
    assert not alive(pid)
    assert_marts_match(home / "lake", "2024-07-10", DATA)
    for run in (olympics, killed):
        handle = api("GET", f"dags/{run['dag']}/dagRuns/{quote(run['id'], safe='')}/taskInstances/start_cluster/"
                            "xcomEntries/return_value")["value"]
        assert (handle["address"], handle["owned"], handle["pids"]) == (engine["address"], False, []), handle
        assert handle["extra"]["runtime"] == str(rt.root), handle
    _core_alive(rt, {"dask": engine})
    assert processes_with_env(str(home)) == [], "a run started an engine of its own"


def test_scheduler_crash_during_a_run_the_run_still_completes(deployment):
    home, api, stack, rt = deployment["home"], deployment["api"], deployment["stack"], deployment["rt"]
    engine = _engine(rt, "dask")
    run_id = _trigger(api, "olympics_etl", 12, "dask")["id"]

    def an_ingest_runs():
        states = {t: _ti(home, "olympics_etl", run_id, t) for t in ("start_cluster", "ingest_athletes", "ingest_regions")}
        assert all(s is None or s[0] not in ("failed", "upstream_failed") for s in states.values()), states
        return states["start_cluster"] and states["start_cluster"][0] == "success" and any(
            s and s[0] in ("queued", "running") for s in (states["ingest_athletes"], states["ingest_regions"]))

    wait("an ingest of the run to be under way", an_ingest_runs, 300, stack, interval=0.5)
    scheduler = stack.procs["scheduler"]
    os.kill(scheduler.pid, signal.SIGKILL)  # a crash: no shutdown, its executor's workers are orphaned
    scheduler.wait(30)
    stack.start("scheduler-2", [deployment["bin"], "scheduler"], deployment["env"])

    def finished():
        state = api("GET", f"dags/olympics_etl/dagRuns/{quote(run_id, safe='')}")["state"]
        assert state != "failed", api("GET", f"dags/olympics_etl/dagRuns/{quote(run_id, safe='')}/taskInstances")
        return state == "success"

    live = {n: p for n, p in stack.procs.items() if n != "scheduler"}
    probe = Stack(stack.base)
    probe.procs = live  # wait() fails early if a live component dies, not for the scheduler we killed
    wait("the run to complete after the scheduler restart", finished, 420, probe, interval=2)
    assert_marts_match(home / "lake", "2024-07-12", DATA)
    # each table was published once for the day (by the run's publish step), whatever tries the crash cost
    lake = Lake(home / "lake", "olympics")
    for table in ("athletes", "regions", "venues", "enriched", "avg_age_by_year", "medals_by_region"):
        commits = [h for h in lake.history(table) if h.get("ds") == "2024-07-12"]
        assert len(commits) == 1, (table, lake.history(table))
    # every try ran on the runtime's engine, which the crash did not touch; no run started one of its own
    _core_alive(rt, {"dask": engine})
    assert processes_with_env(str(home)) == [], "a run started an engine of its own"
