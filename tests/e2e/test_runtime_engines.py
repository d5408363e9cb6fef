"""The runtime owns the engines and runs attach, through the real embedded runtime (``bin/run``).

One ``bin/run`` (the ``make run`` entry point: Airflow's components plus one engine owner per
backend, here Dask only) and the fixture DAGs ``small_jobs`` (noops and two tiny ingests) and
``long_job`` (a job that keeps the engine busy for 10 minutes):

1. two concurrent runs on the runtime's engine, one of them killed: a ``long_job`` run and two
   ``small_jobs`` runs; the ``long_job`` task is killed (SIGTERM: ``on_kill`` cancels its job)
   while the other two work: both succeed with the right tables, all three handles name the
   runtime's engine, no run's teardown stopped it, and no run started an engine of its own;
2. ``bin/run`` stopped (SIGTERM, as Ctrl-C): its engine stops with it, nothing is left;
3. a one-off ``airflow dags test`` has an engine in its own process and leaves no process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import ROOT
from tests.e2e.airflow_env import bin_airflow, project_env
from tests.e2e.stack import Api, Stack, free_port, wait
from tests.procs import alive, processes_with_env

pytestmark = pytest.mark.slow

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
                      ETL_RUNTIME_ENGINES="dask", ETL_LOCAL_WORKERS="2")
    stack = Stack(base)
    stack.start("run", [str(ROOT / "bin" / "run")], env)
    api = Api(port, home)
    try:
        wait("bin/run and the fixture DAGs", lambda: all(api("GET", f"dags/{d}")["dag_id"]
                                                         for d in ("small_jobs", "long_job")), 300, stack, interval=2)
        for dag_id in ("small_jobs", "long_job"):
            api("PATCH", f"dags/{dag_id}", {"is_paused": False})
        yield {"home": home, "api": api, "stack": stack, "engine": home / "runtime" / "dask"}
    finally:
        stack.stop_all()  # a no-op after test 2 stopped bin/run
        left = processes_with_env(str(home))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert left == [], "engine processes survived bin/run"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _task_logs(home: Path, dag_id: str, chars: int = 3000) -> str:
    """The tail of every task log of ``dag_id`` (why a task failed, for an assertion's message)."""
    return "\n".join(f"--- {p.relative_to(home)}\n{p.read_text(errors='replace')[-chars:]}"
                     for p in sorted((home / "logs").glob(f"dag_id={dag_id}/**/*.log")))


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


def test_concurrent_runs_share_the_runtimes_engine_and_a_killed_one_does_not_break_the_others(deployment):
    home, api, stack, engine = deployment["home"], deployment["api"], deployment["stack"], deployment["engine"]
    wait("the runtime's Dask engine", lambda: '"ready"' in _read(home / "runtime" / "dask.json"), 300, stack)
    # The scheduler and the workers' launcher (a worker process itself may be replaced by its nanny).
    cluster = json.loads((home / "runtime" / "dask.json").read_text())["handle"]["pids"]
    long_run = _trigger(api, "long_job", 1)

    def long_job_busy():
        ti = _ti(home, "long_job", long_run, "long_job")
        assert ti is None or ti[0] not in ("failed", "success", "upstream_failed"), (ti, _task_logs(home, "long_job"), stack.log("run"))
        return ti and ti[0] == "running" and ti[1]

    task_pid = wait("long_job to run on the runtime's engine", long_job_busy, 300, stack)
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
    assert all(h["owned"] is False and h["pids"] == [] and h["extra"]["runtime"] == str(home / "runtime")
               for h in handles), handles
    # No run's teardown stopped the engine (every one of its processes still runs), and no run started its own.
    assert _alive(cluster) == cluster, f"a teardown stopped the runtime's engine: {cluster} -> {_alive(cluster)}"
    own = [p for p in processes_with_env(str(home)) if p not in processes_with_env(str(engine))]
    assert own == [], f"a run started an engine of its own: {own}"
    # The killed job was cancelled on the engine: nothing of it still holds a worker.
    from distributed import Client

    with Client(handles[0]["address"], timeout=30, set_as_default=False) as client:
        wait("the engine to be idle", lambda: not any(client.processing().values()), 60, stack)


def test_stopping_bin_run_stops_its_engine(deployment):
    home, stack, engine = deployment["home"], deployment["stack"], deployment["engine"]
    cluster = processes_with_env(str(engine))
    assert cluster, "the runtime's engine is not running"
    t0 = time.monotonic()
    stack.procs["run"].send_signal(signal.SIGTERM)  # as Ctrl-C
    stack.procs["run"].wait(60)
    elapsed = time.monotonic() - t0
    assert processes_with_env(str(home)) == [], "processes survived bin/run's shutdown"
    assert not (home / "runtime" / "dask.json").exists(), "the engine's handle file outlived its owner"
    assert "stopped dask" in stack.log("run", 20000), stack.log("run")
    print(f"bin/run stopped with its engine in {elapsed:.1f} s")


def test_a_one_off_dags_test_leaves_no_process(airflow_home, tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "small_jobs.py").symlink_to(FIXTURES / "small_jobs.py")
    t0 = time.monotonic()
    out = bin_airflow(airflow_home, "dags", "test", "small_jobs", "2024-07-05", "-c", '{"backend": "dask"}',
                      AIRFLOW__CORE__DAGS_FOLDER=str(dags), ETL_RUNTIME_DIR=str(tmp_path / "no-runtime"))
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    left = processes_with_env(str(airflow_home))
    assert left == [], f"`dags test` left cluster processes running: {left}"
    text = out.stdout + out.stderr
    assert "A one-off run" in text and "state=success" in text, text[-3000:]
    print(f"dags test: {time.monotonic() - t0:.1f} s, nothing left")


def test_an_owner_stopped_while_its_engine_starts_leaves_nothing(tmp_path):
    import subprocess
    import sys

    from tests.e2e.airflow_env import project_env

    env = project_env(tmp_path / "airflow", ETL_RUNTIME_DIR=str(tmp_path / "rt"))
    with open(tmp_path / "owner.log", "wb") as log:
        owner = subprocess.Popen([sys.executable, "-m", "include.etl.clusters.runtime", "spark"], env=env, cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait("the owner to be starting its engine",
             lambda: (tmp_path / "rt" / "spark.json").exists() and processes_with_env(str(tmp_path / "rt")), 120)
        assert json.loads((tmp_path / "rt" / "spark.json").read_text())["state"] == "starting"
        t0 = time.monotonic()
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(30) == 0, (tmp_path / "owner.log").read_text()[-3000:]
        elapsed = time.monotonic() - t0
    finally:
        if owner.poll() is None:
            owner.kill()
    assert wait("the engine's processes to end", lambda: not processes_with_env(str(tmp_path / "rt")), 15)
    assert not (tmp_path / "rt" / "spark.json").exists()
    assert "stopped while the spark engine was starting" in (tmp_path / "owner.log").read_text()
    print(f"owner stopped mid-start in {elapsed:.1f} s")
