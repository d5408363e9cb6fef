"""olympics_etl on an existing Spark standalone cluster (master + worker started by the test,
like compose services), jobs submitted through the provider's SparkSubmitHook."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import DATA, ROOT
from tests.e2e.airflow_env import bin_airflow
from tests.e2e.expected import assert_marts_match
from tests.e2e.stack import free_port, spark_java_options, spark_master_ports
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow
DS = "2024-07-07"
SPARK_CLASS = str(ROOT / ".venv" / "bin" / "spark-class")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A Spark standalone master and one worker on loopback, shared by the module; killed at the end."""
    import pyspark

    tmp_path = tmp_path_factory.mktemp("standalone")

    marker = str(tmp_path / "standalone")
    env = dict(os.environ, SPARK_HOME=os.path.dirname(pyspark.__file__), SPARK_LOCAL_IP="127.0.0.1", PYTHONPATH=str(ROOT), ETL_CLUSTER_WORKDIR=marker,
               SPARK_LOG_DIR=marker, SPARK_WORKER_DIR=marker + "/work", SPARK_DAEMON_JAVA_OPTS=spark_java_options())
    procs = []
    master_log, log = tmp_path / "master.log", open(tmp_path / "standalone.log", "wb")
    try:
        # The UI port asked for is held by another server, as happened in a whole run: the master moves
        # to the next port and the fixture must follow it (spark_master_ports), not read the intruder.
        with open(master_log, "wb") as out, socket.create_server(("127.0.0.1", free_port())) as intruder:
            taken = intruder.getsockname()[1]
            procs.append(subprocess.Popen(
                [SPARK_CLASS, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(free_port()),
                 "--webui-port", str(taken)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            master, ui = spark_master_ports(master_log, procs[0])
        assert ui != taken

        def start_worker() -> float:
            procs.append(subprocess.Popen(
                [SPARK_CLASS, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
                 "--memory", "2g", "--webui-port", str(free_port()), master],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            return time.monotonic() + 90

        # Under load a worker has been seen to connect and never register (no retry logged):
        # after 90 s it is replaced once; 180 s in all.
        restart_at, deadline = start_worker(), time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as resp:
                    if json.load(resp).get("aliveworkers", 0) >= 1:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, master_log.read_text()[-3000:] + (tmp_path / "standalone.log").read_text()[-3000:]
            if restart_at and time.monotonic() > restart_at:
                stuck = procs.pop()
                os.killpg(stuck.pid, signal.SIGKILL)
                stuck.wait(30)
                start_worker()
                restart_at = 0.0  # once
            time.sleep(1)
        yield {"master": master, "ui": ui, "marker": marker}
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(30)
        log.close()


def test_olympics_on_attached_standalone_cluster(standalone, airflow_home):
    out = bin_airflow(
        airflow_home, "dags", "test", "olympics_etl", DS, "-c", json.dumps({"backend": "spark"}),
        AIRFLOW_CONN_SPARK_DEFAULT=standalone["master"],
    )
    logs = out.stdout + out.stderr
    assert out.returncode == 0 and "state=success" in logs, logs[-5000:]
    assert "Attaching to the Spark standalone master" in logs
    assert_marts_match(airflow_home / "lake", DS, DATA)
    # attached, not owned: the master and worker are still up after the teardown
    assert len(processes_with_env(standalone["marker"])) >= 2
    with urllib.request.urlopen(f"http://127.0.0.1:{standalone['ui']}/json/", timeout=5) as resp:
        info = json.load(resp)
    assert info["aliveworkers"] == 1 and len(info["completedapps"]) >= 5  # one application per job


def _apps(ui: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as resp:
        info = json.load(resp)
    return info["completedapps"] + info["activeapps"]


def test_a_data_error_in_a_submitted_job_is_raised_as_itself(standalone, tmp_path, monkeypatch):
    """spark_submit_app exits 1 and the provider's hook raises AirflowException, which alone would be
    retried: the hook raises the job's data error itself (``InputFileError``, chained to the submit
    failure), which the job operator fails without retries (tests/plugins/test_job_operators.py).
    One application: the job is not re-submitted."""
    from airflow.sdk.exceptions import AirflowException

    from etl_platform.hooks.spark_submit import SparkSubmitClusterHook
    from include.etl.errors import InputFileError
    from include.etl.settings import Settings

    bad = tmp_path / "athletes.csv"
    bad.write_text("ID;Name;Sex\n1;A;M\n")  # wrong delimiter
    for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):  # this process's Spark Connect sessions
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", standalone["master"])
    monkeypatch.setenv("PATH", f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")  # spark-submit, as bin/env.sh
    hook = SparkSubmitClusterHook(settings=Settings.from_env({
        "ETL_LAKE_ROOT": str(tmp_path / "lake"), "ETL_SPARK_JAVA_OPTIONS": os.environ["ETL_SPARK_JAVA_OPTIONS"]}))
    handle = hook.attach()
    before = len(_apps(standalone["ui"]))
    with pytest.raises(InputFileError, match=f"athletes input {bad}: header is missing required columns") as err:
        hook.run_job(handle, "olympics.ingest", {"table": "athletes", "source": str(bad)}, DS)
    assert isinstance(err.value.__cause__, AirflowException)  # the provider's submit failure
    apps = _apps(standalone["ui"])
    assert len(apps) - before == 1, [a.get("name") for a in apps]


def test_unreachable_master_fails_the_start_with_its_address(tmp_path, monkeypatch):
    from etl_platform.hooks import get_cluster_hook
    from etl_platform.hooks.spark_submit import SparkSubmitClusterHook
    from include.etl.clusters import ClusterStartError
    from include.etl.settings import Settings

    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", f"spark://127.0.0.1:{port}")
    hook = get_cluster_hook("spark", settings=Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path)}))
    assert isinstance(hook, SparkSubmitClusterHook)  # no Spark Connect server is configured, a master is
    with pytest.raises(ClusterStartError) as err:
        hook.start_or_attach(tmp_path / "w")
    assert f"cannot reach the Spark master at spark://127.0.0.1:{port} (from Airflow connection 'spark_default')" in str(err.value)
    assert not (tmp_path / "w").exists()  # nothing was started
