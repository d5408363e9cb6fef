"""Faults through a real scheduler and LocalExecutor (each task its own process), not `dags test`.

A deployment like `make run` (SQLite, LocalExecutor) started as separate components:
api-server, scheduler, dag-processor. Then:

* six runs of the fixture DAGs `long_job` / `timeout_job` (a job that keeps its cluster busy
  for 10 minutes) on Dask and Spark, whose job task is killed while it runs: "mark failed"
  through the REST API (what the UI's button does), SIGTERM and SIGKILL of the task process,
  and its execution timeout. Each time the teardown must stop the cluster and no scheduler,
  worker, JVM or Python worker of it may survive; processes are counted before and after.
* the scheduler SIGKILLed (a crash) during an `olympics_etl` run and started again: the run
  still completes and its marts are right.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from etl_platform.hooks.cluster import safe_path_part
from include.etl.lake import Lake
from tests.conftest import DATA, ROOT
from tests.e2e.airflow_env import project_env
from tests.e2e.expected import assert_marts_match
from tests.e2e.stack import Api, Stack, free_port, wait
from tests.procs import alive, kill_started_under, processes_with_env

pytestmark = pytest.mark.slow

FAULTS = [("dask", "mark_failed"), ("spark", "timeout"), ("dask", "timeout"), ("dask", "sigterm"), ("dask", "sigkill"),
          ("spark", "sigkill")]


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
    env = project_env(
        home,
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5",
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",  # only the runs this test triggers
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
    )
    stack = Stack(base)
    bin_airflow = str(ROOT / "bin" / "airflow")
    for component in ("api-server", "scheduler", "dag-processor"):
        stack.start(component, [bin_airflow, component], env)
    api = Api(port, home)
    try:
        wait("the DAGs to be parsed",
             lambda: all(api("GET", f"dags/{d}")["dag_id"] for d in ("long_job", "timeout_job", "olympics_etl")),
             300, stack, interval=2)
        yield {"home": home, "api": api, "stack": stack, "env": env, "bin": bin_airflow}
    finally:
        stack.stop_all()
        # A test that failed half-way leaves its runs' clusters without a teardown: stop them here,
        # by pid, so that nothing outlives the module, then report them.
        left = kill_started_under(str(home))
    assert left == [], f"processes survived the deployment (now killed): {left}"


def _ti(home: Path, dag_id: str, run_id: str, task_id: str) -> tuple | None:
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        return db.execute("select state, pid, try_number from task_instance where dag_id=? and run_id=? and task_id=?",
                          (dag_id, run_id, task_id)).fetchone()


def _task_log(home: Path, run: dict, task_id: str, chars: int = 4000) -> str:
    """The end of a task's log in this run (every try), to say why it failed."""
    return "".join(f.read_text(errors="replace") for f in sorted((home / "logs" / f"dag_id={run['dag']}").rglob("*"))
                   if f.is_file() and f"run_id={run['id']}" in str(f) and f"task_id={task_id}" in str(f))[-chars:]


def test_killed_job_tasks_leave_no_cluster_process(deployment):
    home, api, stack = deployment["home"], deployment["api"], deployment["stack"]
    for dag_id in ("long_job", "timeout_job"):
        assert api("PATCH", f"dags/{dag_id}", {"is_paused": False})["is_paused"] is False
    runs = []
    # One run after the other: each cluster has started and its job runs before the next run is
    # triggered (six JVMs and Dask clusters starting at once on 2 cores is a load test, not this one).
    for i, (backend, fault) in enumerate(FAULTS):
        dag_id = "timeout_job" if fault == "timeout" else "long_job"
        run = api("POST", f"dags/{dag_id}/dagRuns", {"logical_date": f"2024-07-0{i + 1}T00:00:00Z", "conf": {"backend": backend}})
        workdir = home / "logs" / "clusters" / dag_id / safe_path_part(run["dag_run_id"]) / "start_cluster" / backend
        run = {"dag": dag_id, "id": run["dag_run_id"], "backend": backend, "fault": fault, "workdir": workdir}
        runs.append(run)

        def job_running(run=run):
            ti = _ti(home, run["dag"], run["id"], "long_job")
            if run["fault"] == "timeout" and ti and ti[0] == "failed":
                return ti[1], []  # its 45 s ran out while the other runs were being started
            assert ti is None or ti[0] not in ("failed", "success", "upstream_failed"), (
                run, ti, _task_log(home, run, "start_cluster"), stack.log("scheduler"))
            procs = processes_with_env(str(run["workdir"]))
            return ti and ti[0] == "running" and ti[1] and alive(ti[1]) and procs and (ti[1], procs)

        pid, procs = wait(f"the {run['backend']} job of {run['id']} to run", job_running, 300, stack)
        run["pid"] = pid
        run["cluster_procs"] = len(procs)

    time.sleep(5)  # the jobs are now busy on their clusters
    for run in runs:
        if run["fault"] == "timeout":
            continue  # killed by its execution timeout
        assert len(processes_with_env(str(run["workdir"]))) >= 2, run  # scheduler+workers, or JVM+watcher+workers
        if run["fault"] == "mark_failed":  # the UI's "Mark as failed" on the running task
            patched = api("PATCH", f"dags/long_job/dagRuns/{quote(run['id'], safe='')}/taskInstances/long_job",
                          {"new_state": "failed"})
            assert patched["task_instances"][0]["state"] == "failed", patched
        else:
            os.kill(run["pid"], signal.SIGTERM if run["fault"] == "sigterm" else signal.SIGKILL)
    t0 = time.monotonic()

    def all_ended():
        states = {r["id"]: api("GET", f"dags/{r['dag']}/dagRuns/{quote(r['id'], safe='')}")["state"] for r in runs}
        return all(s in ("failed", "success") for s in states.values()) and states

    states = wait("the killed runs to end", all_ended, 300, stack, interval=2)
    elapsed = time.monotonic() - t0
    report = []
    for run in runs:
        job, stop = _ti(home, run["dag"], run["id"], "long_job"), _ti(home, run["dag"], run["id"], "stop_cluster")
        left = processes_with_env(str(run["workdir"]))
        report.append((run["backend"], run["fault"], states[run["id"]], job[0], stop[0], run["cluster_procs"], left))
        assert states[run["id"]] == "failed" and job[0] == "failed", report
        assert stop[0] == "success", f"the teardown did not run or failed: {report}\n{stack.log('scheduler')}"
        assert left == [], f"cluster processes survived the {run['fault']} of a {run['backend']} job: {report}"
        assert not alive(run["pid"]), f"the killed task process {run['pid']} still runs"
        if run["fault"] == "timeout":
            logs = _task_log(home, run, "long_job", 10**6)
            assert "timeout" in logs.lower() or "timed out" in logs.lower(), logs[-3000:]
    assert elapsed < 240, f"the 600 s jobs were waited for, not cancelled: {elapsed:.0f} s"
    print("killed runs:", report, f"ended {elapsed:.0f} s after the kills")


def test_scheduler_crash_during_a_run_the_run_still_completes(deployment):
    home, api, stack = deployment["home"], deployment["api"], deployment["stack"]
    assert api("PATCH", "dags/olympics_etl", {"is_paused": False})["is_paused"] is False
    run = api("POST", "dags/olympics_etl/dagRuns", {"logical_date": "2024-07-12T00:00:00Z", "conf": {"backend": "dask"}})
    run_id = run["dag_run_id"]

    def an_ingest_runs():
        states = {t: _ti(home, "olympics_etl", run_id, t) for t in ("start_cluster", "ingest_athletes", "ingest_regions")}
        assert all(s is None or s[0] not in ("failed", "upstream_failed") for s in states.values()), states
        return states["start_cluster"] and states["start_cluster"][0] == "success" and any(
            s and s[0] in ("queued", "running") for s in (states["ingest_athletes"], states["ingest_regions"]))

    wait("an ingest of the run to be under way", an_ingest_runs, 300, stack, interval=0.5)
    scheduler = stack.procs["scheduler"]
    os.kill(scheduler.pid, signal.SIGKILL)  # a crash: no shutdown, its executor's workers are orphaned
    scheduler.wait(30)
    time.sleep(3)
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
        assert [h["ds"] for h in lake.history(table) if h.get("ds")] == ["2024-07-12"], (table, lake.history(table))
    assert processes_with_env(str(home / "logs" / "clusters" / "olympics_etl")) == []
