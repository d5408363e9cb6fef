"""Run a job's driver on a Dask worker, where pandas, dask.dataframe and the job code are already imported.

A job task's process would otherwise import ``dask.dataframe`` and pandas (about 1-2 s, more
under load) only to plan a few tasks, on every task. Instead the task process (through
``DaskClusterHook.run_job``) imports only ``distributed``'s client and submits
:func:`run_job_on_worker`; the worker (whose imports the cluster's preload warmed) runs the
job with a client of its own and returns the job's summary, its log records and its own time.

Isolation and cancellation, per job:

* the driver ``secede``\\ s from the worker's thread pool, so it does not hold a worker thread
  while its tasks run, and opens its **own** client: the job's graphs belong to that client;
* when the task's future is cancelled (the Airflow task was killed: ``on_kill`` cancels it, or
  its client disconnected), a watcher thread sees the worker's task state turn ``cancelled``
  and closes the job's client; the scheduler then releases that client's futures (only those:
  other jobs on the same, possibly shared, cluster keep theirs) and the driver's ``compute``
  ends with an error. Python code already running in a worker thread cannot be interrupted: a
  task that is mid-way keeps its thread until it returns (a run's own cluster is stopped by its
  teardown anyway).

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
import time
from typing import Any

JOB_LOGGER = "include"  # the platform's and the pipelines' code log below it


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


class _Capture(logging.Handler):
    """Keeps the records logged by one thread (the job's driver), for the Airflow task log."""

    def __init__(self, thread: int) -> None:
        super().__init__(logging.INFO)
        self.thread = thread
        self.records: list[tuple[float, int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            try:
                self.records.append((record.created, record.levelno, record.name, record.getMessage()))
            except Exception:  # noqa: BLE001 - a bad log call must not fail the job
                pass


def _client_security(worker):
    """A client's security for the job's driver on ``worker``: on a TLS cluster (dask-gateway), the
    worker's own certificate; else none."""
    from distributed.security import Security

    sec = worker.security
    if not sec.require_encryption:
        return None
    return Security(require_encryption=True, tls_ca_file=sec.tls_ca_file, tls_client_cert=sec.tls_worker_cert,
                    tls_client_key=sec.tls_worker_key)


def run_job_on_worker(job: str, job_kwargs: dict[str, Any], ds: str, *, lake_root: str, max_reject_ratio: float,
                      block_bytes: int, client_name: str, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """On a Dask worker: run the registered ``job`` for ``ds`` with a client of its own.

    Returns ``{"summary", "elapsed_s", "worker", "logs"}``, or ``{"error", "elapsed_s", "worker", "logs"}``
    when the job raised: ``error`` is :func:`include.etl.jobs.errors.encode` of the exception
    (class, message, whole traceback), which the task process raises again.
    """
    from distributed import Client, get_worker, secede
    from distributed.worker import thread_state

    from include.etl.engines.dask import DaskEngine
    from include.etl.jobs import get_job
    from include.etl.jobs.errors import encode

    allow_concurrent_cached_property()  # before this driver builds any dask-expr expression
    worker = get_worker()
    key = thread_state.key
    capture = _Capture(threading.get_ident())
    job_logger = logging.getLogger(JOB_LOGGER)
    if job_logger.getEffectiveLevel() > logging.INFO:
        job_logger.setLevel(logging.INFO)
    job_logger.addHandler(capture)
    secede()  # waiting on its own tasks must not hold one of the worker's threads
    done = threading.Event()
    client = None
    t0 = time.perf_counter()
    try:
        client = Client(worker.scheduler.address, security=_client_security(worker), set_as_default=False,
                        name=client_name, timeout=30)

        def watch() -> None:
            while not done.wait(0.2):
                state = worker.state.tasks.get(key)
                if state is None or state.state in ("cancelled", "released", "forgotten"):
                    logging.getLogger(__name__).warning("job %s (%s) was cancelled: closing its client", job, key)
                    client.close(timeout=5)
                    return

        threading.Thread(target=watch, name=f"etl-cancel-watch-{key}", daemon=True).start()
        registered = get_job(job)
        ctx = registered.context(engine=DaskEngine(client), lake_root=lake_root, ds=ds, run=run,
                                 max_reject_ratio=max_reject_ratio, block_bytes=block_bytes)
        summary = registered(ctx, **job_kwargs)
        return {"summary": summary, "elapsed_s": round(time.perf_counter() - t0, 3), "worker": worker.address,
                "logs": capture.records}
    except BaseException as exc:  # noqa: BLE001 - reported to the task process, which re-raises it
        return {"error": encode(exc), "worker": worker.address,
                "elapsed_s": round(time.perf_counter() - t0, 3), "logs": capture.records}
    finally:
        done.set()
        job_logger.removeHandler(capture)
        if client is not None:
            client.close(timeout=5)
