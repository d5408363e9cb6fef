"""A real dask-gateway server for tests: ``UnsafeLocalBackend``, everything on 127.0.0.1.

``gateway_server(base)`` starts ``dask-gateway-server -f config.py`` in its own process group
(simple auth with a password, the clusters' work directories under ``base/clusters``) and stops
it by pid. The fixture ``dask_gateway`` shares one per test module; import it from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.e2e.stack import free_port, stop_group

VENV_BIN = Path(sys.executable).parent
CONFIG = """\
from dask_gateway_server.options import Integer, Options
c.DaskGateway.address = "127.0.0.1:0"  # the private API
c.Proxy.address = "127.0.0.1:{http_port}"
c.Proxy.tcp_address = "127.0.0.1:{tcp_port}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
c.UnsafeLocalBackend.clusters_directory = {clusters!r}
c.LocalClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.LocalClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.LocalClusterConfig.idle_timeout = 600  # the manager's own leak safety net
c.LocalClusterConfig.cluster_max_workers = 4
c.Backend.cluster_options = Options(Integer("worker_threads", default=1, min=1, max=2),
                                    handler=lambda options: {{"worker_threads": options.worker_threads}})
"""


@dataclass
class GatewayServer:
    base: Path
    http_port: int
    tcp_port: int
    password: str
    proc: subprocess.Popen

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def clusters_dir(self) -> Path:
        return self.base / "clusters"

    def connection(self, login: str = "etl", password: str | None = None, **extra) -> str:
        """The JSON of an ``AIRFLOW_CONN_...`` variable naming this gateway."""
        extra = {"auth": "simple", "proxy_address": self.tcp_port, "start_timeout": 120, **extra}
        return json.dumps({"conn_type": "dask_gateway", "host": "127.0.0.1", "port": self.http_port, "schema": "http",
                           "login": login, "password": self.password if password is None else password,
                           "extra": extra})

    @contextlib.contextmanager
    def client(self):
        """A ``dask_gateway.Gateway`` client of this server."""
        from dask_gateway import BasicAuth, Gateway

        from etl_platform.hooks.gateway import close_gateway

        gateway = Gateway(self.address, proxy_address=self.tcp_port, auth=BasicAuth("etl", self.password))
        try:
            yield gateway
        finally:
            close_gateway(gateway)

    def clusters(self) -> list[str]:
        """Names of the clusters the gateway has pending or running."""
        with self.client() as gateway:
            return [report.name for report in gateway.list_clusters()]

    def status(self, name: str) -> str:
        """The gateway's status of cluster ``name``: ``RUNNING``, ``STOPPED``, ..."""
        with self.client() as gateway:
            return gateway.get_cluster(name).status.name

    def cluster_processes(self) -> list[psutil.Process]:
        """Live processes of the gateway's clusters: their command line or environment names ``clusters_dir``."""
        needle, found = str(self.clusters_dir), []
        for proc in psutil.process_iter(["cmdline", "status"]):
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                if any(needle in part for part in [*(proc.info["cmdline"] or []), *proc.environ().values()]):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def wait_no_cluster_processes(self, timeout: float = 30) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout
        while (left := self.cluster_processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def log(self, chars: int = 3000) -> str:
        return (self.base / "gateway.log").read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def gateway_server(base: Path, start_timeout: float = 60) -> Iterator[GatewayServer]:
    password = os.urandom(8).hex()
    (base / "clusters").mkdir(parents=True, exist_ok=True)
    http_port, tcp_port = free_port(), free_port()
    (base / "config.py").write_text(CONFIG.format(http_port=http_port, tcp_port=tcp_port, password=password,
                                                  clusters=str(base / "clusters"), dask=str(VENV_BIN / "dask")))
    with open(base / "gateway.log", "ab") as log:
        proc = subprocess.Popen([str(VENV_BIN / "dask-gateway-server"), "-f", str(base / "config.py")], cwd=base,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = GatewayServer(base, http_port, tcp_port, password, proc)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{server.address}/api/health", timeout=5) as resp:
                    if json.load(resp).get("status") == "pass":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dask-gateway-server did not come up at {server.address}:\n{server.log()}")
            time.sleep(0.3)
        yield server
    finally:
        stop_group(proc, 30)  # SIGTERM: the server stops its clusters and its proxy; SIGKILL what is left
        left = server.wait_no_cluster_processes(10)
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        assert not left, f"cluster processes outlived the dask-gateway server (killed): {[p.pid for p in left]}"


@pytest.fixture(scope="module")
def dask_gateway(tmp_path_factory) -> Iterator[GatewayServer]:
    """One dask-gateway server per test module."""
    with gateway_server(tmp_path_factory.mktemp("gateway")) as server:
        yield server
