"""The docker-compose topology, run natively: every component its own process.

Airflow api-server, scheduler, dag-processor, triggerer and a Celery worker on PostgreSQL
(a fresh database) and Redis (a database number of its own); an external Dask scheduler with
two workers; an external Spark standalone master and worker with a Spark Connect server on it.
Configured with the same variables as docker-compose.yaml, driven only through the REST API.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from include.etl.lake import Lake
from tests.conftest import DATA, ROOT
from tests.e2e.airflow_env import project_env
from tests.e2e.expected import assert_marts_match
from tests.e2e.stack import Api, Stack, free_port, spark_java_options, spark_master_ports, wait
from tests.procs import processes_with_env
from tests.s3 import start_seaweedfs

pytestmark = pytest.mark.slow
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
TABLES = ("athletes", "regions", "venues", "enriched", "avg_age_by_year", "medals_by_region")


@pytest.fixture
def postgres_db():
    import psycopg2

    name = f"etl_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"create database {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        admin.cursor().execute(f"drop database if exists {name} with (force)")
        admin.close()


def test_compose_topology_natively(tmp_path, postgres_db):
    import contextlib

    import pyspark

    stack_s3 = contextlib.ExitStack()
    stack = Stack(tmp_path)
    home = tmp_path / "airflow"
    # The lake as compose has it: an S3 service (SeaweedFS), named by ETL_LAKE_URI and the lake_default
    # connection in the environment of every Airflow component and every cluster process.
    s3 = stack_s3.enter_context(start_seaweedfs(tmp_path / "s3"))
    lake_env = s3.env(prefix="prod")
    ext = str(tmp_path / "external")  # marker inherited by every external cluster process
    py = str(ROOT / ".venv" / "bin" / "python")
    api_port, redis_db = free_port(), 5 + (os.getpid() % 10)
    dask_port, master_port, master_ui, connect_port = free_port(), free_port(), free_port(), free_port()
    jvm = spark_java_options()  # this install's class-data archive: the JVMs start in half the CPU
    cluster_env = dict(os.environ, PYTHONPATH=str(ROOT), ETL_CLUSTER_WORKDIR=ext, SPT_NOENV="1",
                       SPARK_HOME=os.path.dirname(pyspark.__file__), SPARK_LOCAL_IP="127.0.0.1",
                       SPARK_LOG_DIR=ext, SPARK_WORKER_DIR=ext + "/work", PYSPARK_PYTHON=py,
                       SPARK_DAEMON_JAVA_OPTS=jvm, **lake_env)
    airflow = {
        # the docker-compose.yaml variables, with hosts of this machine
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_db,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres_db.replace("+psycopg2", ""),
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW_CONN_DASK_DEFAULT": f"tcp://127.0.0.1:{dask_port}",
        "AIRFLOW_CONN_SPARK_CONNECT_DEFAULT": f"sc://127.0.0.1:{connect_port}",
        "ETL_DEFAULT_BACKEND": "dask",
        **lake_env,
    }
    env = project_env(home, **airflow)
    lake_location = s3.location(prefix="prod")
    bin_airflow = str(ROOT / "bin" / "airflow")
    t0 = time.monotonic()
    try:
        # External clusters, as the compose services run them.
        stack.start("dask-scheduler", [py, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                       "--port", str(dask_port), "--dashboard-address", "127.0.0.1:0",
                                       "--preload", "include.etl.clusters.dask_local"], cluster_env)
        for i in range(2):
            stack.start(f"dask-worker-{i}", [py, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{dask_port}",
                                             "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                                             "--dashboard-address", "127.0.0.1:0",
                                             "--preload", "include.etl.clusters.dask_local"], cluster_env)
        spark_bin = Path(cluster_env["SPARK_HOME"]) / "bin"
        master_proc = stack.start("spark-master", [str(spark_bin / "spark-class"), "org.apache.spark.deploy.master.Master",
                                                   "--host", "127.0.0.1", "--port", str(master_port),
                                                   "--webui-port", str(master_ui)], cluster_env)
        master, _ = spark_master_ports(tmp_path / "spark-master.log", master_proc)
        stack.start("spark-worker", [str(spark_bin / "spark-class"), "org.apache.spark.deploy.worker.Worker",
                                     "--host", "127.0.0.1", "--cores", "2", "--memory", "2g", "--webui-port", str(free_port()),
                                     master], cluster_env)
        stack.start("spark-connect", [str(spark_bin / "spark-submit"), "--class",
                                      "org.apache.spark.sql.connect.service.SparkConnectServer",
                                      "--master", master,
                                      "--conf", f"spark.connect.grpc.binding.port={connect_port}",
                                      "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
                                      "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
                                      "--conf", "spark.sql.shuffle.partitions=4", "--conf", "spark.executor.memory=1g",
                                      "--conf", f"spark.executorEnv.PYTHONPATH={ROOT}", "--conf", f"spark.pyspark.python={py}",
                                      "--conf", "spark.ui.enabled=false", "--name", "spark-connect",
                                      "--driver-java-options", jvm, "--conf", f"spark.executor.extraJavaOptions={jvm}",
                                      "spark-internal"], cluster_env)

        # Airflow: init (migrate on PostgreSQL), then one process per component.
        out = subprocess.run([bin_airflow, "version"], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        for component in (["api-server"], ["scheduler"], ["dag-processor"], ["triggerer"], ["celery", "worker"]):
            stack.start("-".join(component), [bin_airflow, *component], env)

        api = Api(api_port, home)

        wait("the DAG to be parsed", lambda: api("GET", "dags/olympics_etl")["dag_id"], 300, stack)
        assert api("PATCH", "dags/olympics_etl", {"is_paused": False})["is_paused"] is False
        runs = {}
        for backend, day in (("dask", "2024-07-10"), ("spark", "2024-07-11")):
            run = api("POST", "dags/olympics_etl/dagRuns", {"logical_date": f"{day}T00:00:00Z", "conf": {"backend": backend}})
            runs[backend] = (run["dag_run_id"], day)

        def done():
            states = {b: api("GET", f"dags/olympics_etl/dagRuns/{quote(rid, safe='')}")["state"] for b, (rid, _) in runs.items()}
            failed = [b for b, s in states.items() if s == "failed"]
            if failed:
                tis = {b: [(t["task_id"], t["state"]) for t in api("GET", f"dags/olympics_etl/dagRuns/{quote(runs[b][0], safe='')}/taskInstances")["task_instances"]] for b in failed}
                pytest.fail(f"runs failed: {tis}\n" + stack.log("celery-worker"))
            return all(s == "success" for s in states.values())

        wait("both runs to succeed", done, 900, stack)
        for _, day in runs.values():
            assert_marts_match(lake_location, day, DATA)
        # The clusters were attached, not owned: still up, and nothing was started locally.
        for name in ("dask-scheduler", "dask-worker-0", "dask-worker-1", "spark-master", "spark-worker", "spark-connect"):
            assert stack.alive(name), f"{name} was stopped by the run"
        assert processes_with_env(str(home)) == []
        print(f"production stack: both runs succeeded after {time.monotonic() - t0:.0f} s")

        # Scheduled runs: a backfill over two days, each its own ds partition, both at once:
        # runs of different ds in parallel must not interfere.
        out = subprocess.run([bin_airflow, "backfill", "create", "--dag-id", "olympics_etl", "--from-date", "2024-07-01",
                              "--to-date", "2024-07-02", "--max-active-runs", "2"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

        def backfilled():
            got = api("GET", "dags/olympics_etl/dagRuns?run_type=backfill&limit=50")["dag_runs"]
            assert not [r for r in got if r["state"] == "failed"], got
            return len(got) == 2 and all(r["state"] == "success" for r in got) and got

        got = wait("two backfill runs to succeed", backfilled, 900, stack)
        days = sorted(r["logical_date"][:10] for r in got)
        assert days == ["2024-07-01", "2024-07-02"]
        for day in days:
            assert_marts_match(lake_location, day, DATA)
        # They really ran side by side (each its own ingest, enrich and aggregate on the shared cluster).
        spans = sorted((r["start_date"], r["end_date"]) for r in got)
        assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)), f"no two runs overlapped: {spans}"
        # Every run published each table once, in one commit per table and day (none lost to a concurrent
        # run's commit, none repeated), and left no staged entry behind. (The scheduler may also have made
        # today's scheduled run once the DAG was unpaused: its day is not one of these.)
        lake = Lake(lake_location, "olympics")
        finished = {rid: day for rid, day in runs.values()} | {r["dag_run_id"]: r["logical_date"][:10] for r in got}
        assert len(set(finished.values())) == 4, finished
        for table in (*TABLES, *(lake.rejects(t) for t in ("athletes", "regions", "venues"))):
            commits = [h["ds"] for h in lake.history(table) if h.get("ds") in finished.values()]
            assert sorted(commits) == sorted(finished.values()), (table, lake.history(table))
            assert set(finished.values()) <= lake.published_days(table), table
        for rid in finished:
            run_lake = Lake(lake_location, "olympics", run={"dag_id": "olympics_etl", "run_id": rid})
            assert run_lake.staged_entries() == [], f"the run {rid} left staged entries behind"
        assert not (home / "lake").exists(), "a run wrote to a local lake"
        print(f"production stack: backfill done after {time.monotonic() - t0:.0f} s")
    finally:
        stack.stop_all()
        stack_s3.close()
    assert processes_with_env(ext) == [], "an external cluster process survived the test"
