"""DaskClusterHook on a real local cluster: start, attach, health, stop (idempotent, no leaks)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from etl_platform.hooks.cluster import DaskClusterHook, get_cluster_hook
from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.settings import ConfigError, Settings
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path / "lake"), "ETL_LOCAL_WORKERS": "2"})


def _listening_addresses(pid: int) -> set[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if f"pid={pid}," in line}


def test_start_stop_local_cluster_twice_leaves_nothing(tmp_path, settings):
    hook = DaskClusterHook(settings=settings)
    handle = hook.start_or_attach(tmp_path / "cluster")
    try:
        assert handle.owned and handle.backend == "dask"
        assert handle.address.startswith("tcp://127.0.0.1:")
        assert handle.dashboard_url and handle.dashboard_url.startswith("http://127.0.0.1:")
        procs = processes_with_env(str(tmp_path / "cluster"))
        assert len(procs) >= 3, procs  # scheduler, nanny, worker processes
        # Every server the cluster opened listens on loopback only.
        addresses = set().union(*(_listening_addresses(p) for p in procs))
        assert addresses and addresses <= {"127.0.0.1"}, addresses
        # A handle survives the XCom round trip and another process can use it.
        engine = DaskClusterHook(settings=settings).engine(ClusterHandle.from_dict(handle.to_dict()))
        assert engine.client.submit(sum, [1, 2]).result() == 3
        engine.client.close()
    finally:
        hook.stop(handle)
    assert processes_with_env(str(tmp_path / "cluster")) == []
    assert hook.stop(handle) == []  # second stop: nothing left, no error


def test_attach_to_configured_cluster_and_leave_it_running(tmp_path, settings, monkeypatch):
    from include.etl.clusters.dask_local import start_local_dask, stop_local_dask

    external = start_local_dask(settings, tmp_path / "external")  # stands in for a compose service
    try:
        monkeypatch.setenv("AIRFLOW_CONN_DASK_DEFAULT", external.address)
        hook = get_cluster_hook("dask", settings=settings)
        handle = hook.start_or_attach(tmp_path / "unused")
        assert not handle.owned and handle.address == external.address and handle.conn_id == "dask_default"
        assert handle.extra["workers"] == 2
        assert hook.stop(handle) == []
        assert len(processes_with_env(str(tmp_path / "external"))) >= 3, "attached cluster was stopped"
        assert not (tmp_path / "unused").exists()
    finally:
        stop_local_dask(external)
    assert processes_with_env(str(tmp_path / "external")) == []


def test_unreachable_cluster_fails_with_its_address(tmp_path, settings, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_DASK_DEFAULT", f"tcp://127.0.0.1:{port}")
    with pytest.raises(ClusterStartError, match=rf"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}.*'dask_default'"):
        DaskClusterHook(settings=settings).start_or_attach(tmp_path / "w")


def test_connection_without_host_is_a_config_error(settings, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DASK_DEFAULT", '{"conn_type": "dask"}')
    with pytest.raises(ConfigError, match="connection 'dask_default' has no host"):
        DaskClusterHook(settings=settings).configured_address()


def test_attached_handle_cannot_be_stopped_by_the_process_layer():
    from include.etl.clusters.dask_local import stop_local_dask

    with pytest.raises(ValueError, match="attached, not started here"):
        stop_local_dask(ClusterHandle("dask", "tcp://10.0.0.1:8786", owned=False))
