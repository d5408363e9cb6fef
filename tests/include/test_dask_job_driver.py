"""Job drivers on a Dask worker (include/etl/clusters/dask_jobs.py): several at once in one process, and
one of them cancelled while the other runs on.

On Python < 3.12 ``functools.cached_property`` holds one lock per class attribute while it
computes; dask-expr computes ``_meta`` of nested expressions through it, so two drivers
planning in one worker process deadlocked (seen in a year's backfill: two ``marts`` jobs on one
worker, blocked for good). ``allow_concurrent_cached_property`` gives the process Python 3.12's
lock-free ``__get__``; a driver applies it before it runs.
"""

from __future__ import annotations

import functools
import sys
import threading
import time

import pytest

from include.etl.clusters import dask_jobs
from include.etl.jobs.spec import JobSpec


def _crossed_properties(timeout: float) -> dict | None:
    """Two threads: one computes ``P.x``, which needs ``Q.y`` of another object, the other computes
    ``Q.y``, which needs ``P.x`` of a third; both enter their property before either goes on.
    With the 3.11 lock (one per class attribute) each holds the lock the other waits for. Fresh
    classes per call, so a deadlocked pair keeps only its own locks. The values, or None if stuck."""
    gate = threading.Barrier(2)

    class P:
        def __init__(self, q=None, outer=False):
            self.q, self.outer = q, outer

        @functools.cached_property
        def x(self):
            if self.outer:
                gate.wait(timeout)
            return 0 if self.q is None else 1 + self.q.y

    class Q:
        def __init__(self, p, outer=False):
            self.p, self.outer = p, outer

        @functools.cached_property
        def y(self):
            if self.outer:
                gate.wait(timeout)
            return 1 + self.p.x

    q = Q(P(), outer=True)  # q.y needs a P.x (a leaf)
    p = P(q=Q(P()), outer=True)  # p.x needs another Q.y
    results: dict = {}
    threads = [threading.Thread(target=lambda: results.setdefault("x", p.x), daemon=True),
               threading.Thread(target=lambda: results.setdefault("y", q.y), daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * 2)
    return None if any(t.is_alive() for t in threads) else results


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12+ has no cached_property lock")
def test_crossed_cached_properties_deadlock_with_the_lock_and_not_without(monkeypatch):
    monkeypatch.setattr(functools.cached_property, "__get__", functools.cached_property.__get__)  # restored after
    assert _crossed_properties(2.0) is None, "the 3.11 lock did not deadlock: this test would prove nothing"
    assert dask_jobs.allow_concurrent_cached_property() is True
    assert dask_jobs.allow_concurrent_cached_property() is False  # idempotent
    assert _crossed_properties(5.0) == {"x": 2, "y": 1}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as c:
        yield c


def test_two_drivers_on_one_worker_both_succeed(client):
    specs = [JobSpec(job="tests.fixtures.jobs:sleep_on_cluster", job_kwargs={"seconds": 1}, ds="2024-07-01",
                     lake_root="/nonexistent", max_reject_ratio=0.0, block_bytes=1 << 20, key=name)
             for name in ("job-a", "job-b")]
    futures = [client.submit(dask_jobs.run_job_on_worker, spec.to_dict(), key=spec.key, pure=False) for spec in specs]
    results = client.gather(futures)
    assert [r.get("error") for r in results] == [None, None], [r.get("traceback") for r in results]
    assert [r["summary"] for r in results] == [{"slept": 1}] * 2


def _wait(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s"
        time.sleep(0.1)
    return value


def test_a_submitted_driver_runs_on_a_worker_and_cancelling_it_cancels_only_that_job(client):
    """As the hook submits a job: its driver's future, cancelled (``on_kill``), ends that job and not another."""
    def submit(key: str, seconds: int):
        spec = JobSpec(job="tests.fixtures.jobs:sleep_on_cluster", job_kwargs={"seconds": seconds}, ds="2024-07-01",
                       lake_root="/nonexistent", key=key).to_dict()
        return client.submit(dask_jobs.run_job_on_worker, spec, key=key, pure=False, retries=0)

    def on_workers() -> list[str]:  # what holds a worker thread: drivers (seceded) and their tasks
        return [k for keys in client.run(lambda dask_worker: [str(ts.key) for ts in (
            *dask_worker.state.executing, *dask_worker.state.long_running)]).values() for k in keys]

    done = submit("driver-ok", 1).result()
    assert done["summary"] == {"slept": 1} and done["worker"] and {"elapsed_s", "logs"} <= set(done), done
    killed, other = submit("driver-killed", 60), submit("driver-other", 3)
    _wait(lambda: {"driver-killed", "driver-other"} <= set(on_workers()))
    t0 = time.monotonic()
    killed.cancel()
    _wait(lambda: "driver-killed" not in on_workers())
    assert time.monotonic() - t0 < 10
    assert other.result(timeout=30)["summary"] == {"slept": 3}  # the other job ran on
    _wait(lambda: not [k for k in on_workers() if k.startswith(("driver-", "sleep-"))])
