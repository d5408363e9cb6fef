"""Spark jobs on the runtime's Spark engine (a runtime of the module's own), their driver in the task process.

The engine's owner (``python -m include.etl.clusters.runtime spark``, as ``make run`` starts it)
runs the server; ``SparkClusterHook.run_job`` runs the job's driver here, in the run's session:

* a real ingest (the Olympics regions, 230 rows) gives the right summary and lake partition;
* a data error (a missing input file) is raised in the task as ``InputFileError`` itself;
* ``on_kill`` (``hook.cancel()``: ``interruptTag``) interrupts a long job, and so does the server
  when a task process is SIGKILLed while its operation runs; the server then serves the next job;
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
from tests.e2e.clusters import kill_leftovers, runtime
from tests.e2e.stack import wait
from tests.lake import part, read_partition

pytestmark = pytest.mark.slow
DS = "2024-07-01"
LONG_JOB = "tests.fixtures.jobs:sleep_on_cluster"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("spark-runtime-jobs")
    yield path
    assert kill_leftovers(str(path)) == [], "a test left cluster processes running"


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
print("RESULT " + json.dumps({"summary": summary}))
"""


def _task(settings, handle, job: str, kwargs: dict) -> subprocess.Popen:
    """A process that runs a job as a task process would."""
    return subprocess.Popen([sys.executable, "-c", TASK, json.dumps(handle.to_dict()), job, json.dumps(kwargs)],
                            env=_task_env(settings), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_the_runs_attach_to_the_engine_in_a_session_of_their_own(spark, rt):
    _settings, handle = spark
    assert not handle.owned and handle.pids == [] and handle.extra["runtime"] == str(rt.root), handle
    assert handle.extra.get("session_id") and "jobs_url" not in handle.extra


def test_an_ingest_gives_the_summary_and_the_lake_partition(spark):
    settings, handle = spark
    source = str(DATA / "noc_regions.csv")
    t0 = time.monotonic()
    hook = _hook(settings)
    try:
        summary = hook.run_job(handle, "olympics.ingest", {"table": "regions", "source": source}, DS)
    finally:
        hook.close()
    print(f"ingest on the runtime's server: {time.monotonic() - t0:.2f} s")
    assert summary["rows_in"] == 230 and summary["rows_accepted"] == 230 and summary["rows_rejected"] == 0
    assert summary["path"] == f"{settings.lake_uri}/olympics/regions"  # the table's URI
    regions = read_partition(part(settings.lake_root, "olympics", "regions", DS))
    assert regions.num_rows == 230 and summary["version"] == Lake(settings.lake_root, "olympics").delta("regions").version()


def test_a_data_error_is_raised_as_its_own_class(spark, tmp_path):
    settings, handle = spark
    missing = tmp_path / "no_such_regions.csv"
    with pytest.raises(InputFileError, match=r"no_such_regions.csv: file does not exist") as info:
        _hook(settings).run_job(handle, "olympics.ingest", {"table": "regions", "source": str(missing)}, DS)
    assert type(info.value) is InputFileError


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
    t0 = time.monotonic()
    hook.cancel()  # on_kill: interruptTag of this task's operations
    thread.join(30)
    assert not thread.is_alive(), "the job did not end after on_kill"
    print(f"on_kill -> job ended in {time.monotonic() - t0:.1f} s")
    assert "error" in outcome and "summary" not in outcome, outcome
    wait("the Spark job to stop", lambda: not _spark_busy(handle), 30, interval=0.2)
    assert _hook(settings).run_job(handle, "noop", {}, DS) == {"job": "noop"}


def test_a_sigkilled_task_process_has_its_operation_interrupted_by_the_server(spark):
    """No on_kill: the server sees the client's stream go and interrupts the operation
    (``spark.connect.execute.manager.detachedTimeout``, 5 s, instead of Spark's 5 minutes)."""
    settings, handle = spark
    proc = _task(settings, handle, LONG_JOB, {})
    try:
        wait("the long job's Spark job to run", lambda: _spark_busy(handle), 120, interval=0.2)
    finally:
        proc.kill()  # SIGKILL: no on_kill, only the closed stream tells
        proc.communicate(timeout=30)
    t0 = time.monotonic()
    wait("the Spark job to stop", lambda: not _spark_busy(handle), 60, interval=0.2)
    print(f"SIGKILL -> Spark job ended in {time.monotonic() - t0:.1f} s")
    assert _hook(settings).run_job(handle, "noop", {}, DS) == {"job": "noop"}


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
    # Not a hang (not a timing target either: 70 s was seen under a load of 14).
    assert time.monotonic() - t0 < 240
    # The owner starts a new server; a retry of the task follows it (resolve), in a session of its own run.
    new = rt.wait_ready("spark", other_than=handle.address)
    resolved = hook.resolve(handle)
    assert resolved.address == new.address != handle.address and resolved.extra["session_id"] != handle.extra["session_id"]
    assert _hook(settings).run_job(resolved, "noop", {}, DS) == {"job": "noop"}
    assert "died" in rt.log("spark", 10**6) and "starting a new one" in rt.log("spark", 10**6)
