"""The job endpoint (include/etl/clusters/job_server.py) with its Spark runner and the hook's thin path, without Spark.

A :class:`JobServer` whose Spark runner has a stand-in (a fake client session) runs real HTTP,
threads and jobs (``module:function`` jobs of this module) in this process; the hook talks to
it exactly as a task process talks to the endpoint beside a local Spark Connect server.
``tests/e2e/test_spark_thin.py`` does the same on a real server.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request

import pytest

from etl_platform.hooks.spark import SparkClusterHook
from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.clusters.job_server import JobServer
from include.etl.clusters.spark_jobs import SparkRunner
from include.etl.errors import RejectThresholdExceeded
from include.etl.jobs.errors import RemoteJobError
from include.etl.settings import Settings

DS = "2024-07-01"
JOB = "tests.include.test_spark_jobs"


class FakeConf(dict):
    def set(self, key: str, value: str) -> None:
        self[key] = value


class FakeSession:
    """What a job and the endpoint use of a Spark Connect client session."""

    def __init__(self, session_id: str | None) -> None:
        self.conf = FakeConf()
        self.session_id = session_id or "new-session"
        self.joined = session_id
        self.tags: list[str] = []
        self.interrupted: list[str] = []
        self.stopped = False
        self.interrupt_event = threading.Event()

    def addTag(self, tag: str) -> None:  # noqa: N802 - pyspark's name
        self.tags.append(tag)

    def interruptTag(self, tag: str) -> list[str]:  # noqa: N802
        self.interrupted.append(tag)
        self.interrupt_event.set()
        return ["operation-1"] if tag in self.tags else []

    def stop(self) -> None:
        self.stopped = True


class FakeRunner(SparkRunner):
    def __init__(self) -> None:
        super().__init__("sc://127.0.0.1:1")
        self.sessions: list[FakeSession] = []

    def open_session(self, session_id):
        session = FakeSession(session_id)
        self.sessions.append(session)
        return session


class FakeServer(JobServer):
    def __init__(self) -> None:
        super().__init__(FakeRunner(), "127.0.0.1")
        self.sessions = self.runner.sessions


# ---- jobs (module:function) ---------------------------------------------------------------------


def logging_job(ctx, n: int = 1) -> dict:
    logger = logging.getLogger("include.pipelines.thin_test")
    for i in range(n):
        logger.info("step %s of %s", i + 1, n)
    logger.debug("not captured (below INFO)")
    return {"job": "logging", "n": n, "ds": ctx.ds, "tags": ctx.engine.session.tags,
            "joined": ctx.engine.session.joined}


def rejecting_job(ctx) -> dict:
    logging.getLogger("include.pipelines.thin_test").warning("about to reject")
    raise RejectThresholdExceeded("2 of 3 rows rejected (66.67%) is above the limit of 1.00%")


def broken_job(ctx) -> dict:
    raise KeyError("no such column")


def blocking_job(ctx) -> dict:
    """Waits (like a long Spark operation) until its operations are interrupted."""
    if not ctx.engine.session.interrupt_event.wait(30):
        return {"job": "blocking", "interrupted": False}
    raise RuntimeError("[OPERATION_CANCELED] the operation was interrupted")


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def server():
    srv = FakeServer()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path / "lake")})


def _handle(server: JobServer, session_id: str | None = "run-session") -> ClusterHandle:
    return ClusterHandle("spark", server.runner.address, owned=True, pids=[],
                         extra={"jobs_url": server.url, "session_id": session_id})


def _wait(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s")


# ---- tests ---------------------------------------------------------------------------------------


def test_job_runs_in_the_endpoint_joining_the_run_session_and_its_logs_come_back(server, settings, caplog):
    hook = SparkClusterHook(settings=settings)
    with caplog.at_level(logging.INFO, logger="etl_platform.hooks.spark"):
        summary = hook.run_job(_handle(server), f"{JOB}:logging_job", {"n": 2}, DS)
    assert summary["job"] == "logging" and summary["n"] == 2 and summary["ds"] == DS
    assert summary["joined"] == "run-session"  # the run's server-side session, not a new one
    (session,) = server.sessions
    assert len(session.tags) == 1 and session.tags[0].startswith("etl-job-tests.include.test_spark_jobs_logging_job-")
    assert summary["tags"] == session.tags
    assert session.stopped, "the job's client was not closed"
    relayed = [r.getMessage() for r in caplog.records if r.name == "etl_platform.hooks.spark"]
    assert "[include.pipelines.thin_test] step 1 of 2" in relayed and "[include.pipelines.thin_test] step 2 of 2" in relayed
    assert not any("below INFO" in m for m in relayed)
    assert server.jobs == {} and server.last_activity is not None


def test_each_job_gets_its_own_client_session(server, settings):
    hook = SparkClusterHook(settings=settings)
    results = []
    threads = [threading.Thread(target=lambda: results.append(hook.run_job(_handle(server), f"{JOB}:logging_job", {}, DS)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 3 and len(server.sessions) == 3
    assert len({id(s) for s in server.sessions}) == 3 and len({s.tags[0] for s in server.sessions}) == 3


def test_a_data_error_is_raised_as_its_own_class_with_its_logs(server, settings, caplog):
    hook = SparkClusterHook(settings=settings)
    with caplog.at_level(logging.INFO, logger="etl_platform.hooks.spark"):
        with pytest.raises(RejectThresholdExceeded, match=r"2 of 3 rows rejected") as info:
            hook.run_job(_handle(server), f"{JOB}:rejecting_job", {}, DS)
    assert type(info.value) is RejectThresholdExceeded
    assert any(r.getMessage() == "[include.pipelines.thin_test] about to reject" for r in caplog.records)


def test_other_errors_stay_retryable_runtime_errors(server, settings):
    with pytest.raises(RemoteJobError, match=r"^KeyError: 'no such column'$") as info:
        SparkClusterHook(settings=settings).run_job(_handle(server), f"{JOB}:broken_job", {}, DS)
    assert ", in broken_job\n" in info.value.remote_traceback  # the endpoint's traceback, for the operator to log


def test_delete_interrupts_the_job_operations(server, settings):
    hook = SparkClusterHook(settings=settings)
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = hook.run_job(_handle(server), f"{JOB}:blocking_job", {}, DS)
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    key = _wait(lambda: next(iter(server.jobs), None))
    with urllib.request.urlopen(server.url.rsplit("/etl/jobs", 1)[0] + "/health", timeout=5) as resp:
        assert json.load(resp)["jobs"] == 1  # in flight
    t0 = time.monotonic()
    hook.cancel()  # what on_kill does: DELETE {jobs_url}/<key>
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - t0 < 5
    assert isinstance(outcome.get("error"), RuntimeError) and "JobCancelled" in str(outcome["error"]), outcome
    assert server.sessions[0].interrupted[0] == key and server.jobs == {}


def test_delete_of_an_unknown_job_says_so(server):
    req = urllib.request.Request(f"{server.url}/etl-job-nope", method="DELETE")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.load(resp) == {"cancelled": False}
    with urllib.request.urlopen(server.url.rsplit("/etl/jobs", 1)[0] + "/health", timeout=5) as resp:
        assert json.load(resp)["ok"] is True


def test_a_client_that_disconnects_cancels_its_job(server):
    body = json.dumps({"job": f"{JOB}:blocking_job", "job_kwargs": {}, "ds": DS, "lake_root": "/tmp/lake",
                       "max_reject_ratio": 0.01, "block_bytes": 2**20, "key": "etl-job-killed",
                       "session_id": "run-session"}).encode()
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"POST /etl/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        _wait(lambda: "etl-job-killed" in server.jobs)
    # The socket is closed (as when the kernel closes a SIGKILLed task's sockets).
    _wait(lambda: server.sessions and server.sessions[0].interrupted == ["etl-job-killed"], 5)
    _wait(lambda: server.jobs == {}, 5)


def test_a_gone_server_is_a_retryable_cluster_start_error_naming_it(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens there once closed
    srv = JobServer(SparkRunner(f"sc://127.0.0.1:{dead}"), "127.0.0.1")  # the real Spark side: it checks the server's port
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with pytest.raises(ClusterStartError, match=rf"cannot reach the Spark Connect server at sc://127.0.0.1:{dead}"):
            SparkClusterHook(settings=settings).run_job(_handle(srv), "noop", {}, DS)
    finally:
        srv.shutdown()
        srv.server_close()
    # The endpoint is gone as well (the watcher exits with its server): the same error, from the hook.
    handle = ClusterHandle("spark", f"sc://127.0.0.1:{dead}", owned=True,
                           extra={"jobs_url": f"http://127.0.0.1:{dead}/etl/jobs", "session_id": "s"})
    with pytest.raises(ClusterStartError, match=rf"cannot reach the Spark Connect server at sc://127.0.0.1:{dead}"):
        SparkClusterHook(settings=settings).run_job(handle, "noop", {}, DS)


def test_thin_tasks_off_or_no_endpoint_run_the_driver_here(server, settings, monkeypatch):
    class Engine:
        name = "fake"

        def run_noop(self):
            pass

    for hook, handle in [
        (SparkClusterHook(settings=Settings.from_env({"ETL_LAKE_ROOT": str(settings.lake_root),
                                                      "ETL_SPARK_THIN_TASKS": "false"})), _handle(server)),
        (SparkClusterHook(settings=settings), ClusterHandle("spark", "sc://127.0.0.1:1", owned=False, extra={})),
    ]:
        monkeypatch.setattr(hook, "engine", lambda handle: Engine())
        assert hook.run_job(handle, "noop", {}, DS) == {"job": "noop"}
    assert server.sessions == []  # the endpoint was not used


def test_setting_spark_thin_tasks():
    assert Settings.from_env({}).spark_thin_tasks is True
    assert Settings.from_env({"ETL_SPARK_THIN_TASKS": "false"}).spark_thin_tasks is False

