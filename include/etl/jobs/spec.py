"""One job, described once, and one way to run it: every path that runs a job uses these.

A :class:`JobSpec` is what a job task hands to wherever the job's driver runs: in the task
process (:meth:`ClusterHook.run_job`), on a Dask worker (submitted through a ``distributed``
client), or in a ``spark-submit`` application. It travels as JSON (:meth:`JobSpec.to_dict` / :meth:`JobSpec.from_dict`).
:func:`run_spec` runs it and answers in the one wire format of every path:
``{"summary", "elapsed_s", "logs"}`` or ``{"error", "elapsed_s", "logs"}``, the error encoded by
:func:`include.etl.jobs.errors.encode` (the task process raises it again, as the same class
for a data error, which is never retried). A new field of the job's context is a new field here.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from include.etl.settings import DEFAULT_BLOCK_BYTES

JOB_LOGGER = "include"  # the records of the job's code (include.*) go back to the task's log


@dataclass
class JobSpec:
    job: str  # a registered job's name, or "module:function"
    ds: str
    lake_root: str  # ETL_LAKE_URI, or a path
    job_kwargs: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)  # dag_id, run_id, task_id, try_number: in every lake commit
    max_reject_ratio: float = 0.01
    block_bytes: int = DEFAULT_BLOCK_BYTES
    key: str = ""  # unique per job: cancellation (the Dask future's key)

    @classmethod
    def for_task(cls, settings: Any, job: str, job_kwargs: dict[str, Any] | None, ds: str,
                 run: dict[str, Any] | None = None) -> JobSpec:
        """The spec of a task's job, with the lake and limits of ``settings`` and a new key."""
        key = f"etl-job-{re.sub(r'[^A-Za-z0-9._-]+', '_', job).strip('_')}-{uuid.uuid4().hex[:12]}"
        return cls(job=job, ds=ds, lake_root=str(settings.lake_uri), job_kwargs=dict(job_kwargs or {}),
                   run=dict(run or {}), max_reject_ratio=settings.max_reject_ratio,
                   block_bytes=settings.ingest_block_bytes, key=key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """The spec of ``data``; a :class:`ValueError` naming what is missing or unknown."""
        if not isinstance(data, dict):
            raise ValueError(f"not a job spec: {data!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("job", "ds", "lake_root") if n not in data]
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"not a job spec: {'missing ' + ', '.join(missing) if missing else ''}"
                             f"{'; ' if missing and unknown else ''}{'unknown ' + ', '.join(unknown) if unknown else ''}")
        return cls(**data)

    def run_on(self, engine: Any) -> dict[str, Any]:
        """Run the job on ``engine`` in this thread; its summary (its error is raised)."""
        from include.etl.jobs import get_job

        registered = get_job(self.job)
        ctx = registered.context(engine=engine, lake_root=self.lake_root, ds=self.ds, run=self.run,
                                 max_reject_ratio=self.max_reject_ratio, block_bytes=self.block_bytes)
        return registered(ctx, **self.job_kwargs)


class LogCapture(logging.Handler):
    """The records logged by one thread (the job's driver) below :data:`JOB_LOGGER`, for the task's log."""

    def __init__(self, thread: int | None = None) -> None:
        super().__init__(logging.INFO)
        self.thread = threading.get_ident() if thread is None else thread
        self.records: list[tuple[float, int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            try:
                self.records.append((record.created, record.levelno, record.name, record.getMessage()))
            except Exception:  # noqa: BLE001 - a bad log call must not fail the job
                pass

    def __enter__(self) -> LogCapture:
        logger = logging.getLogger(JOB_LOGGER)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger(JOB_LOGGER).removeHandler(self)


def run_spec(spec: JobSpec, engine: Any | None = None, *, engine_factory: Any = None,
             on_error: Any = None) -> dict[str, Any]:
    """Run ``spec`` in this thread and answer in the wire format (never raises but for ``BaseException``
    subclasses that are not errors of the job, which are encoded too).

    :param engine: the engine to run on, or ``engine_factory()`` makes it (inside the capture, so
        that opening a session is part of the job and its errors are the job's).
    :param on_error: ``on_error(exc) -> exc``: the error to report instead (e.g. a cancellation's).
    """
    from include.etl.jobs.errors import encode

    t0 = time.perf_counter()
    with LogCapture() as capture:
        try:
            result: dict[str, Any] = {"summary": spec.run_on(engine if engine is not None else engine_factory())}
        except BaseException as exc:  # noqa: BLE001 - reported to the task process, which raises it again
            result = {"error": encode(on_error(exc) if on_error else exc)}
    result["elapsed_s"] = round(time.perf_counter() - t0, 3)
    result["logs"] = capture.records
    return result
