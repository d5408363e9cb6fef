"""Thin Spark job tasks on the runtime's Spark engine (a runtime of the module's own).

The engine's owner (``python -m include.etl.clusters.runtime spark``, as ``make run`` starts it)
serves the job endpoint (``include/etl/clusters/job_server.py`` with the Spark runner of
``spark_jobs.py``), and ``SparkClusterHook.run_job`` hands jobs to it (``ETL_SPARK_THIN_TASKS``,
default on):

* a real ingest (the Olympics regions, 230 rows) gives the right summary and lake partition,
  and the job's log records come back to the task's log;
* a data error (a missing input file) is raised in the task as ``InputFileError`` itself;
* a task process running the thin path never imports pyspark (nor pandas, pyarrow, grpc);
* ``on_kill`` (``hook.cancel()``: DELETE) interrupts a long job, and so does a task process
  that is SIGKILLed while it waits; the server then serves the next job at once;
* once the server died, a job fails with the retryable ``ClusterStartError`` naming its address,
  and the owner's new server serves the next try (``resolve``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import psutil
import pytest

from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.errors import InputFileError
from include.etl.lake import Lake
from include.etl.settings import Settings
from tests.conftest import DATA, ROOT
from tests.e2e.clusters import runtime
from tests.e2e.stack import wait
from tests.lake import part, read_partition
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow
DS = "2024-07-01"
LONG_JOB = "tests.fixtures.jobs:sleep_on_cluster"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("spark-thin")
    yield path
    left = processes_with_env(str(path))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "a test left cluster processes running"


@pytest.fixture(scope="module")
def rt(base):
    with runtime(base / "runtime", ("spark",)) as engines:  # its server gets killed: not the shared one
        yield engines


@pytest.fixture(scope="module")
def spark(rt, base):
    from etl_platform.hooks.spark import SparkClusterHook

    settings = Settings.from_env({"ETL_LAKE_ROOT": str(base / "lake"), **rt.env})
    starter = SparkClusterHook(settings=settings)
    handle = starter.start_or_attach(base / "unused")  # as start_cluster does: the runtime's engine, the run's session
    try:
        yield settings, ClusterHandle.from_dict(handle.to_dict())  # as a job task gets it (XCom)
    finally:
        starter.stop(handle)


def _hook(settings):
    from etl_platform.hooks.spark import SparkClusterHook

    return SparkClusterHook(settings=settings)


def _health(handle) -> dict:
    url = handle.extra["jobs_url"].rsplit("/etl/jobs", 1)[0] + "/health"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def _spark_busy(handle) -> bool:
    """Does the server run a Spark job (its monitoring REST API)?"""
    def get(path):
        with urllib.request.urlopen(f"{handle.dashboard_url}/api/v1/{path}", timeout=5) as resp:
            return json.load(resp)

    return any(get(f"applications/{app['id']}/jobs?status=running") for app in get("applications"))


def _task_env(settings) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "ETL_LAKE_ROOT": str(settings.lake_root)}


TASK = """
import json, sys
from etl_platform.hooks.spark import SparkClusterHook
from include.etl.clusters import ClusterHandle
handle = ClusterHandle.from_dict(json.loads(sys.argv[1]))
hook = SparkClusterHook()
print("RUNNING", flush=True)
summary = hook.run_job(handle, sys.argv[2], json.loads(sys.argv[3]), "2024-07-01")
heavy = [m for m in ("pyspark", "pandas", "pyarrow", "grpc", "numpy") if m in sys.modules]
print("RESULT " + json.dumps({"summary": summary, "heavy": heavy}))
"""


def _task(settings, handle, job: str, kwargs: dict) -> subprocess.Popen:
    """A process that runs a job as a task process would (the hook's thin path)."""
    return subprocess.Popen([sys.executable, "-c", TASK, json.dumps(handle.to_dict()), job, json.dumps(kwargs)],
                            env=_task_env(settings), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_the_runs_attach_to_the_engine_and_its_owner_serves_the_job_endpoint(spark, rt):
    _settings, handle = spark
    assert not handle.owned and handle.pids == [] and handle.extra["runtime"] == str(rt.root), handle
    assert handle.extra["jobs_url"].startswith("http://127.0.0.1:") and handle.extra.get("session_id")
    health = _health(handle)
    assert health["ok"] is True and health["pid"] == rt.owners["spark"].pid and health["address"] == handle.address


def test_ingest_through_the_endpoint_gives_the_summary_and_the_job_logs(spark, caplog):
    settings, handle = spark
    source = str(DATA / "noc_regions.csv")
    t0 = time.monotonic()
    with caplog.at_level("INFO", logger="etl_platform.hooks.spark"):
        summary = _hook(settings).run_job(handle, "olympics.ingest", {"table": "regions", "source": source}, DS)
    print(f"ingest through the endpoint: {time.monotonic() - t0:.2f} s")
    assert summary["rows_in"] == 230 and summary["rows_accepted"] == 230 and summary["rows_rejected"] == 0
    assert summary["path"] == f"{settings.lake_uri}/olympics/regions"  # the table's URI
    regions = read_partition(part(settings.lake_root, "olympics", "regions", DS))
    assert regions.num_rows == 230 and summary["version"] == Lake(settings.lake_root, "olympics").delta("regions").version()
    relayed = [r.getMessage() for r in caplog.records if r.name == "etl_platform.hooks.spark"]
    assert any(m.startswith("[include.etl.jobs.steps] ingest regions: 230 rows read") for m in relayed), relayed
    assert any("in the job endpoint of" in m for m in relayed), relayed


def test_a_data_error_is_raised_as_its_own_class(spark, tmp_path):
    settings, handle = spark
    missing = tmp_path / "no_such_regions.csv"
    with pytest.raises(InputFileError, match=r"no_such_regions.csv: file does not exist") as info:
        _hook(settings).run_job(handle, "olympics.ingest", {"table": "regions", "source": str(missing)}, DS)
    assert type(info.value) is InputFileError


def test_a_thin_task_process_imports_no_pyspark(spark):
    settings, handle = spark
    proc = _task(settings, handle, "noop", {})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.split("RESULT ", 1)[1])
    assert result["summary"] == {"job": "noop"}
    assert result["heavy"] == [], f"the task process imported {result['heavy']}"


def test_on_kill_interrupts_a_long_job_and_the_server_serves_the_next_one(spark):
    settings, handle = spark
    hook = _hook(settings)
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = hook.run_job(handle, LONG_JOB, {}, DS)
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait("the long job's Spark job to run", lambda: _spark_busy(handle), 60, interval=0.2)
    assert _health(handle)["jobs"] == 1
    t0 = time.monotonic()
    hook.cancel()  # on_kill: DELETE {jobs_url}/<key>
    thread.join(30)
    assert not thread.is_alive(), "the job did not end after DELETE"
    print(f"DELETE -> job ended in {time.monotonic() - t0:.1f} s")
    assert isinstance(outcome.get("error"), RuntimeError) and "JobCancelled" in str(outcome["error"]), outcome
    wait("the Spark job to stop", lambda: not _spark_busy(handle), 30, interval=0.2)
    assert _hook(settings).run_job(handle, "noop", {}, DS) == {"job": "noop"}


def test_a_sigkilled_task_process_cancels_its_job(spark, rt):
    settings, handle = spark
    proc = _task(settings, handle, LONG_JOB, {})
    try:
        wait("the long job's Spark job to run", lambda: _spark_busy(handle), 120, interval=0.2)
        assert _health(handle)["jobs"] == 1
    finally:
        proc.kill()  # SIGKILL: no on_kill, only the closed socket tells
        proc.communicate(timeout=30)
    t0 = time.monotonic()
    wait("the endpoint to drop the job", lambda: _health(handle)["jobs"] == 0, 30, interval=0.2)
    wait("the Spark job to stop", lambda: not _spark_busy(handle), 30, interval=0.2)
    print(f"SIGKILL -> job ended in {time.monotonic() - t0:.1f} s")
    assert "its client disconnected" in rt.log("spark", 10**6), rt.log("spark")


def test_an_endpoint_gone_while_the_server_runs_falls_back_to_a_driver_here(spark, caplog):
    import socket

    settings, handle = spark
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    broken = ClusterHandle.from_dict({**handle.to_dict(), "extra": {**handle.extra,
                                                                    "jobs_url": f"http://127.0.0.1:{dead}/etl/jobs"}})
    hook = _hook(settings)
    try:
        with caplog.at_level("WARNING", logger="etl_platform.hooks.spark"):
            assert hook.run_job(broken, "noop", {}, DS) == {"job": "noop"}
    finally:
        hook.close()
    assert any("running the job's driver in this task process instead" in r.getMessage() for r in caplog.records)


def test_once_the_server_died_jobs_fail_retryably_naming_it_and_the_next_try_gets_a_new_one(spark, rt):
    """Last: kills the module's server."""
    from include.etl.clusters.spark_local import port_open, split_address

    settings, handle = spark
    server = [p for p in rt.engine_pids("spark") if "SparkConnectServer" in " ".join(psutil.Process(p).cmdline())]
    assert len(server) == 1, rt.engine_pids("spark")
    os.kill(server[0], signal.SIGKILL)
    wait("the server's port to close", lambda: not port_open(*split_address(handle.address), 1.0), 30, interval=0.2)
    hook = _hook(settings)
    t0 = time.monotonic()
    with pytest.raises(ClusterStartError, match=f"cannot reach the Spark Connect server at {handle.address}"):
        hook.run_job(handle, "noop", {}, DS)
    # Not a hang: a job endpoint that waited for the dead server would never answer. (Not a timing
    # target either: 70 s was seen under a load of 14.)
    assert time.monotonic() - t0 < 240
    # The owner starts a new server; a retry of the task follows it (resolve), in a session of its own run.
    new = rt.wait_ready("spark", other_than=handle.address)
    resolved = hook.resolve(handle)
    assert resolved.address == new.address != handle.address and resolved.extra["session_id"] != handle.extra["session_id"]
    assert _hook(settings).run_job(resolved, "noop", {}, DS) == {"job": "noop"}
    assert "died" in rt.log("spark", 10**6) and "starting a new one" in rt.log("spark", 10**6)
