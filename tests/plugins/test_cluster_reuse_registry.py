"""The shared-cluster registry (state file + lock) and the reuse mode, without any real cluster.

A "cluster" here is one sleeping Python process whose command line carries the backend's
marker and whose environment carries ETL_CLUSTER_WORKDIR, like every real cluster process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from etl_platform.hooks.cluster import DaskClusterHook, is_shared
from etl_platform.operators.cluster import one_off_run, reuse_mode
from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.clusters.shared import SharedClusters, shared_settings
from include.etl.settings import ConfigError, Settings
from tests.procs import processes_with_env


@pytest.fixture
def registry(tmp_path):
    reg = SharedClusters(tmp_path / "logs" / "clusters", lock_timeout=30)
    yield reg
    for pid in processes_with_env(str(tmp_path)):
        os.kill(pid, 9)


def fake_start(calls: list, delay: float = 0.0):
    """A start function: one detached process per call ("dask" in its command line), an owned handle."""

    def start(workdir):
        calls.append(workdir)
        time.sleep(delay)
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "dask-fake"],
                                env=dict(os.environ, ETL_CLUSTER_WORKDIR=str(workdir)), start_new_session=True)
        return ClusterHandle("dask", f"tcp://127.0.0.1:{10000 + len(calls)}", owned=True, pids=[proc.pid],
                             workdir=str(workdir), extra={"jobs_url": "http://127.0.0.1:1/etl/jobs"})

    return start


def test_first_acquire_starts_later_ones_reuse_and_no_run_owns_it(registry, tmp_path):
    calls: list = []
    first = registry.acquire("dask", fake_start(calls), idle_timeout=60)
    second = registry.acquire("dask", fake_start(calls), idle_timeout=60)
    assert len(calls) == 1 and calls[0] == tmp_path / "logs" / "clusters" / "_shared" / "dask"
    assert second.address == first.address and second.pids == first.pids
    for handle in (first, second):
        assert handle.owned is False and is_shared(handle) and handle.extra["idle_timeout_s"] == 60
        assert handle.extra["jobs_url"]  # what the cluster's own handle said is kept
    state = json.loads(registry.state_file("dask").read_text())
    assert state["handle"]["owned"] is True and str(first.pids[0]) in state["start_times"]
    assert registry.current("dask").address == first.address
    assert registry.current("spark") is None  # one registry entry per backend
    # The run's teardown leaves it running: it is not the run's.
    assert DaskClusterHook(settings=Settings.from_env({})).stop(first) == []
    assert registry.current("dask") is not None


def test_concurrent_starts_start_one_cluster(registry):
    calls: list = []
    handles: list = []
    threads = [threading.Thread(target=lambda: handles.append(registry.acquire("dask", fake_start(calls, 1.0),
                                                                               idle_timeout=60)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 1, calls
    assert len({h.address for h in handles}) == 1 and len(handles) == 4


def test_a_stale_state_file_is_detected_and_a_new_cluster_started(registry, tmp_path):
    calls: list = []
    first = registry.acquire("dask", fake_start(calls), idle_timeout=60)
    os.kill(first.pids[0], 9)  # the cluster died (or idled out) without telling anyone
    for _ in range(50):
        if registry.current("dask") is None:
            break
        time.sleep(0.1)
    assert registry.current("dask") is None
    second = registry.acquire("dask", fake_start(calls), idle_timeout=60)
    assert len(calls) == 2 and second.address != first.address and second.pids != first.pids


def test_leftovers_of_a_dead_cluster_are_swept_before_a_new_start(registry):
    calls: list = []
    first = registry.acquire("dask", fake_start(calls), idle_timeout=60)
    workdir = registry.workdir("dask")
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                              env=dict(os.environ, ETL_CLUSTER_WORKDIR=str(workdir)))  # e.g. a worker left behind
    os.kill(first.pids[0], 9)
    time.sleep(0.3)
    second = registry.acquire("dask", fake_start(calls), idle_timeout=60)
    assert orphan.wait(10) is not None
    assert set(processes_with_env(str(workdir))) == set(second.pids)


def test_a_reused_pid_is_not_taken_for_the_cluster(registry):
    calls: list = []
    registry.acquire("dask", fake_start(calls), idle_timeout=60)
    state = json.loads(registry.state_file("dask").read_text())
    pid = state["handle"]["pids"][0]
    state["start_times"][str(pid)] -= 100  # as if the pid now belonged to a later process
    registry.state_file("dask").write_text(json.dumps(state))
    assert SharedClusters.dead(state) == [pid] and registry.current("dask") is None


def test_unreadable_state_is_stale_and_stop_clears_it(registry):
    registry.workdir("dask").mkdir(parents=True)
    registry.state_file("dask").write_text("{half")
    assert registry.read("dask") is None and registry.current("dask") is None
    calls: list = []
    handle = registry.acquire("dask", fake_start(calls), idle_timeout=60)
    assert handle.pids[0] in registry.stop("dask")
    assert registry.read("dask") is None and processes_with_env(str(registry.workdir("dask"))) == []


def test_a_shared_cluster_needs_an_idle_timeout(registry):
    with pytest.raises(ClusterStartError, match="ETL_CLUSTER_SHARED_IDLE_TIMEOUT"):
        registry.acquire("dask", fake_start([]), idle_timeout=0)


def test_the_lock_times_out_naming_the_backend(tmp_path):
    import fcntl

    reg = SharedClusters(tmp_path, lock_timeout=0.5)
    reg.workdir("spark").mkdir(parents=True)
    with open(reg.workdir("spark") / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ClusterStartError, match="shared spark cluster"):
            with reg.lock("spark"):
                pass


def test_reuse_settings_and_modes():
    assert Settings.from_env({}).cluster_reuse == "per_run"  # plain bin/airflow, scripts, tests
    s = Settings.from_env({"ETL_CLUSTER_REUSE": "Shared", "ETL_CLUSTER_SHARED_IDLE_TIMEOUT": "5"})
    assert s.cluster_reuse == "shared" and shared_settings(s).cluster_idle_timeout == 5
    with pytest.raises(ConfigError, match="ETL_CLUSTER_REUSE"):
        Settings.from_env({"ETL_CLUSTER_REUSE": "sometimes"})
    scheduled = {"dag_run": SimpleNamespace(triggering_user_name=None)}
    assert reuse_mode(None, scheduled, s) == "shared"
    assert reuse_mode("", scheduled, s) == "shared"  # an empty templated field: the setting
    assert reuse_mode("per_run", scheduled, s) == "per_run"
    # A one-off run (airflow dags test / dag.test()) never gets the shared cluster.
    one_off = {"dag_run": SimpleNamespace(triggering_user_name="dag_test")}
    # a one-off run's engine lives in its one process (Dask) or is its own (Spark), whatever was asked
    assert one_off_run(one_off) and reuse_mode("shared", one_off, s) == reuse_mode("per_run", one_off, s) == "in_process"
    with pytest.raises(ConfigError, match="reuse"):
        reuse_mode("both", scheduled, s)
