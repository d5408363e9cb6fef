"""DaskClusterHook on real local clusters: the runtime's engine, a one-off run's own, a connection's; no leaks."""

from __future__ import annotations

import socket
import subprocess

import pytest

from etl_platform.hooks import get_cluster_hook
from etl_platform.hooks.dask_cluster import DaskClusterHook
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


def test_runs_attach_to_the_runtimes_engine_and_only_its_owner_stops_it(tmp_path, settings):
    from tests.e2e.clusters import runtime

    with runtime(tmp_path / "rt", ("dask",)) as rt:
        hook = DaskClusterHook(settings=Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path / "lake"), **rt.env}))
        handle = hook.start_or_attach(tmp_path / "unused")
        assert not handle.owned and handle.pids == [] and handle.extra["runtime"] == str(rt.root)
        assert handle.address.startswith("tcp://127.0.0.1:") and handle.address == rt.handle("dask").address
        assert handle.dashboard_url and handle.dashboard_url.startswith("http://127.0.0.1:")
        procs = rt.engine_pids("dask")
        assert len(procs) >= 3, procs  # scheduler, nanny, worker processes
        # Every server the engine opened listens on loopback only.
        addresses = set().union(*(_listening_addresses(p) for p in procs))
        assert addresses and addresses <= {"127.0.0.1"}, addresses
        # A handle survives the XCom round trip and another process can use it.
        engine = DaskClusterHook(settings=settings).engine(ClusterHandle.from_dict(handle.to_dict()))
        assert engine.client.submit(sum, [1, 2]).result() == 3
        engine.client.close()
        assert hook.stop(handle) == [] and hook.stop(handle) == []  # a run's teardown: the engine stays
        assert sorted(rt.engine_pids("dask")) == sorted(procs)
        assert not (tmp_path / "unused").exists()
    assert rt.engine_pids("dask") == [] and not (rt.root / "dask.json").exists()  # its owner stopped it


def test_a_one_off_runs_engine_lives_in_its_process_and_ends_with_its_stop(tmp_path, settings):
    hook = DaskClusterHook(settings=settings)
    handle = hook.start_or_attach(tmp_path / "unused", in_process=True)
    assert handle.owned and handle.pids == [] and handle.address.startswith("tcp://127.0.0.1:")
    engine = DaskClusterHook(settings=settings).engine(ClusterHandle.from_dict(handle.to_dict()))
    assert engine.client.submit(sum, [1, 2]).result() == 3
    engine.client.close()
    assert hook.stop(handle) == [] and hook.stop(handle) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(handle.address.rsplit(":", 1)[1])), timeout=2).close()


def test_no_connection_and_no_runtime_is_one_clear_error(tmp_path, settings):
    with pytest.raises(ClusterStartError, match=r"no dask cluster for this run: no Airflow connection 'dask_default', "
                                                r"and no runtime \(ETL_RUNTIME_DIR is not set: start the platform with `make run`\)"):
        DaskClusterHook(settings=settings).start_or_attach(tmp_path / "w")
    stale = Settings.from_env({"ETL_RUNTIME_DIR": str(tmp_path / "rt")})
    (tmp_path / "rt").mkdir()
    (tmp_path / "rt" / "dask.json").write_text('{"backend": "dask", "address": "tcp://127.0.0.1:1", "owned": true, '
                                               '"owner": {"pid": 999999999, "started": 0}}')  # a killed owner's file
    with pytest.raises(ClusterStartError, match=r"the runtime runs no dask engine"):
        DaskClusterHook(settings=stale).start_or_attach(tmp_path / "w")


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
