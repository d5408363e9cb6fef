"""Ephemeral Dask clusters from a dask-gateway server: the gateway starts and stops their processes, not us.

Connection type ``dask_gateway``: host, port and schema of the gateway's HTTP address; login and
password for ``basic`` auth (``simple``, the server's test authenticator, is the same here),
the API token as password for ``jupyterhub``, neither for ``kerberos``. Extra: ``auth`` (default
``basic``), ``workers`` (default ``ETL_LOCAL_WORKERS``) or ``adapt`` (``{"minimum": 1, "maximum": 8}``),
``cluster_options`` (as the gateway defines them), ``proxy_address`` (scheduler proxy, if not on
the HTTP address), ``public_address`` (dashboard links), ``start_timeout`` (s, default 180).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from etl_platform.hooks.base import _connection_or_none
from etl_platform.hooks.dask_cluster import DaskClusterHook
from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.settings import ConfigError, Settings

log = logging.getLogger(__name__)

CONN_TYPE = "dask_gateway"
AUTHS = ("simple", "basic", "jupyterhub", "kerberos")


def gateway_hook_for(conn_id: str | None, settings: Settings | None = None) -> DaskGatewayHook | None:
    """A :class:`DaskGatewayHook` when ``conn_id`` (default ``dask_default``) is a ``dask_gateway`` connection."""
    conn_id = conn_id or DaskClusterHook.default_conn_name
    conn = _connection_or_none(conn_id)
    return DaskGatewayHook(conn_id, settings, conn) if conn is not None and conn.conn_type == CONN_TYPE else None


def close_gateway(gateway) -> None:
    """Close a ``Gateway`` client once: its ``__del__`` would close it again and fail on the stopped loop."""
    gateway.close()
    del gateway._loop_runner  # Gateway.__del__ only closes a client that still has one


class DaskGatewayHook(DaskClusterHook):
    """A run's own Dask cluster from dask-gateway; jobs run on it as on any Dask cluster (``run_job``)."""

    default_conn_name = "dask_gateway_default"
    conn_type = CONN_TYPE
    hook_name = "Dask Gateway"

    def __init__(self, conn_id: str | None = None, settings: Settings | None = None, conn: Any = None) -> None:
        super().__init__(conn_id, settings)
        self.conn = conn or _connection_or_none(self.conn_id)
        if self.conn is None or not self.conn.host:
            raise ConfigError(f"connection {self.conn_id!r} must be a dask_gateway connection with a host")
        self.extra = self.conn.extra_dejson
        if self.extra.get("auth", "basic") not in AUTHS:
            raise ConfigError(f"connection {self.conn_id!r}: extra auth must be one of {', '.join(AUTHS)}")
        host = self.conn.host if "://" in self.conn.host else f"{self.conn.schema or 'http'}://{self.conn.host}"
        self.address = f"{host}:{self.conn.port}" if self.conn.port else host
        self.where = f"the dask-gateway at {self.address} (Airflow connection {self.conn_id!r})"
        self._gateway = self._cluster = None

    def gateway(self):
        from dask_gateway import BasicAuth, Gateway, JupyterHubAuth, KerberosAuth

        if self._gateway is None:
            kind, conn = self.extra.get("auth", "basic"), self.conn
            auth = (KerberosAuth() if kind == "kerberos" else JupyterHubAuth(conn.password) if kind == "jupyterhub"
                    else BasicAuth(conn.login, conn.password))
            self._gateway = Gateway(self.address, proxy_address=self.extra.get("proxy_address"),
                                    public_address=self.extra.get("public_address"), auth=auth)
        return self._gateway

    def status(self, name: str) -> str:
        """``PENDING``, ``RUNNING``, ``STOPPING``, ``STOPPED``, ``FAILED``, or ``GONE`` when the gateway has no such cluster."""
        try:
            return self.gateway().get_cluster(name).status.name
        except ValueError:  # 404
            return "GONE"

    def start_or_attach(self, workdir: Path, in_process: bool = False) -> ClusterHandle:
        """A new cluster of the run's own from the gateway (a one-off run too), once its workers are up."""
        timeout = float(self.extra.get("start_timeout", 180))
        options, adapt = self.extra.get("cluster_options") or {}, self.extra.get("adapt")
        workers = max(int(adapt.get("minimum", 1) if adapt else self.extra.get("workers", self.settings.local_workers)), 1)
        log.info("Asking %s for a Dask cluster (options: %s); waiting up to %.0f s for %d worker(s)",
                 self.where, ", ".join(sorted(options)) or "none", timeout, workers)
        name, deadline = None, time.monotonic() + timeout
        try:
            name = self.gateway().submit(**options)  # new_cluster() = submit + connect, with no deadline
            while (status := self.status(name)) == "PENDING" and time.monotonic() < deadline:
                time.sleep(0.5)
            if status != "RUNNING":
                raise ClusterStartError(f"cluster {name} is {status.lower()} after {timeout:.0f} s")
            cluster = self._cluster = self.gateway().connect(name)
            client = self._client_of(cluster, set_as_default=False)
            if adapt:
                cluster.adapt(**adapt)
            else:
                cluster.scale(workers)
            client.wait_for_workers(workers, timeout=max(deadline - time.monotonic(), 1))
        except BaseException as exc:
            if name is not None:  # a half-started cluster: give it back (the start's own error is the one raised)
                with contextlib.suppress(Exception):
                    self.gateway().stop_cluster(name)
            if not isinstance(exc, Exception):
                raise
            raise ClusterStartError(f"no Dask cluster from {self.where}: {type(exc).__name__}: {exc}") from exc
        finally:
            self.close()
        log.info("Dask cluster %s is up at %s (dashboard %s)", name, cluster.scheduler_address, cluster.dashboard_link)
        return ClusterHandle("dask", cluster.scheduler_address, owned=True, conn_id=self.conn_id,
                             dashboard_url=cluster.dashboard_link,
                             extra={"gateway_cluster": name, "manager": "dask-gateway"})

    def _client_of(self, cluster, **kwargs: Any):
        from distributed import Client

        self._client = Client(cluster, security=cluster.security, loop=cluster.loop, **{"timeout": 30, **kwargs})
        return self._client

    def _connect(self, handle: ClusterHandle, **kwargs: Any):
        """A client of the run's cluster, found by name through the gateway (what every job task uses)."""
        self.close()
        name = handle.extra["gateway_cluster"]
        log.info("Connecting to the Dask cluster %s through %s", name, self.where)
        try:
            self._cluster = self.gateway().connect(name)
            return self._client_of(self._cluster, **kwargs)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterStartError(f"cannot reach the Dask cluster {name} through {self.where}: {exc}") from exc

    def lost(self, handle: ClusterHandle) -> str | None:
        name = handle.extra.get("gateway_cluster")
        try:
            status = self.status(name)
        except Exception as exc:  # noqa: BLE001 - the gateway may answer again by the time the job connects
            log.warning("Could not ask %s about cluster %s: %s", self.where, name, exc)
            return None
        return None if status in ("PENDING", "RUNNING") else f"the Dask cluster {name} from {self.where} is {status.lower()}"

    def stop(self, handle: ClusterHandle, timeout: float = 60.0) -> list[int]:
        """Ask the gateway to stop the run's cluster, and wait until it has; a cluster already gone is fine."""
        name = (handle.extra or {}).get("gateway_cluster")
        if not handle.owned or not name:
            return super().stop(handle)
        try:
            self.gateway().stop_cluster(name)  # 204 for a stopped or unknown cluster too
            deadline = time.monotonic() + timeout
            while (status := self.status(name)) in ("PENDING", "RUNNING", "STOPPING") and time.monotonic() < deadline:
                time.sleep(0.5)
        except Exception as exc:
            raise RuntimeError(f"could not stop the Dask cluster {name} through {self.where}: {exc}") from exc
        finally:
            self.close()
        log.info("Dask cluster %s: %s, at %s", name, status.lower(), self.where)
        return []  # the gateway stopped the processes, not this hook

    def close(self) -> None:
        super().close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close(shutdown=False)
            del cluster.gateway._loop_runner  # see close_gateway
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            close_gateway(gateway)
