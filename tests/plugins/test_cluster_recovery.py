"""Reruns and lost clusters on a real local Dask cluster: nothing leaks, nothing retries blindly."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from etl_platform.hooks.cluster import DaskClusterHook
from etl_platform.operators import SparkJobOperator, StartClusterOperator, StopClusterOperator
from include.etl.clusters import ClusterHandle, kill_groups, processes_of_workdir
from include.etl.settings import Settings
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path / "lake"), "ETL_LOCAL_WORKERS": "1"})


class _TI:
    def __init__(self, task_id: str):
        self.dag_id, self.run_id, self.task_id, self.map_index = "dag", "manual__2024-07-07", task_id, -1
        self.try_number = 1
        self.xcom = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


def _context(task_id: str) -> dict:
    return {"ti": _TI(task_id), "ds": "2024-07-07"}


def test_rerun_of_start_task_stops_the_earlier_tries_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("ETL_LOCAL_WORKERS", "1")
    monkeypatch.setenv("ETL_LAKE_ROOT", str(tmp_path / "lake"))
    start = StartClusterOperator(task_id="start_cluster", backend="dask")
    first = ClusterHandle.from_dict(start.execute(_context("start_cluster")))
    workdir = first.workdir
    assert workdir == str(tmp_path / "logs" / "clusters" / "dag" / "manual__2024-07-07" / "start_cluster" / "dask")
    first_procs = processes_of_workdir(workdir)
    assert len(first_procs) >= 3, first_procs
    # The try's handle is lost (the task was killed after starting): a second try starts anew...
    second = ClusterHandle.from_dict(start.execute(_context("start_cluster")))
    try:
        assert second.address != first.address
        alive = set(processes_of_workdir(workdir))
        assert alive and not alive & set(first_procs), "the first try's cluster is still running"
        SparkJobOperator(task_id="noop", job="noop", cluster=second.to_dict()).execute(_context("noop"))
    finally:
        StopClusterOperator(task_id="stop_cluster", cluster=second.to_dict()).execute(_context("stop_cluster"))
    assert processes_with_env(str(tmp_path)) == []


def test_job_on_a_lost_cluster_fails_without_retries_and_says_how_to_recover(tmp_path, settings):
    from airflow.sdk.exceptions import AirflowFailException

    hook = DaskClusterHook(settings=settings)
    handle = hook.start_or_attach(tmp_path / "cluster")
    assert hook.lost(handle) is None
    kill_groups(handle.pids, "dask", grace=5)  # the cluster dies between two tasks
    op = SparkJobOperator(task_id="ingest", job="noop", cluster=handle.to_dict())
    with pytest.raises(AirflowFailException) as err:
        op.execute(_context("ingest"))
    message = str(err.value)
    assert f"cluster started by this run at {handle.address} is gone" in message
    assert "clear this task" in message and "start_cluster" in message
    assert "scheduler.log" in message or "workers.log" in message  # points at the cluster's logs
    assert hook.stop(handle) == []
    # An attached cluster is never declared lost by the platform (it may come back).
    assert hook.lost(ClusterHandle("dask", handle.address, owned=False)) is None


def test_stop_also_kills_processes_that_left_the_clusters_process_groups(tmp_path, settings):
    hook = DaskClusterHook(settings=settings)
    workdir = tmp_path / "cluster"
    handle = hook.start_or_attach(workdir)
    # An orphan: a process of the cluster (same ETL_CLUSTER_WORKDIR) in a session of its own,
    # as a crashed worker's child re-parented to init would be.
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                              env=dict(os.environ, ETL_CLUSTER_WORKDIR=str(workdir)))
    try:
        killed = hook.stop(handle)
        assert orphan.pid in killed
        assert orphan.wait(10) is not None
        assert processes_with_env(str(workdir)) == []
    finally:
        if orphan.poll() is None:
            orphan.kill()


def test_cluster_workdir_is_per_start_task_and_map_index(tmp_path, monkeypatch):
    from etl_platform.operators.cluster import cluster_workdir

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    ti = SimpleNamespace(dag_id="d", run_id="scheduled__2024-07-07T00:00:00+00:00", task_id="start", map_index=3)
    path = cluster_workdir({"ti": ti}, "spark")
    assert path == tmp_path / "logs" / "clusters" / "d" / "scheduled__2024-07-07T00_00_00_00_00" / "start-3" / "spark"
