"""Jobs: the units of work that ``SparkJobOperator`` runs on a cluster.

A job is a plain function ``job(ctx: JobContext, **params) -> dict`` registered by name in
:data:`JOBS`. It reads and writes lake paths through ``ctx.engine`` and returns a small,
JSON-serialisable summary (paths and row counts) that becomes the task's XCom.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from include.etl.lake import Lake, check_ds


@dataclass(frozen=True)
class JobContext:
    engine: Any  # include.etl.engines.Engine
    lake: Lake
    ds: str
    max_reject_ratio: float = 0.01

    def __post_init__(self) -> None:
        check_ds(self.ds)


JOBS: dict[str, str] = {
    "noop": "include.etl.jobs.olympics:noop",
    "olympics.ingest": "include.etl.jobs.olympics:ingest",
    "olympics.enrich": "include.etl.jobs.olympics:enrich",
    "olympics.aggregate": "include.etl.jobs.olympics:aggregate",
}


def resolve_job(name: str) -> Callable[..., dict[str, Any]]:
    """The job function registered as ``name`` (or given as ``module:function``)."""
    target = JOBS.get(name, name)
    if ":" not in target:
        raise KeyError(f"unknown job {name!r}; registered jobs: {', '.join(sorted(JOBS))}")
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)
