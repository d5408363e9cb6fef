"""Run a job's driver on a Dask worker, where pandas, dask.dataframe and the job code are already imported.

A task process submits :func:`run_job_on_worker` through a ``distributed`` client instead of
planning the job itself. The worker (whose imports the cluster's preload warmed) runs the job
with a client of its own and returns the job's summary, its log records and its own time.

Isolation and cancellation, per job:

* the driver ``secede``\\ s from the worker's thread pool, so it does not hold a worker thread
  while its tasks run, and opens its **own** client: the job's graphs belong to that client;
* when the driver's future is cancelled (``on_kill``, or the task's client disconnected: a
  SIGKILLed task process), a watcher thread sees the worker's task state turn ``cancelled`` and
  closes the job's client;
  the scheduler then releases that client's futures (only those: other jobs on the same cluster
  keep theirs) and the driver's ``compute`` ends with an error. A task that is mid-way keeps its
  worker thread until it returns (Python code cannot be interrupted), so a job's tasks should be
  short.

Several drivers may plan in one worker process at once: :func:`allow_concurrent_cached_property`
gives the worker Python 3.12's lock-free ``cached_property`` first (why: docs/runtime.md,
"Dask cluster notes").

This module imports nothing heavy at import time: the task process imports it to name the
function it submits.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any


def allow_concurrent_cached_property() -> bool:
    """Python 3.12's lock-free ``functools.cached_property.__get__`` in this process (Python < 3.12 only).

    Returns True when it patched (idempotent). See the module's docstring for the deadlock it avoids.
    """
    import functools

    if sys.version_info >= (3, 12) or getattr(functools.cached_property.__get__, "_etl_unlocked", False):
        return False
    missing = object()

    def __get__(self, instance, owner=None):  # noqa: N807 - CPython 3.12's Lib/functools.py, verbatim in behaviour
        if instance is None:
            return self
        if self.attrname is None:
            raise TypeError("Cannot use cached_property instance without calling __set_name__ on it.")
        try:
            cache = instance.__dict__
        except AttributeError:
            raise TypeError(f"No '__dict__' attribute on {type(instance).__name__!r} instance to cache "
                            f"{self.attrname!r} property.") from None
        val = cache.get(self.attrname, missing)
        if val is missing:
            val = self.func(instance)
            try:
                cache[self.attrname] = val
            except TypeError:
                raise TypeError(f"The '__dict__' attribute on {type(instance).__name__!r} instance does not support "
                                f"item assignment for caching {self.attrname!r} property.") from None
        return val

    __get__._etl_unlocked = True
    functools.cached_property.__get__ = __get__
    return True


def _client_security(worker):
    """A client's security for the job's driver on ``worker``: on a TLS cluster (dask-gateway), the
    worker's own certificate; else none."""
    from distributed.security import Security

    sec = worker.security
    if not sec.require_encryption:
        return None
    return Security(require_encryption=True, tls_ca_file=sec.tls_ca_file, tls_client_cert=sec.tls_worker_cert,
                    tls_client_key=sec.tls_worker_key)


def run_job_on_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """On a Dask worker: run the job of ``spec`` (a :class:`~include.etl.jobs.spec.JobSpec` as a dict)
    with a client of its own; the answer of :func:`~include.etl.jobs.spec.run_spec`, plus ``worker``."""
    from distributed import Client, get_worker, secede
    from distributed.worker import thread_state

    from include.etl.engines.dask import DaskEngine
    from include.etl.jobs.spec import JobSpec, run_spec

    allow_concurrent_cached_property()  # before this driver builds any dask-expr expression
    job = JobSpec.from_dict(spec)
    worker = get_worker()
    key = thread_state.key
    secede()  # waiting on its own tasks must not hold one of the worker's threads
    done = threading.Event()
    clients: list[Any] = []

    def engine() -> DaskEngine:
        client = Client(worker.scheduler.address, security=_client_security(worker), set_as_default=False,
                        name=job.key or key, timeout=30)
        clients.append(client)

        def watch() -> None:
            while not done.wait(0.2):
                state = worker.state.tasks.get(key)
                if state is None or state.state in ("cancelled", "released", "forgotten"):
                    logging.getLogger(__name__).warning("job %s (%s) was cancelled: closing its client", job.job, key)
                    client.close(timeout=5)
                    return

        threading.Thread(target=watch, name=f"etl-cancel-watch-{key}", daemon=True).start()
        return DaskEngine(client)

    try:
        return {**run_spec(job, engine_factory=engine), "worker": worker.address}
    finally:
        done.set()
        for client in clients:
            client.close(timeout=5)
