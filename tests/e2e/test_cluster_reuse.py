"""Clusters reused across runs, through the real embedded runtime (``bin/run``: scheduler + LocalExecutor).

One ``bin/run`` (whose default is ``ETL_CLUSTER_REUSE=shared``) with a shared-cluster idle
timeout of a few seconds, and the fixture DAGs ``small_jobs`` (noops and two tiny ingests) and
``long_job`` (a job that keeps the cluster busy for 10 minutes), on Dask:

1. a ``long_job`` run and two ``small_jobs`` runs on the one shared cluster; the ``long_job``
   task is killed (SIGTERM: ``on_kill``) while the other two runs work: both succeed with the
   right tables, all three handles name the same cluster, no run's teardown stopped it, and no
   run started a cluster of its own;
2. the shared cluster then stops by itself after its idle timeout, leaving no process;
3. a run with ``reuse=per_run`` starts its own cluster and its teardown stops it;
4. a one-off ``airflow dags test`` with ``ETL_CLUSTER_REUSE=shared`` in its environment leaves no
   process running when it ends.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from etl_platform.hooks.cluster import safe_path_part
from tests.conftest import ROOT
from tests.e2e.airflow_env import bin_airflow, project_env
from tests.e2e.stack import Api, Stack, free_port, wait
from tests.procs import alive, processes_with_env

pytestmark = pytest.mark.slow

IDLE = 30  # seconds: ETL_CLUSTER_SHARED_IDLE_TIMEOUT of the deployment (more than a cluster start under load:
#   the idle clock runs from the scheduler's start)
FIXTURES = ROOT / "tests" / "fixtures" / "dags"
ROWS = {"regions": 230, "venues": 52}


def _ti(home: Path, dag_id: str, run_id: str, task_id: str) -> tuple | None:
    try:
        with sqlite3.connect(home / "airflow.db", timeout=30) as db:
            return db.execute("select state, pid, end_date from task_instance where dag_id=? and run_id=? and task_id=?",
                              (dag_id, run_id, task_id)).fetchone()
    except sqlite3.OperationalError:
        return None


def _alive(pids) -> list[int]:
    return [pid for pid in pids if alive(pid)]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster-reuse")
    home, dags = base / "airflow", base / "dags"
    dags.mkdir()
    for name in ("small_jobs.py", "long_job.py"):
        (dags / name).symlink_to(FIXTURES / name)
    port = free_port()
    env = project_env(home, AIRFLOW__API__PORT=str(port), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
                      AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False", AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
                      ETL_CLUSTER_SHARED_IDLE_TIMEOUT=str(IDLE), ETL_LOCAL_WORKERS="2")
    stack = Stack(base)
    stack.start("run", [str(ROOT / "bin" / "run")], env)
    api = Api(port, home)
    try:
        wait("bin/run and the fixture DAGs", lambda: all(api("GET", f"dags/{d}")["dag_id"]
                                                         for d in ("small_jobs", "long_job")), 300, stack, interval=2)
        for dag_id in ("small_jobs", "long_job"):
            api("PATCH", f"dags/{dag_id}", {"is_paused": False})
        yield {"home": home, "api": api, "stack": stack, "shared": home / "logs" / "clusters" / "_shared" / "dask"}
    finally:
        stack.procs["run"].send_signal(signal.SIGTERM)  # bin/run's own shutdown sweeps every cluster
        try:
            stack.procs["run"].wait(60)
        finally:
            stack.stop_all()
        left = processes_with_env(str(home))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert left == [], "cluster processes survived bin/run"


def _trigger(api, dag_id: str, day: int, **conf) -> str:
    return api("POST", f"dags/{dag_id}/dagRuns",
               {"logical_date": f"2024-07-{day:02d}T00:00:00Z", "conf": {"backend": "dask", **conf}})["dag_run_id"]


def _state(api, dag_id: str, run_id: str) -> str:
    return api("GET", f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")["state"]


def _handle(api, dag_id: str, run_id: str) -> dict:
    return api("GET", f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/start_cluster/xcomEntries/"
                      "return_value")["value"]


def _rows(home: Path, table: str, ds: str) -> int:
    """Rows of a published partition, read through its table's latest version."""
    from tests.lake import part, read_partition

    return read_partition(part(home / "lake", "olympics", table, ds)).num_rows


def test_runs_share_one_cluster_and_a_killed_task_does_not_break_the_others(deployment):
    home, api, stack, shared = deployment["home"], deployment["api"], deployment["stack"], deployment["shared"]
    long_run = _trigger(api, "long_job", 1)

    def long_job_busy():
        ti = _ti(home, "long_job", long_run, "long_job")
        assert ti is None or ti[0] not in ("failed", "success", "upstream_failed"), (ti, stack.log("run"))
        return ti and ti[0] == "running" and ti[1] and processes_with_env(str(shared)) and ti[1]

    task_pid = wait("long_job to run on the shared cluster", long_job_busy, 300, stack)
    cluster = processes_with_env(str(shared))
    time.sleep(3)  # its sleep task now holds a worker thread
    runs = [_trigger(api, "small_jobs", day) for day in (2, 3)]
    wait("the small runs to start", lambda: all((_ti(home, "small_jobs", r, "noop_1") or ("",))[0] in
                                                ("running", "success") for r in runs), 300, stack)
    os.kill(task_pid, signal.SIGTERM)  # what "mark failed" / a stop does to a task: on_kill cancels its job

    def ended():
        states = [_state(api, "small_jobs", r) for r in runs] + [_state(api, "long_job", long_run)]
        return all(s in ("success", "failed") for s in states) and states

    states = wait("the three runs to end", ended, 300, stack, interval=1)
    assert states == ["success", "success", "failed"], (states, stack.log("run"))
    assert _ti(home, "long_job", long_run, "long_job")[0] == "failed"
    assert _ti(home, "long_job", long_run, "stop_cluster")[0] == "success"
    for day in ("2024-07-02", "2024-07-03"):
        for table, rows in ROWS.items():
            assert _rows(home, table, day) == rows, (table, day)
    handles = [_handle(api, "small_jobs", r) for r in runs] + [_handle(api, "long_job", long_run)]
    assert len({h["address"] for h in handles}) == 1, handles
    assert all(h["owned"] is False and h["extra"]["reuse"] == "shared" for h in handles), handles
    # No run's teardown stopped the shared cluster (its scheduler still runs), and no run started its own.
    assert _alive(cluster[:1]) or processes_with_env(str(shared)), "a teardown stopped the shared cluster"
    own = [p for p in processes_with_env(str(home / "logs" / "clusters")) if p not in processes_with_env(str(shared))]
    assert own == [], f"a run started a cluster of its own: {own}"
    deployment["last_end"] = time.monotonic()


def test_the_shared_cluster_stops_after_its_idle_timeout(deployment):
    shared = deployment["shared"]
    t0 = deployment.get("last_end", time.monotonic())
    deadline = time.monotonic() + IDLE + 60
    while time.monotonic() < deadline and processes_with_env(str(shared)):
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    assert processes_with_env(str(shared)) == [], f"the shared cluster still runs {elapsed:.0f} s after its last run"
    assert elapsed >= IDLE - 1, f"stopped after {elapsed:.0f} s, before its idle timeout of {IDLE} s"
    print(f"shared cluster gone {elapsed:.1f} s after the last run ended (idle timeout {IDLE} s)")


def test_a_run_that_owns_its_cluster_tears_it_down(deployment):
    home, api, stack, shared = deployment["home"], deployment["api"], deployment["stack"], deployment["shared"]
    run = _trigger(api, "small_jobs", 4, reuse="per_run")
    workdir = home / "logs" / "clusters" / "small_jobs" / safe_path_part(run) / "start_cluster" / "dask"
    seen = wait("the per-run cluster to start", lambda: processes_with_env(str(workdir)), 300, stack, interval=0.5)
    state = wait("the run to end", lambda: _state(api, "small_jobs", run) in ("success", "failed")
                 and _state(api, "small_jobs", run), 300, stack)
    assert state == "success", stack.log("run")
    handle = _handle(api, "small_jobs", run)
    assert handle["owned"] is True and handle["workdir"] == str(workdir) and "reuse" not in handle["extra"]
    assert _alive(seen) == [] and processes_with_env(str(workdir)) == []
    assert processes_with_env(str(shared)) == [], "a per_run run started the shared cluster"
    assert _rows(home, "regions", "2024-07-04") == ROWS["regions"]


def test_a_one_off_dags_test_leaves_no_process(airflow_home, tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "small_jobs.py").symlink_to(FIXTURES / "small_jobs.py")
    t0 = time.monotonic()
    out = bin_airflow(airflow_home, "dags", "test", "small_jobs", "2024-07-05", "-c", '{"backend": "dask"}',
                      AIRFLOW__CORE__DAGS_FOLDER=str(dags), ETL_CLUSTER_REUSE="shared")
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    left = processes_with_env(str(airflow_home))
    assert left == [], f"`dags test` left cluster processes running: {left}"
    text = out.stdout + out.stderr
    assert "A one-off run" in text and "state=success" in text, text[-3000:]
    assert not (airflow_home / "logs" / "clusters" / "_shared" / "dask" / "cluster.json").exists()
    print(f"dags test: {time.monotonic() - t0:.1f} s, nothing left")
