"""olympics_etl through a real scheduler and LocalExecutor: every task in its own process.

`bin/run`, the entry point of `make run`, runs the api-server (Execution API), scheduler,
dag-processor and triggerer as separate processes. Its runs attach to the runtime's engines: here
the test process's shared ``engine_runtime`` (``ETL_RUNTIME_DIR``; ``ETL_RUNTIME_ENGINES`` empty,
so ``bin/run`` starts no engine owner of its own; ``test_runtime_engines.py`` covers those). Each
run's `start_cluster` hands out the runtime's engine, which serves the run's later tasks (other
processes); no run starts an engine, and no teardown stops the runtime's.

Its DAG folder holds olympics_etl only. With the project's whole folder, ``lake_maintenance``'s
scheduled task started with the platform, and the test's first REST writes (unpause, trigger)
met that task's execution-API writes: on SQLite Airflow's api-server then deadlocks for the 60 s
lock wait (its audit-log insert blocks the event loop while a task's open transaction waits for
that loop to close it; docs/runtime.md, "Start"). That failed 3 of 4 clean-clone runs on one host.
"""

from __future__ import annotations

import sqlite3
from urllib.parse import quote

import pytest

from tests.conftest import DATA, ROOT
from tests.e2e.airflow_env import project_env
from tests.e2e.expected import assert_marts_match
from tests.e2e.stack import Api, Stack, free_port, stop_group, wait
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow


def _query(home, sql, *args):
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        return db.execute(sql, args).fetchall()


def test_scheduled_and_triggered_runs_through_the_scheduler(airflow_home, engine_runtime):
    home = airflow_home
    port = free_port()
    engine = engine_runtime.handle("dask")
    dags = home.parent / "dags"
    dags.mkdir()
    (dags / "olympics_etl.py").symlink_to(ROOT / "dags" / "olympics_etl.py")
    extra = {"AIRFLOW__API__PORT": str(port), **engine_runtime.env, "ETL_RUNTIME_ENGINES": "",
             "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    stack = Stack(home)
    stack.start("run", [str(ROOT / "bin" / "run")], project_env(home, **extra))
    try:
        api = Api(port, home)
        wait("the DAG to be parsed", lambda: api("GET", "dags/olympics_etl")["dag_id"], 240, stack)
        assert api("PATCH", "dags/olympics_etl", {"is_paused": False})["is_paused"] is False
        run = api("POST", "dags/olympics_etl/dagRuns", {"logical_date": "2024-07-08T00:00:00Z", "conf": {"backend": "dask"}})
        assert run["run_type"] == "manual", run

        def finished():
            runs = _query(home, "select run_type, state, logical_date from dag_run where dag_id='olympics_etl'")
            assert not [r for r in runs if r[1] == "failed"], (runs, stack.log("run", 4000))
            types = {r[0] for r in runs if r[1] == "success"}
            return runs if {"manual", "scheduled"} <= types else None

        runs = wait("a scheduled and a triggered run to succeed", finished, 420, stack)
        # each task ran in its own process: distinct pids recorded per task instance
        pids = _query(home, "select task_id, pid from task_instance where dag_id='olympics_etl' and state='success'")
        assert len({pid for _, pid in pids}) == len(pids) >= 14, pids
        assert_marts_match(home / "lake", "2024-07-08", DATA)
        scheduled_ds = [r[2][:10] for r in runs if r[0] == "scheduled"][0]
        assert_marts_match(home / "lake", scheduled_ds, DATA)
        assert processes_with_env(str(home)) == [], "a run started an engine of its own"
        # Both runs ran on the runtime's engine, which is still the same one and still runs.
        for run_id, in _query(home, "select run_id from dag_run where dag_id='olympics_etl'"):
            handle = api("GET", f"dags/olympics_etl/dagRuns/{quote(run_id, safe='')}/taskInstances/start_cluster/"
                                "xcomEntries/return_value")["value"]
            assert (handle["address"], handle["owned"], handle["extra"]["runtime"]) == (
                engine.address, False, str(engine_runtime.root)), handle
        assert engine_runtime.handle("dask").address == engine.address, "a teardown stopped the runtime's engine"
        # The UI's extra link of a cluster task, through the REST API the UI uses.
        manual = _query(home, "select run_id from dag_run where dag_id='olympics_etl' and run_type='manual'")[0][0]
        links = api("GET", f"dags/olympics_etl/dagRuns/{quote(manual, safe='')}/taskInstances/ingest_athletes/links")
        assert links["extra_links"]["Cluster dashboard"] == engine.dashboard_url, links
    finally:
        stop_group(stack.procs["run"], 60)  # SIGTERM: bin/run stops its components; then whatever is left of the group
