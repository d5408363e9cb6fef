"""Jobs: the units of work that ``SparkJobOperator`` runs on a cluster, and the pipelines they belong to.

A job is a plain function ``job(ctx: JobContext, **params) -> dict``. It reads and writes lake
paths through ``ctx.engine`` and ``ctx.lake`` and returns a small, JSON-serialisable summary
(paths and row counts) that becomes the task's XCom.

The platform keeps no list of pipelines. A pipeline is a package ``include/pipelines/<name>/``
that registers itself when imported::

    # include/pipelines/<name>/__init__.py
    PIPELINE = register_pipeline("<name>", datasets=DATASETS, inputs={"<table>": "<name>/<file>.csv"})

    # include/pipelines/<name>/jobs.py
    @PIPELINE.job("enrich")            # registered as "<name>.enrich"
    def enrich(ctx): ...

:func:`register_pipeline` also registers ``<name>.ingest``, the platform's generic ingest step
(:func:`include.etl.jobs.steps.ingest`) over the pipeline's declared datasets. Job names are
``<pipeline>.<job>``: :func:`resolve_job` imports ``include.pipelines.<pipeline>`` the first time
one of its jobs is asked for, which registers them. A job runs with the lake of its pipeline
(``{lake}/{pipeline}/...``). Two other forms exist: a name without a dot is a generic platform
job (``noop``), and ``module:function`` names any function (a job outside ``include/pipelines``
gets no lake: ``ctx.lake`` is None).

Nothing here imports pandas, Dask, PySpark or narwhals: DAG files import pipeline packages at
parse time (for their default inputs), so a pipeline's job modules import those lazily too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from include.etl.lake import Lake, check_ds
from include.etl.settings import DEFAULT_BLOCK_BYTES

PIPELINES_PACKAGE = "include.pipelines"  # where pipeline packages live: include/pipelines/<name>/

JobFunction = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class JobContext:
    """What a job receives: the engine, its pipeline's lake, the run's ``ds`` and the ingest limits."""

    engine: Any  # include.etl.engines.Engine
    lake: Lake | None  # the lake of the job's pipeline (domain = pipeline name); None outside a pipeline
    ds: str
    max_reject_ratio: float = 0.01
    block_bytes: int = DEFAULT_BLOCK_BYTES  # bytes per parse block of an ingest (ETL_INGEST_BLOCK_BYTES)

    def __post_init__(self) -> None:
        check_ds(self.ds)
        if not 0 <= self.max_reject_ratio <= 1:
            raise ValueError(f"max_reject_ratio={self.max_reject_ratio} must be between 0 and 1")
        if not isinstance(self.block_bytes, int) or self.block_bytes < 1:
            raise ValueError(f"block_bytes={self.block_bytes!r} must be a whole number of bytes >= 1")

    @property
    def pipeline_lake(self) -> Lake:
        """``lake``, or an error saying the job has none (it was not registered under a pipeline)."""
        if self.lake is None:
            raise RuntimeError(
                "this job has no lake: only jobs of a pipeline (registered as '<pipeline>.<job>' or defined "
                f"under {PIPELINES_PACKAGE}.<pipeline>) read and write lake tables"
            )
        return self.lake


@dataclass(frozen=True)
class Job:
    """A registered job: its name, function, and the pipeline whose lake it uses (None: generic)."""

    name: str
    func: JobFunction
    pipeline: str | None = None

    def context(self, *, engine: Any, lake_root: str | Path, ds: str, max_reject_ratio: float = 0.01,
                block_bytes: int = DEFAULT_BLOCK_BYTES, run: Mapping[str, Any] | None = None) -> JobContext:
        """The context of one run of this job; ``lake_root`` is ``ETL_LAKE_URI`` (or a path), ``run`` who
        runs it (``dag_id``, ``run_id``, ``task_id``, ``try_number``: recorded in every lake commit)."""
        lake = Lake(lake_root, self.pipeline, run=dict(run or {})) if self.pipeline else None
        return JobContext(engine=engine, lake=lake, ds=ds, max_reject_ratio=max_reject_ratio, block_bytes=block_bytes)

    def __call__(self, ctx: JobContext, **kwargs: Any) -> dict[str, Any]:
        return self.func(ctx, **kwargs)


@dataclass(frozen=True)
class Pipeline:
    """A pipeline's registration: its name (= lake domain), declared input datasets and default inputs.

    :param datasets: the contracts of its inputs (:class:`include.etl.contract.Dataset`) by table name.
    :param inputs: default input file of each dataset, relative to ``ETL_DATA_DIR`` (absolute paths
        are kept); the DAG offers them as trigger-form defaults.
    """

    name: str
    datasets: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"pipeline name {self.name!r} must be an identifier (it names a package and a lake domain)")
        for table, dataset in self.datasets.items():
            if getattr(dataset, "name", table) != table:
                raise ValueError(f"pipeline {self.name!r}: dataset registered as {table!r} is named {dataset.name!r}")
        unknown = sorted(set(self.inputs) - set(self.datasets))
        if unknown:
            raise ValueError(f"pipeline {self.name!r}: default inputs for undeclared datasets {unknown}")

    def job(self, name: str) -> Callable[[JobFunction], JobFunction]:
        """Decorator: register a function as the job ``<pipeline>.<name>``."""
        return job(f"{self.name}.{name}")

    def dataset(self, table: str) -> Any:
        try:
            return self.datasets[table]
        except KeyError:
            raise KeyError(f"pipeline {self.name!r} declares no dataset {table!r}; "
                           f"declared: {', '.join(sorted(self.datasets)) or 'none'}") from None

    def input_path(self, table: str, data_dir: str | Path) -> str:
        """The default input of ``table``, resolved under ``data_dir`` (``ETL_DATA_DIR``)."""
        if table not in self.inputs:
            raise KeyError(f"pipeline {self.name!r} has no default input for {table!r}")
        return str(Path(data_dir) / self.inputs[table])

    def default_inputs(self, data_dir: str | Path) -> dict[str, str]:
        return {table: self.input_path(table, data_dir) for table in self.inputs}


JOBS: dict[str, Job] = {}
PIPELINES: dict[str, Pipeline] = {}


def _origin(func: Any) -> tuple[str, str]:
    return getattr(func, "__module__", "?"), getattr(func, "__qualname__", repr(func))


def _register(name: str, func: JobFunction, pipeline: str | None) -> JobFunction:
    known = JOBS.get(name)
    # The same function again (a module imported twice, a reload) replaces itself; another one is a clash.
    if known is not None and known.func != func and _origin(known.func) != _origin(func):
        raise ValueError(f"job {name!r} is already registered to {'.'.join(_origin(known.func))}")
    JOBS[name] = Job(name, func, pipeline)
    return func


def job(name: str) -> Callable[[JobFunction], JobFunction]:
    """Decorator: register a function as job ``name``; ``<pipeline>.<job>`` runs on that pipeline's lake."""
    pipeline, dot, rest = name.partition(".")
    if not dot or not pipeline.isidentifier() or not rest:
        raise ValueError(f"job name {name!r} must be '<pipeline>.<job>'")

    def register(func: JobFunction) -> JobFunction:
        return _register(name, func, pipeline)

    return register


def register_pipeline(name: str, *, datasets: Mapping[str, Any] | Any = (), inputs: Mapping[str, str] | None = None,
                      description: str = "") -> Pipeline:
    """Register a pipeline (called by its package's ``__init__``) and its ``<name>.ingest`` job.

    ``datasets`` is a mapping of table name to :class:`~include.etl.contract.Dataset`, or an
    iterable of datasets (keyed by their names).
    """
    if not isinstance(datasets, Mapping):
        datasets = {d.name: d for d in datasets}
    pipeline = Pipeline(name, dict(datasets), dict(inputs or {}), description)
    known = PIPELINES.get(name)
    if known is not None and known != pipeline:
        raise ValueError(f"pipeline {name!r} is already registered with other datasets or inputs")
    PIPELINES[name] = pipeline
    if pipeline.datasets:
        _register(f"{name}.ingest", _IngestJob(name), name)
    return pipeline


@dataclass(frozen=True)
class _IngestJob:
    """``<pipeline>.ingest(table=..., source=...)``: the generic ingest of one declared dataset."""

    pipeline: str

    def __call__(self, ctx: JobContext, *, table: str, source: str) -> dict[str, Any]:
        from include.etl.jobs.steps import ingest

        return ingest(ctx, get_pipeline(self.pipeline).dataset(table), source)


def noop(ctx: JobContext) -> dict[str, Any]:
    """Smallest possible job: one trivial task on the cluster (measures per-task overhead)."""
    ctx.engine.run_noop()
    return {"job": "noop"}


JOBS["noop"] = Job("noop", noop, None)


def _load_pipeline(name: str) -> None:
    """Import ``include.pipelines.<name>`` (which registers its jobs); a missing package is not an error here."""
    module = f"{PIPELINES_PACKAGE}.{name}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name not in (module, PIPELINES_PACKAGE):
            raise  # the package exists but one of its imports is missing: show that


def get_pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        _load_pipeline(name)
    try:
        return PIPELINES[name]
    except KeyError:
        raise KeyError(f"unknown pipeline {name!r}: no package {PIPELINES_PACKAGE}.{name} registers it "
                       f"(registered: {', '.join(sorted(PIPELINES)) or 'none'})") from None


def get_job(name: str) -> Job:
    """The job registered as ``name`` (``<pipeline>.<job>``, a generic job, or ``module:function``)."""
    if name in JOBS:
        return JOBS[name]
    if ":" in name:
        module, _, func = name.partition(":")
        target = getattr(importlib.import_module(module), func)
        pipeline = None
        parts = module.split(".")
        prefix = PIPELINES_PACKAGE.split(".")
        if parts[: len(prefix)] == prefix and len(parts) > len(prefix):
            pipeline = parts[len(prefix)]
        return Job(name, target, pipeline)
    pipeline, dot, _ = name.partition(".")
    if dot:
        _load_pipeline(pipeline)
        if name in JOBS:
            return JOBS[name]
    raise KeyError(f"unknown job {name!r}; registered jobs: {', '.join(sorted(JOBS))} (a job '<pipeline>.<job>' "
                   f"is registered by the package {PIPELINES_PACKAGE}.<pipeline>; or give 'module:function')")


def resolve_job(name: str) -> Job:
    """The job registered as ``name``, callable as ``job(ctx, **kwargs)`` (see :func:`get_job`)."""
    return get_job(name)
