"""DaskGatewayHook against a real dask-gateway server: a cluster per run, jobs on it, stopped through the gateway."""

from __future__ import annotations

import logging

import psutil
import pytest

from etl_platform.hooks.gateway import DaskGatewayHook, gateway_hook_for
from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.settings import Settings
from tests.e2e.stack import free_port
from tests.gateway import dask_gateway  # noqa: F401 - the gateway server fixture

pytestmark = pytest.mark.slow

CONN = "dask_gateway_default"


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path / "lake")})


def _listening(procs: list[psutil.Process]) -> set[str]:
    return {c.laddr.ip for p in procs for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}


def test_a_run_gets_its_own_cluster_from_the_gateway_and_stops_it_there(
        dask_gateway, settings, monkeypatch, tmp_path, caplog):  # noqa: F811
    gw = dask_gateway
    monkeypatch.setenv("AIRFLOW_CONN_DASK_GATEWAY_DEFAULT",
                       gw.connection(workers=2, cluster_options={"worker_threads": 2}))
    caplog.set_level(logging.INFO)
    hook = gateway_hook_for(CONN, settings)
    assert isinstance(hook, DaskGatewayHook)
    handle = hook.start_or_attach(tmp_path / "unused")
    try:
        name = handle.extra["gateway_cluster"]
        assert handle.owned and handle.backend == "dask" and handle.conn_id == CONN
        assert handle.extra["manager"] == "dask-gateway"
        assert handle.address == f"gateway://127.0.0.1:{gw.tcp_port}/{name}"
        assert handle.dashboard_url == f"{gw.address}/clusters/{name}/status"
        assert gw.clusters() == [name]
        assert not (tmp_path / "unused").exists(), "a gateway cluster needs no local work directory"
        procs = gw.cluster_processes()
        assert len(procs) >= 3, procs  # the scheduler and two workers (the gateway started them, not us)
        assert _listening(procs) <= {"127.0.0.1"}, _listening(procs)

        # A job task: another hook, the handle after the XCom round trip, connected by the cluster's name.
        job_hook = gateway_hook_for(CONN, settings)
        job_handle = ClusterHandle.from_dict(handle.to_dict())
        assert job_hook.lost(job_handle) is None
        assert job_hook.run_job(job_handle, "noop", {}, "2024-07-01") == {"job": "noop"}  # its driver on a worker
        client = job_hook.engine(job_handle).client
        assert set(client.nthreads().values()) == {2}, "the connection's cluster_options were not applied"
        assert client.submit(sum, [1, 2]).result() == 3
        job_hook.close()
    finally:
        assert gateway_hook_for(CONN, settings).stop(ClusterHandle.from_dict(handle.to_dict())) == []
    assert gw.clusters() == []
    assert gw.wait_no_cluster_processes(30) == [], "cluster processes left after the stop"
    assert "is stopped" in gateway_hook_for(CONN, settings).lost(handle)
    assert gateway_hook_for(CONN, settings).stop(handle) == []  # a second stop: already gone, no error
    assert gw.password not in caplog.text


def test_an_unreachable_gateway_names_its_address_and_the_connection(settings, monkeypatch, tmp_path):
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_DASK_GATEWAY_DEFAULT",
                       f'{{"conn_type": "dask_gateway", "host": "127.0.0.1", "port": {port}, "password": "pw-9"}}')
    with pytest.raises(ClusterStartError, match=rf"dask-gateway at http://127.0.0.1:{port} .*'{CONN}'") as err:
        gateway_hook_for(CONN, settings).start_or_attach(tmp_path)
    assert "pw-9" not in str(err.value)


def test_a_wrong_password_is_refused_and_not_shown(dask_gateway, settings, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("AIRFLOW_CONN_DASK_GATEWAY_DEFAULT", dask_gateway.connection(password="wrong-pw"))
    with pytest.raises(ClusterStartError, match=rf"dask-gateway at {dask_gateway.address} .*401") as err:
        gateway_hook_for(CONN, settings).start_or_attach(tmp_path)
    assert "wrong-pw" not in str(err.value) and dask_gateway.clusters() == []


def test_a_start_that_times_out_gives_the_cluster_back(dask_gateway, settings, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("AIRFLOW_CONN_DASK_GATEWAY_DEFAULT", dask_gateway.connection(workers=1, start_timeout=0.2))
    with pytest.raises(ClusterStartError, match=rf"dask-gateway at {dask_gateway.address} .* after 0 s"):
        gateway_hook_for(CONN, settings).start_or_attach(tmp_path)
    assert dask_gateway.clusters() == [], "the half-started cluster was left on the gateway"
    assert dask_gateway.wait_no_cluster_processes(30) == []


def test_options_the_gateway_refuses_fail_the_start(dask_gateway, settings, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("AIRFLOW_CONN_DASK_GATEWAY_DEFAULT",
                       dask_gateway.connection(cluster_options={"worker_threads": 64}))
    with pytest.raises(ClusterStartError, match=r"ValueError: .*worker_threads"):
        gateway_hook_for(CONN, settings).start_or_attach(tmp_path)
    assert dask_gateway.clusters() == []


def test_only_dask_gateway_connections_get_the_gateway_hook(settings, monkeypatch):
    assert gateway_hook_for(None, settings) is None  # no dask_default: a local cluster, as before
    monkeypatch.setenv("AIRFLOW_CONN_DASK_DEFAULT", "tcp://127.0.0.1:8786")
    assert gateway_hook_for(None, settings) is None
    monkeypatch.setenv("AIRFLOW_CONN_DASK_DEFAULT", '{"conn_type": "dask_gateway", "host": "gw", "port": 80}')
    hook = gateway_hook_for(None, settings)
    assert hook.conn_id == "dask_default" and hook.address == "http://gw:80"
