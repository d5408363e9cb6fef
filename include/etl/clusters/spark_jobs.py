"""A job endpoint beside a local Spark Connect server, so a Spark job task imports no pyspark at all.

A Spark job task would otherwise import the Spark Connect client (``pyspark.sql.connect``,
grpc, pandas, pyarrow: 1-2.5 s, more under load) in its own process, on every task, only to
send a few plans to the server. For the runtime's server, its owner
(:mod:`include.etl.clusters.runtime`) also serves this endpoint, with those imports done once:

``POST {jobs_url}`` (``…/etl/jobs``) with a :class:`~include.etl.jobs.spec.JobSpec` (as JSON,
with its ``key`` and the run's ``session_id``): a thread opens a client session of
its own on the server, *joining* the run's server-side session ``session_id`` (a new session
when that one is gone, or none is given), tags its operations with ``key``, runs the registered
job as :meth:`ClusterHook.run_job` would (``get_job(job).context(engine=SparkEngine(session),
...)``) and answers once it ended, with ``{"summary", "elapsed_s", "logs", "session_id"}`` or
``{"error": {...}, "elapsed_s", "logs"}`` (the wire format of :mod:`include.etl.clusters.dask_http`:
the error as :func:`include.etl.jobs.errors.encode` gives it; ``logs`` are the records the job's
code logged below ``include``, as on Dask). Closing the job's client never releases the run's
session (the run's teardown does); a session the job had to open for itself is released.

``DELETE {jobs_url}/<key>`` interrupts that job (``on_kill``): ``interruptTag(key)`` on the
job's session, repeated every second until the job ended, so an operation the job starts
after the first interrupt is interrupted too. A client that disconnects before the answer (a
task process SIGKILLed) cancels its job the same way: the request's thread polls its socket
while it waits. Only that job's operations are interrupted: other jobs in the same session
(other tasks of the run) or on the same server (other runs) keep running.

``GET /health`` answers ``{"ok": true, ...}`` once the endpoint is warm.

The endpoint is a stdlib :class:`~http.server.ThreadingHTTPServer` bound to ``ETL_BIND_HOST``
(127.0.0.1) on a free port: anyone who can reach it can run registered jobs, but they could
already run any code through the Spark Connect server's own (unauthenticated) port on the same
host. The task side is :func:`include.etl.clusters.dask_http.call_job` (urllib and json only).
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from include.etl.clusters.dask_http import JOBS_PATH
from include.etl.jobs.errors import encode
from include.etl.jobs.spec import JobSpec, LogCapture

log = logging.getLogger("etl.spark_jobs")

HEALTH_PATH = "/health"
POLL_S = 0.2  # how often a waiting request checks its job and its client's socket
REINTERRUPT_S = 1.0  # how often a cancelled job's operations are interrupted again until it ended


def warm_imports() -> float:
    """Import what every job needs (the Spark Connect client, pandas, pyarrow, the job registry); seconds taken."""
    t0 = time.perf_counter()
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import pyspark.sql.connect.dataframe  # noqa: F401
    import pyspark.sql.connect.functions  # noqa: F401
    import pyspark.sql.connect.session  # noqa: F401

    import include.etl.engines.spark  # noqa: F401
    import include.etl.jobs  # noqa: F401
    import include.etl.reader  # noqa: F401

    return round(time.perf_counter() - t0, 2)


class JobCancelled(RuntimeError):
    """The job was cancelled (``DELETE``, or its client went away) before it could finish."""


def _client_gone(sock: socket.socket | None) -> bool:
    """Has the client of a request whose body was read closed its end (EOF or reset)?"""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or closed already
        return True


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy / pandas scalars
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class _Job:
    """One job of the endpoint: its spec, its client session (once open) and its cancellation."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.key: str = spec.key
        self.session: Any = None
        self.cancelled = threading.Event()
        self.why = ""
        self.result: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def cancel(self, why: str) -> None:
        if not self.cancelled.is_set():
            self.why = why
            self.cancelled.set()
            log.warning("cancelling job %s (%s): %s", self.spec.job, self.key, why)
        self.interrupt()

    def interrupt(self) -> int:
        """Interrupt the job's running operations (those tagged with its key); how many there were."""
        with self._lock:
            session = self.session
        if session is None:
            return 0
        try:
            return len(session.interruptTag(self.key) or [])
        except Exception as exc:  # noqa: BLE001 - the session may be closing
            log.info("interrupting job %s failed: %s", self.key, str(exc).splitlines()[0][:300] if str(exc) else exc)
            return 0

    def run(self, server: JobServer) -> None:
        """The job's driver (its own thread): open the session, run the job, close the client."""
        spec = self.spec
        t0 = time.perf_counter()
        session = None
        result: dict[str, Any]
        with LogCapture() as capture:
            try:
                from include.etl.engines.spark import SparkEngine

                session = server.open_session(spec.session_id)
                with self._lock:
                    self.session = session
                session.addTag(self.key)  # tags are per client thread: this thread runs every operation of the job
                if self.cancelled.is_set():
                    raise JobCancelled(f"job {self.key} was cancelled before it started ({self.why})")
                result = {"summary": spec.run_on(SparkEngine(session)),
                          "session_id": getattr(session, "session_id", None)}
            except BaseException as exc:  # noqa: BLE001 - reported to the task process, which re-raises it
                if self.cancelled.is_set() and not isinstance(exc, JobCancelled):
                    cancelled = JobCancelled(f"job {self.key} was cancelled ({self.why}): {type(exc).__name__}: "
                                             f"{str(exc).splitlines()[0][:500] if str(exc) else ''}")
                    cancelled.__cause__, exc = exc, cancelled  # the traceback keeps the interrupted operation's
                result = {"error": encode(exc)}
            finally:
                with self._lock:
                    self.session = None
                if session is not None:
                    try:
                        session.stop()  # a joined session stays on the server (release_session_on_close is off)
                    except Exception as exc:  # noqa: BLE001 - closing is best effort
                        log.info("closing the client of job %s failed: %s", self.key, exc)
        result["elapsed_s"] = round(time.perf_counter() - t0, 3)
        result["logs"] = capture.records
        self.result = result


class JobServer(ThreadingHTTPServer):
    """The job endpoint of the Spark Connect server at ``spark_address``, listening on ``host`` (a free port)."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, spark_address: str, host: str, port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.spark_address = spark_address
        self.jobs: dict[str, _Job] = {}
        self.lock = threading.Lock()
        self.last_activity: float | None = None  # epoch seconds of the latest job start or end
        self.warm_s: float | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{JOBS_PATH}"

    def activity(self) -> tuple[bool, float | None]:
        """(a job is in flight, time of the latest job start or end): for the idle watcher."""
        with self.lock:
            return bool(self.jobs), self.last_activity

    # ---- the Spark side (methods, so that tests can stand in for a server) ----------------

    def check_server(self) -> None:
        """:class:`ClusterStartError` naming the address when nothing answers on the server's port."""
        from include.etl.clusters import ClusterStartError
        from include.etl.clusters.spark_local import port_open, split_address

        host, port = split_address(self.spark_address)
        if not port_open(host, port, 5.0):
            raise ClusterStartError(f"cannot reach the Spark Connect server at {self.spark_address}: nothing answers "
                                    f"on {host}:{port} (its job endpoint {self.url} still runs)")

    def open_session(self, session_id: str | None) -> Any:
        """A new client on the server: joining ``session_id`` if that session is usable, else a new session."""
        from include.etl.clusters.spark_local import connect

        self.check_server()
        if session_id:
            session = connect(self.spark_address, session_id)
            try:
                session.conf.get("spark.sql.shuffle.partitions")  # one cheap round trip
                return session
            except Exception as exc:  # noqa: BLE001 - SESSION_CLOSED, SESSION_NOT_FOUND, ...
                log.warning("the run's Spark Connect session %s is no longer usable (%s); opening a new session",
                            session_id, str(exc).splitlines()[0][:300] if str(exc) else exc)
                session.stop()
        return connect(self.spark_address)

    # ---- jobs ------------------------------------------------------------------------------

    def run_job(self, spec: JobSpec, sock: socket.socket | None = None) -> dict[str, Any]:
        """Run the job of ``spec`` in a thread of its own and wait for it, cancelling it if ``sock``'s client goes away."""
        job = _Job(spec)
        with self.lock:
            if job.key in self.jobs:
                return {"error": encode(RuntimeError(f"a job with key {job.key!r} runs already on this endpoint")),
                        "logs": []}
            self.jobs[job.key] = job
            self.last_activity = time.time()
        log.info("job %s (%s) for %s: starting", spec.job, job.key, spec.ds)
        thread = threading.Thread(target=job.run, args=(self,), name=job.key, daemon=True)
        try:
            thread.start()
            last_interrupt = 0.0
            while True:
                thread.join(POLL_S)
                if not thread.is_alive():
                    break
                if not job.cancelled.is_set() and _client_gone(sock):
                    job.cancel("its client disconnected before the answer (task process killed?)")
                    last_interrupt = time.monotonic()
                elif job.cancelled.is_set() and time.monotonic() - last_interrupt >= REINTERRUPT_S:
                    job.interrupt()
                    last_interrupt = time.monotonic()
        finally:
            with self.lock:
                self.jobs.pop(job.key, None)
                self.last_activity = time.time()
        result = job.result or {"error": encode(RuntimeError(f"job {job.key} ended without a result")), "logs": []}
        log.info("job %s (%s): %s in %.3f s", spec.job, job.key,
                 f"failed ({result['error']['class']})" if "error" in result else "done", result.get("elapsed_s") or 0)
        return result

    def cancel(self, key: str, why: str) -> bool:
        with self.lock:
            job = self.jobs.get(key)
        if job is None:
            return False
        job.cancel(why)
        return True


class _Handler(BaseHTTPRequestHandler):
    server: JobServer
    server_version = "etl-spark-jobs/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=_json_default).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError as exc:  # the client went away (killed task): nobody to answer
            log.info("could not answer %s %s: %s", self.command, self.path, exc)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") != HEALTH_PATH:
            self._answer(404, {"error": f"no such path {self.path}"})
            return
        busy, latest = self.server.activity()
        self._answer(200, {"ok": True, "spark_address": self.server.spark_address, "pid": os.getpid(),
                           "jobs": len(self.server.jobs), "last_activity": latest, "warm_s": self.server.warm_s})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != JOBS_PATH:
            self._answer(404, {"error": f"no such path {self.path}"})
            return
        try:
            spec = JobSpec.from_dict(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
            if not spec.key:
                raise ValueError("missing key")
        except (ValueError, TypeError) as exc:
            self._answer(400, {"error": f"not a job spec: {exc}"})
            return
        self._answer(200, self.server.run_job(spec, self.connection))

    def do_DELETE(self) -> None:  # noqa: N802
        prefix = JOBS_PATH + "/"
        if not self.path.startswith(prefix):
            self._answer(404, {"error": f"no such path {self.path}"})
            return
        key = unquote(self.path[len(prefix):])
        self._answer(200, {"cancelled": self.server.cancel(key, "DELETE from its task (on_kill or timeout)")})


def serve(spark_address: str, host: str, endpoint_file: Path | None = None) -> JobServer:
    """Warm the imports, start the endpoint in a daemon thread and (atomically) write its URL to ``endpoint_file``."""
    try:
        warm_s = warm_imports()
        server = JobServer(spark_address, host)
    except BaseException as exc:
        if endpoint_file is not None:
            _write(endpoint_file, {"error": f"{type(exc).__name__}: {exc}"})
        raise
    server.warm_s = warm_s
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="etl-job-endpoint",
                     daemon=True).start()
    if endpoint_file is not None:
        _write(endpoint_file, {"url": server.url, "pid": os.getpid(), "warm_s": warm_s})
    log.info("job endpoint for %s at %s (imports warmed in %.2f s)", spark_address, server.url, warm_s)
    threading.Thread(target=warm_client, args=(spark_address,), name="etl-warm-client", daemon=True).start()
    return server


def warm_client(spark_address: str) -> None:
    """One tiny query through a client of this process (best effort), so that the first job does not pay
    for the client's first plan, gRPC channel and result decoding (about 1 s under load)."""
    from include.etl.clusters.spark_local import connect

    t0 = time.perf_counter()
    try:
        session = connect(spark_address)  # a session of its own, released right after
        try:
            session.range(1).count()
        finally:
            session.stop()
        log.info("client warmed up in %.2f s", time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - only an optimisation
        log.info("warming up a client failed (%s); the first job will do it", str(exc).splitlines()[0][:300])


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
