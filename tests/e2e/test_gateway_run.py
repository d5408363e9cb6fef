"""A run whose Dask cluster comes from dask-gateway, through the real embedded runtime (``bin/run``).

The fixture DAG ``gateway_jobs`` (start_cluster -> noop + a tiny ingest -> stop_cluster as teardown)
runs under the scheduler and LocalExecutor, every task in its own process, with the connection
``dask_gateway_default`` naming a real dask-gateway server (``tests/gateway.py``). The run must
succeed with its table written, its cluster must have come from the gateway (not a local one),
and after the run the gateway must have no cluster left and no scheduler or worker process may
run; the connection's password must appear in no log.
"""

from __future__ import annotations

import signal
import time
from urllib.parse import quote

import pytest

from include.etl.lake import Lake
from tests.conftest import ROOT
from tests.e2e.airflow_env import project_env
from tests.e2e.stack import Api, Stack, free_port, wait
from tests.gateway import dask_gateway  # noqa: F401 - the gateway server fixture
from tests.lake import part, read_partition
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow

DAG_ID = "gateway_jobs"


def test_a_run_gets_its_cluster_from_the_gateway_and_gives_it_back(dask_gateway, airflow_home, tmp_path):  # noqa: F811
    gw, home = dask_gateway, airflow_home
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").symlink_to(ROOT / "tests" / "fixtures" / "dags" / f"{DAG_ID}.py")
    port = free_port()
    env = project_env(home, AIRFLOW__API__PORT=str(port), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
                      AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False", AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
                      AIRFLOW_CONN_DASK_GATEWAY_DEFAULT=gw.connection(workers=1),
                      ETL_RUNTIME_ENGINES="")  # no local engine: the run's cluster can only come from the gateway
    stack = Stack(tmp_path)
    stack.start("run", [str(ROOT / "bin" / "run")], env)
    api = Api(port, home)
    t0 = time.monotonic()
    try:
        wait("bin/run and the fixture DAG", lambda: api("GET", f"dags/{DAG_ID}")["dag_id"], 240, stack, interval=2)
        t1 = time.monotonic()
        api("PATCH", f"dags/{DAG_ID}", {"is_paused": False})
        run = api("POST", f"dags/{DAG_ID}/dagRuns", {"logical_date": "2024-07-09T00:00:00Z"})["dag_run_id"]
        run_path = f"dags/{DAG_ID}/dagRuns/{quote(run, safe='')}"
        state = wait("the run to end", lambda: (s := api("GET", run_path)["state"]) in ("success", "failed") and s,
                     240, stack)
        print(f"bin/run up with the DAG after {t1 - t0:.1f} s; the run took {time.monotonic() - t1:.1f} s")
        states = {ti["task_id"]: ti["state"] for ti in api("GET", f"{run_path}/taskInstances")["task_instances"]}
        assert state == "success" and set(states.values()) == {"success"}, (states, stack.log("run"))
        handle = api("GET", f"{run_path}/taskInstances/start_cluster/xcomEntries/return_value")["value"]
        name = handle["extra"]["gateway_cluster"]
        assert handle["owned"] and handle["extra"] == {"gateway_cluster": name, "manager": "dask-gateway"}
        assert handle["address"] == f"gateway://127.0.0.1:{gw.tcp_port}/{name}"
        assert gw.status(name) == "STOPPED", "the run's cluster was not the gateway's, or it was not stopped"
        ingest = api("GET", f"{run_path}/taskInstances/ingest_regions/xcomEntries/return_value")["value"]
        assert ingest["rows_accepted"] == 230, ingest
        # the gateway's worker committed the partition to the run's lake, recording who wrote it
        lake = Lake(home / "lake", "olympics")
        assert ingest["path"] == lake.table_uri("regions") and lake.row_count("regions", "2024-07-09") == 230, ingest
        assert read_partition(part(home / "lake", "olympics", "regions", "2024-07-09")).num_rows == 230
        commit = lake.history("regions")[0]
        assert (commit["version"], commit["dag_id"], commit["run_id"], commit["task_id"]) == (
            ingest["version"], DAG_ID, run, "ingest_regions"), commit

        assert gw.clusters() == [], "the teardown left the run's cluster running on the gateway"
        assert gw.wait_no_cluster_processes(30) == [], "a scheduler or worker of the run's cluster still runs"
        assert processes_with_env(str(home / "logs" / "clusters")) == [], "a local cluster was started"
        logs = [p for p in (home / "logs").rglob("*") if p.is_file()]
        assert logs and not [p for p in logs if gw.password in p.read_text(errors="replace")], "password logged"
    finally:
        stack.procs["run"].send_signal(signal.SIGTERM)  # bin/run stops its components and their tasks
        try:
            stack.procs["run"].wait(60)
        finally:
            stack.stop_all()
