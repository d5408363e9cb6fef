"""The job endpoint an engine's owner serves (:mod:`include.etl.clusters.runtime`), so a job task imports no engine.

``POST {jobs_url}`` (``…/etl/jobs``) with a :class:`~include.etl.jobs.spec.JobSpec` as JSON: the
engine's runner (:mod:`~include.etl.clusters.spark_jobs`, :mod:`~include.etl.clusters.dask_jobs`)
runs the job's driver and the endpoint answers once it ended, in :func:`~include.etl.jobs.spec.run_spec`'s
wire format (the error as :func:`include.etl.jobs.errors.encode` gives it). A key already running is
refused. ``DELETE {jobs_url}/<key>`` cancels that job only (``on_kill``); so does a client that
disconnects before its answer (a SIGKILLed task process): the request's thread polls its socket.
A cancelled job is interrupted again every second until it ended. ``GET /health`` answers
``{"ok": true, ...}``.

A stdlib :class:`~http.server.ThreadingHTTPServer` bound to ``ETL_BIND_HOST`` (127.0.0.1) on a
free port: whoever reaches it can run registered jobs, as they could through the engine's own
unauthenticated port on the same host. The task side is :func:`call_job` and :func:`cancel_job`.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from include.etl.jobs.errors import encode
from include.etl.jobs.spec import JobSpec

log = logging.getLogger("etl.job_server")

JOBS_PATH = "/etl/jobs"
POLL_S = 0.2  # how often a waiting request checks its job and its client's socket
REINTERRUPT_S = 1.0  # how often a cancelled job is interrupted again until it ended


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


class JobCancelled(RuntimeError):
    """The job was cancelled (``DELETE``, or its client went away) before it could finish."""


class Job:
    """One job of the endpoint: its spec, the runner's hold on it (a session, a future) and its cancellation."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec, self.key = spec, spec.key
        self.handle: Any = None  # set by the runner while the job runs, for interrupt()
        self.cancelled = threading.Event()
        self.why = ""
        self.result: dict[str, Any] | None = None

    def error(self, exc: BaseException) -> BaseException:
        """The error to report for ``exc``: once the job was cancelled, a :class:`JobCancelled` caused by it."""
        if not self.cancelled.is_set() or isinstance(exc, JobCancelled):
            return exc
        cancelled = JobCancelled(f"job {self.key} was cancelled ({self.why}): {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:500] if str(exc) else ''}")
        cancelled.__cause__ = exc  # the traceback keeps the interrupted operation's
        return cancelled


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


class JobServer(ThreadingHTTPServer):
    """The job endpoint of ``runner``'s engine, listening on ``host`` (a free port).

    ``runner`` is the engine's side: ``address`` (the engine's), ``warm()`` (before the endpoint
    listens), ``run(job)`` (the job's answer, in the job's own thread; what it raises is encoded),
    ``interrupt(job)`` (from another thread, repeatedly) and ``close()``.
    """

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, runner: Any, host: str, port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.runner = runner
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.last_activity: float | None = None  # epoch seconds of the latest job start or end
        self.warm_s: float | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{JOBS_PATH}"

    def run_job(self, spec: JobSpec, sock: socket.socket | None = None) -> dict[str, Any]:
        """Run the job of ``spec`` in a thread of its own and wait for it, cancelling it if ``sock``'s client goes away."""
        job = Job(spec)
        with self.lock:
            if job.key in self.jobs:
                return {"error": encode(RuntimeError(f"a job with key {job.key!r} runs already on this endpoint")),
                        "logs": []}
            self.jobs[job.key] = job
            self.last_activity = time.time()
        log.info("job %s (%s) for %s: starting", spec.job, job.key, spec.ds)
        thread = threading.Thread(target=self._run, args=(job,), name=job.key, daemon=True)
        try:
            thread.start()
            last_interrupt = 0.0
            while True:
                thread.join(POLL_S)
                if not thread.is_alive():
                    break
                if not job.cancelled.is_set() and _client_gone(sock):
                    self.cancel(job.key, "its client disconnected before the answer (task process killed?)")
                    last_interrupt = time.monotonic()
                elif job.cancelled.is_set() and time.monotonic() - last_interrupt >= REINTERRUPT_S:
                    self._interrupt(job)
                    last_interrupt = time.monotonic()
        finally:
            with self.lock:
                self.jobs.pop(job.key, None)
                self.last_activity = time.time()
        result = job.result or {"error": encode(RuntimeError(f"job {job.key} ended without a result")), "logs": []}
        log.info("job %s (%s): %s in %.3f s", spec.job, job.key,
                 f"failed ({result['error']['class']})" if "error" in result else "done", result.get("elapsed_s") or 0)
        return result

    def _run(self, job: Job) -> None:
        try:
            job.result = self.runner.run(job)
        except BaseException as exc:  # noqa: BLE001 - reported to the task process, which raises it again
            job.result = {"error": encode(job.error(exc)), "logs": []}

    def _interrupt(self, job: Job) -> None:
        try:
            self.runner.interrupt(job)
        except Exception as exc:  # noqa: BLE001 - the session or the cluster may be going away
            log.info("interrupting job %s failed: %s", job.key, first_line(exc))

    def cancel(self, key: str, why: str) -> bool:
        with self.lock:
            job = self.jobs.get(key)
        if job is None:
            return False
        if not job.cancelled.is_set():
            job.why = why
            job.cancelled.set()
            log.warning("cancelling job %s (%s): %s", job.spec.job, key, why)
        self._interrupt(job)
        return True

    def stop(self) -> None:
        """Stop answering, then close the runner."""
        self.shutdown()
        self.server_close()
        self.runner.close()


class _Handler(BaseHTTPRequestHandler):
    server: JobServer
    server_version = "etl-jobs/1"

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
        if self.path.rstrip("/") != "/health":
            self._answer(404, {"error": f"no such path {self.path}"})
            return
        server = self.server
        self._answer(200, {"ok": True, "address": server.runner.address, "pid": os.getpid(), "jobs": len(server.jobs),
                           "last_activity": server.last_activity, "warm_s": server.warm_s})

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


def serve(runner: Any, host: str) -> JobServer:
    """Warm ``runner``, then serve its endpoint on ``host`` in a daemon thread."""
    t0 = time.perf_counter()
    try:
        runner.warm()
        server = JobServer(runner, host)
    except BaseException:
        runner.close()
        raise
    server.warm_s = round(time.perf_counter() - t0, 2)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="etl-job-endpoint",
                     daemon=True).start()
    log.info("job endpoint for %s at %s (warmed in %.2f s)", runner.address, server.url, server.warm_s)
    return server


# ---- in the task process ---------------------------------------------------------------


class JobEndpointError(RuntimeError):
    """The job endpoint could not be reached or answered nonsense (retryable)."""


def call_job(url: str, spec: dict[str, Any]) -> dict[str, Any]:
    """POST the job to the endpoint at ``url`` and wait for its result (however long the job takes)."""
    req = urllib.request.Request(url, data=json.dumps(spec).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=None) as resp:  # noqa: S310 - our own loopback endpoint
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        raise JobEndpointError(f"the job endpoint {url} answered {exc.code}: {exc.read()[:2000]!r}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise JobEndpointError(f"cannot run the job through {url}: {exc}") from exc


def cancel_job(url: str, key: str, timeout: float = 5.0) -> bool:
    req = urllib.request.Request(f"{url}/{key}", method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return bool(json.load(resp).get("cancelled"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("could not cancel job %s through %s: %s", key, url, exc)
        return False
