"""The generic steps every pipeline reuses: ingest a declared input, run a transform into a
table, publish, and publish behind a quality gate.

Each step reads and writes the partitions of the run's ``ds`` in the job's pipeline lake
(``ctx.lake``) and publishes atomically (:func:`include.etl.lake.publish`): a failed step
discards its staging directories, so the previous partitions stay readable and unchanged.
Nothing heavy is imported at module level (DAG files import pipeline packages, which import
this module).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from include.etl import lake as lakelib
from include.etl.errors import DataError, InputFileError, RejectThresholdExceeded
from include.etl.jobs import JobContext
from include.etl.quality import Check, gate

log = logging.getLogger(__name__)

# narwhals 2.29 warns that Dask support will move to a separate `narwhals-dask` package,
# which is not published yet; narwhals is pinned, so the warning is noise for our users.
warnings.filterwarnings("ignore", message="Dask support is moving out of Narwhals", category=FutureWarning)


def ingest(ctx: JobContext, dataset: Any, source: str) -> dict[str, Any]:
    """Read ``source`` as declared by ``dataset`` into ``{lake}/{pipeline}/{table}/ds=..``.

    Rows breaking the contract go, with their reason, to ``{lake}/{pipeline}/_rejects/{table}/ds=..``.
    Fails, publishing nothing, when the file is unusable (:class:`InputFileError`) or its
    rejected share exceeds ``ctx.max_reject_ratio`` (:class:`RejectThresholdExceeded`; the
    staged rejects are kept for inspection). Header columns the contract does not declare are
    left out, logged and listed in the summary (``extra_columns``).
    """
    from include.etl.reader import read_header

    table = dataset.name
    lake = ctx.pipeline_lake
    header = read_header(source, dataset)
    extra = list(header.extra)
    if extra:
        log.warning("ingest %s: %s has columns the contract does not declare, left out: %s", table, source, extra)
    target, rejects_target = lake.partition(table, ctx.ds), lake.rejects(table, ctx.ds)
    staging, rejects_staging = lake.staging(target), lake.staging(rejects_target)
    try:
        prefix = f"{table} input {source}: "
        try:
            parsed = ctx.engine.read_csv(source, dataset, ds=ctx.ds, block_bytes=ctx.block_bytes)
            accepted, rejected = ctx.engine.write_split(parsed, str(staging), str(rejects_staging))
        except ValueError as exc:  # parser errors from the engine: name the file, keep a data error's class
            if str(exc).startswith(prefix):
                raise
            raise (type(exc) if isinstance(exc, DataError) else ValueError)(prefix + str(exc)) from exc
        rows_in = accepted + rejected
        log.info("ingest %s: %s rows read from %s, %s accepted, %s rejected", table, rows_in, source, accepted, rejected)
        if rows_in == 0:
            raise InputFileError(f"{table} input {source}: no data rows after the header")
        ratio = rejected / rows_in
        if ratio > ctx.max_reject_ratio:
            raise RejectThresholdExceeded(
                f"{table} input {source}: {rejected} of {rows_in} rows rejected ({ratio:.2%}), above the "
                f"limit of {ctx.max_reject_ratio:.2%} (ETL_MAX_REJECT_RATIO); nothing was published. "
                f"Reasons per row are in the staged rejects at {rejects_staging}"
            )
        lakelib.publish(staging, target)
        lakelib.publish(rejects_staging, rejects_target)
    except RejectThresholdExceeded:
        lakelib.discard(staging)
        raise
    except BaseException:
        lakelib.discard(staging)
        lakelib.discard(rejects_staging)
        raise
    if rejected:
        log.warning("ingest %s: %s rejected rows kept with their reason in %s", table, rejected, rejects_target)
    return {
        "table": table,
        "source": source,
        "path": str(target),
        "rows_in": rows_in,
        "rows_accepted": accepted,
        "rows_rejected": rejected,
        "rejects_path": str(rejects_target),
        "extra_columns": extra,
    }


def read_table(ctx: JobContext, table: str, columns: tuple[str, ...] | list[str] | None = None):
    """The run's partition of ``table`` as a narwhals lazy frame (optionally only ``columns``)."""
    import narwhals as nw

    frame = nw.from_native(ctx.engine.read_parquet(str(ctx.pipeline_lake.partition(table, ctx.ds))))
    return frame.select(*columns) if columns else frame


def write_table(ctx: JobContext, frame: Any, table: str) -> dict[str, Any]:
    """Write ``frame`` (native or narwhals) as the run's partition of ``table`` and publish it."""
    target = ctx.pipeline_lake.partition(table, ctx.ds)
    staging = ctx.pipeline_lake.staging(target)
    try:
        rows = ctx.engine.write_parquet(_native(frame), str(staging))
        lakelib.publish(staging, target)
    except BaseException:
        lakelib.discard(staging)
        raise
    return {"table": table, "path": str(target), "rows_out": rows}


def run_transform(ctx: JobContext, table: str, transform: Callable[..., Any], inputs: tuple[str, ...] | list[str],
                  ) -> dict[str, Any]:
    """``table = transform(*inputs)``: read the input tables, apply a narwhals transform, publish."""
    frames = [read_table(ctx, name) for name in inputs]
    summary = write_table(ctx, transform(*frames), table)
    log.info("%s: %s rows out to %s", table, summary["rows_out"], summary["path"])
    return summary


def publish_checked(ctx: JobContext, outputs: Mapping[str, Any], check: Check | None = None) -> dict[str, Any]:
    """Stage every table of ``outputs`` (name -> frame), run ``check`` on them, publish all or none.

    The frames are written in one pass where the engine can (Dask computes shared inputs once).
    ``check`` receives the staged tables as pandas frames and returns the problems it found; any
    problem raises :class:`~include.etl.errors.QualityCheckFailed` and nothing is published.
    Returns ``{table: {"path", "rows_out"}}``.
    """
    lake = ctx.pipeline_lake
    staged: dict[str, tuple[Path, Path]] = {}
    summary: dict[str, Any] = {}
    try:
        frames = {}
        for name, frame in outputs.items():
            target = lake.partition(name, ctx.ds)
            staged[name] = (lake.staging(target), target)
            frames[str(staged[name][0])] = _native(frame)
        rows = ctx.engine.write_parquets(frames)
        for name, (staging, target) in staged.items():
            log.info("%s: %s rows staged", name, rows[str(staging)])
            summary[name] = {"path": str(target), "rows_out": rows[str(staging)]}
        if check is not None:
            import pandas as pd

            gate(check({name: pd.read_parquet(staging) for name, (staging, _) in staged.items()}), ds=ctx.ds)
        for staging, target in staged.values():
            lakelib.publish(staging, target)
    except BaseException:
        for staging, _ in staged.values():
            lakelib.discard(staging)
        raise
    log.info("quality checks passed, published %s", ", ".join(staged))
    return summary


def _native(frame: Any) -> Any:
    to_native = getattr(frame, "to_native", None)
    return to_native() if callable(to_native) else frame
