"""Lost engines and stale handles: a run never believes a dead engine, never retries blindly, never stops the runtime's.

* The runtime's handle file (``$ETL_RUNTIME_DIR/<backend>.json``) is believed only while the
  owner that wrote it runs: a file left by a killed owner (or naming a pid now reused by another
  process) is stale, and a run then fails with a clear error instead of attaching to nothing.
* A real owner SIGKILLed: its engine stops with it (no orphan keeps serving), and its file is stale.
* A run's teardown never stops the runtime's engine.
* A one-off run's own engine that died: its job task fails without retries and says how to recover.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from etl_platform.hooks import get_cluster_hook
from etl_platform.hooks.dask_cluster import DaskClusterHook
from etl_platform.operators import SparkJobOperator, StopClusterOperator
from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.clusters.runtime import current, engine_file
from include.etl.settings import Settings


class _TI:
    def __init__(self, task_id: str):
        self.dag_id, self.run_id, self.task_id, self.map_index = "dag", "manual__2024-07-07", task_id, -1
        self.try_number = 1
        self.xcom = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


def _context(task_id: str) -> dict:
    return {"ti": _TI(task_id), "ds": "2024-07-07"}


def _write(root, backend: str, pid: int, started: float, address: str = "tcp://127.0.0.1:1") -> None:
    handle = ClusterHandle(backend, address, owned=True, dashboard_url="http://127.0.0.1:2/status", pids=[pid],
                           workdir=str(root / backend), extra={"dashboard_port": 2})
    root.mkdir(parents=True, exist_ok=True)
    engine_file(root, backend).write_text(json.dumps({"state": "ready", "handle": handle.to_dict(),
                                                      "owner": {"pid": pid, "started": started}}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_handle_file_is_believed_only_while_its_owner_runs(tmp_path, monkeypatch):
    root = tmp_path / "runtime"
    me = psutil.Process()
    _write(root, "dask", me.pid, me.create_time())
    handle = current("dask", root)
    # A run's view: attached, with no process to stop, naming the runtime it came from.
    assert (handle.address, handle.owned, handle.pids, handle.workdir, handle.extra["runtime"]) == (
        "tcp://127.0.0.1:1", False, [], None, str(root))
    monkeypatch.setenv("ETL_RUNTIME_DIR", str(root))
    assert current("dask") == handle  # the runtime of the environment, as a task finds it
    assert current("spark", root) is None  # no file: no engine
    _write(root, "dask", _dead_pid(), me.create_time())
    assert current("dask", root) is None, "a file of an owner that is gone was believed"
    _write(root, "dask", me.pid, me.create_time() - 3600)
    assert current("dask", root) is None, "a file naming a reused pid (another start time) was believed"
    engine_file(root, "dask").write_text(json.dumps({"state": "starting", "owner": {"pid": me.pid,
                                                                                  "started": me.create_time()}}))
    assert current("dask", root) is None, "an engine still starting was handed out"
    engine_file(root, "dask").write_text('{"state": "ready", "handle": ')  # torn or garbage
    assert current("dask", root) is None
    monkeypatch.delenv("ETL_RUNTIME_DIR")
    assert current("dask") is None


def test_without_an_engine_to_attach_to_a_run_fails_with_a_clear_error(tmp_path):
    settings = Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path / "lake")})
    with pytest.raises(ClusterStartError, match=r"no runtime \(ETL_RUNTIME_DIR is not set: start the platform with "
                                                r"`make run`\)"):
        DaskClusterHook(settings=settings).start_or_attach(tmp_path / "work")
    settings = Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path / "lake"), "ETL_RUNTIME_DIR": str(tmp_path / "runtime")})
    _write(tmp_path / "runtime", "dask", _dead_pid(), time.time())  # a stale file: its owner was killed
    t0 = time.monotonic()
    with pytest.raises(ClusterStartError, match="the runtime runs no dask engine .*is `make run` up"):
        DaskClusterHook(settings=settings).start_or_attach(tmp_path / "work")
    assert time.monotonic() - t0 < 5, "a run waited for an engine whose owner is gone"


@pytest.mark.slow
def test_a_killed_owners_engine_stops_with_it_and_its_file_is_stale(tmp_path):
    from tests.e2e.clusters import runtime

    with runtime(tmp_path / "runtime", backends=("dask",)) as rt:
        engine = rt.engine_pids("dask")
        assert engine and rt.handle("dask") is not None
        rt.owners["dask"].kill()  # SIGKILL: the owner cannot stop its engine itself
        rt.owners["dask"].wait(10)
        assert engine_file(rt.root, "dask").exists()  # left behind...
        assert rt.handle("dask") is None  # ...and not believed
        deadline = time.monotonic() + 30
        while rt.engine_pids("dask") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rt.engine_pids("dask") == [], "the engine outlived its killed owner"
        settings = Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path / "lake"), **rt.env})
        with pytest.raises(ClusterStartError, match="the runtime runs no dask engine"):
            get_cluster_hook("dask", settings=settings).start_or_attach(tmp_path / "work")


def test_a_runs_teardown_never_stops_the_runtimes_engine(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands in for the engine
    try:
        root = tmp_path / "runtime"
        _write(root, "dask", child.pid, psutil.Process(child.pid).create_time())
        handle = current("dask", root)
        raw = json.loads(engine_file(root, "dask").read_text())["handle"]
        assert raw["pids"] == [child.pid] and handle.pids == [], "a run's view names the engine's processes"
        # even a handle that names the engine's processes is the runtime's, and left alone
        for cluster in (handle.to_dict(), {**handle.to_dict(), "pids": [child.pid]}):
            out = StopClusterOperator(task_id="stop_cluster", cluster=cluster).execute(_context("stop_cluster"))
            assert out == {"stopped": False, "address": "tcp://127.0.0.1:1", "killed": []}, out
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_job_on_a_lost_one_off_engine_fails_without_retries_and_says_how_to_recover(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    workdir = tmp_path / "engine"
    workdir.mkdir()
    (workdir / "server.log").write_text("started\nOutOfMemoryError: Java heap space\n")
    # A one-off run's own engine (started in its process, owned by it) whose server process died.
    handle = ClusterHandle("spark", "sc://127.0.0.1:1", owned=True, pids=[_dead_pid()], workdir=str(workdir))
    op = SparkJobOperator(task_id="ingest", job="noop", cluster=handle.to_dict())
    with pytest.raises(AirflowFailException) as err:
        op.execute(_context("ingest"))
    message = str(err.value)
    assert "spark cluster started by this run at sc://127.0.0.1:1 is gone" in message
    assert "clear this task" in message and "start_cluster" in message
    assert "OutOfMemoryError: Java heap space" in message  # the end of the engine's log says why
    # An attached or the runtime's engine is never declared lost by the platform (it may come back).
    assert get_cluster_hook("spark").lost(ClusterHandle("spark", "sc://127.0.0.1:1", owned=False)) is None
