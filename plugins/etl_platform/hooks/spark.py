"""Spark Connect: attach to a server (a connection, or the runtime's engine), or a one-off run's own server."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from etl_platform.hooks import ClusterHook
from etl_platform.hooks.base import _connection_or_none, is_runtime
from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.settings import ConfigError, Settings

log = logging.getLogger(__name__)

CONNECT_CONN_TYPES = ("sc", "spark_connect", "spark-connect", "sparkconnect")
HEALTH_TIMEOUT = 10.0  # seconds to wait for an attached server's port before giving up


class SparkClusterHook(ClusterHook):
    """A Spark Connect server.

    Connection ``spark_connect_default`` (type ``spark_connect``, or a URI such as
    ``AIRFLOW_CONN_SPARK_CONNECT_DEFAULT=sc://spark-connect:15002``; port defaults to 15002;
    login = user id, password = token, extra ``use_ssl`` and ``dashboard_url`` optional): attach
    to that server and never stop it. Else the runtime's Spark Connect server, or for a one-off
    run a server of its own, started from the installed pyspark package (needs Java 17+). (A
    ``spark://`` standalone master is :class:`~etl_platform.hooks.spark_submit.SparkSubmitClusterHook`'s.)

    The start opens one server-side session for the run (its id is in the handle's ``extra``)
    and every job task joins it: Spark keeps one Python worker pool per session, so a task
    with its own session would pay about 2 s to start fresh workers (and leave a daemon process
    on the server). Hence closing a task's client never releases the run's session, and
    :meth:`cancel` interrupts only the operations tagged with this hook's tag. The stop task
    releases the session on an attached server and stops a one-off run's own.

    The job's driver runs in the task process. Under ``make run`` that process starts with the
    Spark Connect client imported already (:mod:`include.etl.clusters.preload`); a task process
    that dies (SIGKILL) leaves its running operation to the server, which interrupts it
    (:data:`include.etl.clusters.spark_local.DETACHED_TIMEOUT` later on the runtime's server).
    """

    conn_name_attr = "conn_id"
    default_conn_name = "spark_connect_default"
    conn_type = "spark_connect"
    hook_name = "Spark Connect cluster"
    backend = "spark"
    marker = "SparkConnectServer"  # include.etl.clusters.spark_local.MARKER
    core_processes = 1  # the server

    def __init__(self, conn_id: str | None = None, settings: Settings | None = None) -> None:
        super().__init__(conn_id, settings)
        self._session = None
        self._shared = False  # joined the run's session (shared with the run's other tasks)
        self._tag = f"etl-task-{uuid.uuid4().hex[:16]}"  # marks this hook's operations, for cancel()

    def configured_address(self) -> tuple[str, str, str | None] | None:
        """(address shown and stored, address with credentials, dashboard URL) of the connection, or None."""
        conn = _connection_or_none(self.conn_id)
        if conn is None:
            return None
        conn_type = (conn.conn_type or "").lower()
        if conn_type == "spark":
            raise ConfigError(
                f"connection {self.conn_id!r} is a Spark standalone/YARN master ({conn_type}://{conn.host or ''}); "
                "only Spark Connect endpoints are supported yet: use e.g. sc://spark-connect:15002"
            )
        if conn_type and conn_type not in CONNECT_CONN_TYPES:
            raise ConfigError(
                f"connection {self.conn_id!r} has type {conn.conn_type!r}; expected a Spark Connect connection "
                "(type spark_connect, e.g. sc://spark-connect:15002)"
            )
        if not (conn.host or "").strip():
            raise ConfigError(f"connection {self.conn_id!r} has no host; expected e.g. sc://spark-connect:15002")
        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

        try:  # the provider's URL: sc://host[:port]/;user_id=...;token=...;use_ssl=...
            full = SparkConnectHook(self.conn_id).get_connection_url().removesuffix("/")  # "sc://h:p/" without params
        except ValueError as exc:
            raise ConfigError(f"connection {self.conn_id!r}: {exc}") from None
        netloc = urlparse(full).netloc
        address = f"sc://{netloc}" if urlparse(full).port else f"sc://{netloc}:15002"  # shown and stored: no secrets
        extra = conn.extra_dejson
        return address, full, extra.get("dashboard_url")

    def _url(self, handle: ClusterHandle) -> str:
        """The address to connect to, with the connection's credentials (never stored in the handle)."""
        if not handle.owned and handle.conn_id:
            configured = self.configured_address()
            if configured is not None and configured[0] == handle.address:
                return configured[1]
        return handle.address

    def attach(self) -> ClusterHandle | None:
        from include.etl.clusters.spark_local import check_spark_connect

        configured = self.configured_address()
        if configured is not None:
            address, full, dashboard = configured
            log.info("Attaching to the Spark Connect server of connection %r at %s", self.conn_id, address)
            try:
                health = check_spark_connect(full, timeout=HEALTH_TIMEOUT, keep_session=True)
            except ClusterStartError as exc:
                raise ClusterStartError(f"{exc} (from Airflow connection {self.conn_id!r})") from None
            log.info("Spark Connect server at %s is healthy: %s", address, health)
            return ClusterHandle("spark", address, owned=False, dashboard_url=dashboard, conn_id=self.conn_id, extra=health)
        return None

    def start_in_process(self, workdir: Path) -> ClusterHandle:
        """Spark in this one-off run's process: a classic local session, which ends with the process."""
        from include.etl.clusters.spark_in_process import start_in_process_spark

        s = self.settings
        log.info("A one-off run: Spark in this process (a classic local[%s] session on %s)",
                 s.local_workers * s.local_threads, s.bind_host)
        handle = start_in_process_spark(s)
        log.info("Spark %s up in this process (UI %s): it ends with the run", handle.extra.get("spark_version"),
                 handle.dashboard_url)
        return handle

    def open_run(self, handle: ClusterHandle) -> ClusterHandle:
        """The run's own session on the runtime's server (released by the run's teardown; the server stays).

        Sessions keep runs apart (their state, their cancellation); each session starts its Python
        workers on its first Python UDF (about 2 s, once per run).
        """
        from include.etl.clusters.spark_local import check_spark_connect

        health = check_spark_connect(handle.address, timeout=HEALTH_TIMEOUT, python=False, keep_session=True)
        handle.extra = {**{k: v for k, v in handle.extra.items() if k not in ("python_workers_s", "query_s")}, **health}
        log.info("Opened this run's session %s on the runtime's Spark Connect server %s", health.get("session_id"),
                 handle.address)
        return handle

    def stop(self, handle: ClusterHandle) -> list[int]:
        from include.etl.clusters.spark_local import release_session, stop_local_spark_connect

        if (handle.extra or {}).get("in_process"):
            from include.etl.clusters.spark_in_process import stop_in_process_spark

            if stop_in_process_spark(handle):
                log.info("Stopped the Spark session of this one-off run")
            return []

        if not handle.owned:
            if is_runtime(handle):
                log.info("Spark Connect server at %s is the runtime's engine: leaving it running for other runs",
                         handle.address)
            else:
                log.info("Spark Connect server at %s was attached (connection %r), not started here: leaving it "
                         "running", handle.address, handle.conn_id)
            session_id = handle.extra.get("session_id")
            if session_id and is_runtime(handle):
                from include.etl.clusters.spark_local import port_open, split_address

                if not port_open(*split_address(handle.address), HEALTH_TIMEOUT):
                    log.info("The runtime's server at %s is gone already: no session to release", handle.address)
                    return []
            if session_id:
                log.info("Releasing this run's Spark Connect session %s (and its Python workers)", session_id)
                release_session(self._url(handle), session_id)
            return []
        killed = stop_local_spark_connect(handle)
        log.info("Stopped the local Spark Connect server at %s (processes %s%s)", handle.address, handle.pids,
                 "" if killed else ", which had exited already")
        return killed

    def engine(self, handle: ClusterHandle) -> Any:
        """A :class:`SparkEngine` on a client session; it joins the run's session when the handle has one."""
        from include.etl.clusters.spark_local import port_open, split_address
        from include.etl.engines.spark import SparkEngine

        self.close()  # one session per hook: a second engine() must not leak the first
        if (handle.extra or {}).get("in_process"):  # a one-off run's classic session: this hook never closes it
            from include.etl.clusters.spark_in_process import session_of

            return SparkEngine(session_of(handle))
        host, port = split_address(handle.address)
        if not port_open(host, port, HEALTH_TIMEOUT):
            raise ClusterStartError(f"cannot reach the Spark Connect server at {handle.address}: nothing answers on {host}:{port}")
        url = self._url(handle)
        session_id = handle.extra.get("session_id")
        self._session = self._join(url, session_id, handle.address) if session_id else None
        self._shared = self._session is not None
        if self._session is None:
            log.info("Connecting to the Spark Connect server at %s (new session)", handle.address)
            self._session = self._open(url, None, handle.address)
        # Tags are per client thread: the job must run in the thread that called engine(), as in
        # SparkJobOperator.execute; cancel() may then come from any thread.
        self._session.addTag(self._tag)
        return SparkEngine(self._session)

    @staticmethod
    def _open(url: str, session_id: str | None, address: str):
        from include.etl.clusters.spark_local import connect

        try:
            return connect(url, session_id)
        except Exception as exc:  # noqa: BLE001 - gRPC and pyspark errors of many kinds
            raise ClusterStartError(f"cannot open a Spark Connect session on {address}: {exc}") from None

    def _join(self, url: str, session_id: str, address: str):
        """The run's server-side session, or None when it is gone (expired after idling, released)."""
        log.info("Connecting to the Spark Connect server at %s (run session %s)", address, session_id)
        session = self._open(url, session_id, address)
        try:
            session.conf.get("spark.sql.shuffle.partitions")  # one cheap round trip
        except Exception as exc:  # noqa: BLE001 - SESSION_CLOSED, SESSION_NOT_FOUND, ...
            log.warning("The run's Spark Connect session %s is no longer usable (%s); opening a new session",
                        session_id, str(exc).splitlines()[0][:300])
            session.stop()
            return None
        return session

    def cancel(self) -> None:
        """Interrupt the operations this hook started (not those of other tasks sharing the session), then close."""
        from include.etl.clusters.spark_in_process import _SESSIONS

        for session in _SESSIONS.values():  # a one-off run's own session: every job of it is this task's
            session.sparkContext.cancelAllJobs()
        session = self._session
        if session is not None:
            try:
                interrupted = session.interruptTag(self._tag) if self._shared else session.interruptAll()
                log.info("Interrupted %s Spark operation(s) of this task", len(interrupted or []))
            except Exception as exc:  # noqa: BLE001 - the session may already be gone
                log.warning("Could not interrupt the Spark operations of this task: %s", exc)
        self.close()

    def close(self) -> None:
        """Close the client; a session of its own is released, the run's shared session and the server stay."""
        session, self._session, self._shared = self._session, None, False
        if session is not None:
            try:
                session.stop()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.info("Closing the Spark Connect session failed: %s", exc)
