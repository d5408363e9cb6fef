"""The generic steps every pipeline reuses: ingest a declared input, run a transform into a
table, publish, and publish behind a quality gate.

Each step reads and writes the ``ds`` partitions of its pipeline's Delta tables (``ctx.lake``,
:mod:`include.etl.lake`): outputs are staged, checked, then committed; a failed step commits
nothing, so every table keeps its version and rows.
Nothing heavy is imported at module level (DAG files import pipeline packages, which import
this module).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from include.etl.errors import DataError, InputFileError, RejectThresholdExceeded
from include.etl.jobs import JobContext
from include.etl.quality import Check, gate

log = logging.getLogger(__name__)

# narwhals 2.29 warns that Dask support will move to a separate `narwhals-dask` package,
# which is not published yet; narwhals is pinned, so the warning is noise for our users.
warnings.filterwarnings("ignore", message="Dask support is moving out of Narwhals", category=FutureWarning)


def ingest(ctx: JobContext, dataset: Any, source: str) -> dict[str, Any]:
    """Read ``source`` as declared by ``dataset`` into the ``ds`` partition of ``{pipeline}/{table}``.

    Rows breaking the contract go, with their reason, to ``{pipeline}/_rejects/{table}``; rows the
    contract drops as exact copies (``duplicates="drop_exact"``) are counted (``duplicates_dropped``:
    ``rows_in = rows_accepted + rows_rejected + duplicates_dropped``, also in the table's commit
    metadata and its asset event's extra); both
    tables are committed together once the reject share is known. Fails, publishing nothing,
    when the file is unusable (:class:`InputFileError`) or its rejected share exceeds
    ``ctx.max_reject_ratio`` (:class:`RejectThresholdExceeded`; the staged rejects are kept for
    inspection). Header columns the contract does not declare are left out, logged and listed
    in the summary (``extra_columns``).
    """
    from include.etl.reader import read_header

    table = dataset.name
    lake = ctx.pipeline_lake
    header = read_header(source, dataset)
    extra = list(header.extra)
    if extra:
        log.warning("ingest %s: %s has columns the contract does not declare, left out: %s", table, source, extra)
    rejects_table = lake.rejects(table)
    staging, rejects_staging = lake.stage(table, ctx.ds), lake.stage(rejects_table, ctx.ds)
    fs = lake.filesystem()
    try:
        prefix = f"{table} input {source}: "
        try:
            parsed = ctx.engine.read_csv(source, dataset, ds=ctx.ds, block_bytes=ctx.block_bytes)
            accepted, rejected, *rest = ctx.engine.write_split(parsed, lake.engine_path(staging),
                                                               lake.engine_path(rejects_staging), filesystem=fs)
            dropped = int(rest[0]) if rest else 0
        except ValueError as exc:  # parser errors from the engine: name the file, keep a data error's class
            if str(exc).startswith(prefix):
                raise
            raise (type(exc) if isinstance(exc, DataError) else ValueError)(prefix + str(exc)) from exc
        rows_in = accepted + rejected + dropped
        log.info("ingest %s: %s rows read from %s, %s accepted, %s rejected, %s dropped as exact copies",
                 table, rows_in, source, accepted, rejected, dropped)
        if rows_in == 0:
            raise InputFileError(f"{table} input {source}: no data rows after the header")
        ratio = rejected / rows_in
        if ratio > ctx.max_reject_ratio:
            raise RejectThresholdExceeded(
                f"{table} input {source}: {rejected} of {rows_in} rows rejected ({ratio:.2%}), above the "
                f"limit of {ctx.max_reject_ratio:.2%} (ETL_MAX_REJECT_RATIO); nothing was published. "
                f"Reasons per row are in the staged rejects at {rejects_staging}"
            )
        counts = {"rows_in": rows_in, "rows_accepted": accepted, "rows_rejected": rejected, "duplicates_dropped": dropped}
        committed = lake.commit(table, ctx.ds, staging, metadata={"source": source, **counts})
        lake.commit(rejects_table, ctx.ds, rejects_staging, metadata={"source": source})
    except RejectThresholdExceeded:
        lake.discard(staging)
        raise
    except BaseException:
        lake.discard(staging)
        lake.discard(rejects_staging)
        raise
    if rejected:
        log.warning("ingest %s: %s rejected rows kept with their reason in %s (ds=%s)", table, rejected,
                    lake.table_uri(rejects_table), ctx.ds)
    return {
        "table": table,
        "source": source,
        "path": lake.table_uri(table),
        "version": committed["version"],
        **counts,
        "rejects_path": lake.table_uri(rejects_table),
        "extra_columns": extra,
        # the extra of the table's asset event, when a DAG has it as an outlet (rows_in = the other three)
        "asset_events": {table: {"ds": ctx.ds, "source": source, **counts}},
    }


def lazy(native: Any):
    """A narwhals lazy frame over an engine's native frame (the Dask engine's one-partition inputs are pandas frames)."""
    import narwhals as nw

    frame = nw.from_native(native)
    return frame.lazy() if isinstance(frame, nw.DataFrame) else frame


def together(ctx: JobContext, *frames: Any) -> list[Any]:
    """Frames a job read (narwhals), on one backend so that they can be joined: read them, then pass
    them through here (the Dask engine reads an input of one partition as a pandas frame, a larger
    one as a Dask frame)."""
    return [lazy(f) for f in ctx.engine.align([_native(f) for f in frames])]


def read_table(ctx: JobContext, table: str, columns: tuple[str, ...] | list[str] | None = None, *,
               exact_types: bool = False):
    """The run's partition of ``table`` as a narwhals lazy frame: what this run staged for it, else its
    latest published version. ``exact_types``: every column exactly as the table's schema says, on
    Dask as Arrow-backed columns (nullable integers stay integers, nested values stay Arrow lists
    and structs, timestamps keep their time zone); otherwise Dask reads NumPy types."""
    lake = ctx.pipeline_lake
    files = [lake.engine_path(f) for f in lake.files(table, ctx.ds)]
    read = ctx.engine.read_parquets if exact_types else ctx.engine.read_parquet
    frame = lazy(read(files, lake.schema(table, ctx.ds), filesystem=lake.filesystem()))
    return frame.select(*columns) if columns else frame


def read_exploded(ctx: JobContext, table: str, column: str, columns: tuple[str, ...] | list[str] | None = None):
    """:func:`read_table` with one row per element of the nested list ``column`` (empty lists give no
    row); a struct element's fields become columns ``<column>_<field>``. ``columns``: the other
    columns to keep (default all)."""
    lake = ctx.pipeline_lake
    list_type = lake.schema(table, ctx.ds).field(column).type
    frame = read_table(ctx, table, (*columns, column) if columns else None, exact_types=True)
    return lazy(ctx.engine.explode(frame.to_native(), column, list_type))


def write_table(ctx: JobContext, frame: Any, table: str) -> dict[str, Any]:
    """Write ``frame`` (native or narwhals) as the run's partition of ``table`` and publish it."""
    return publish_checked(ctx, {table: frame})[table]


def run_transform(ctx: JobContext, table: str, transform: Callable[..., Any], inputs: tuple[str, ...] | list[str],
                  ) -> dict[str, Any]:
    """``table = transform(*inputs)``: read the input tables, apply a narwhals transform, publish."""
    frames = together(ctx, *[read_table(ctx, name) for name in inputs])
    summary = write_table(ctx, transform(*frames), table)
    log.info("%s: %s rows out to %s", table, summary["rows_out"], summary["path"])
    return summary


def publish_checked(ctx: JobContext, outputs: Mapping[str, Any], check: Check | None = None) -> dict[str, Any]:
    """Stage every table of ``outputs`` (name -> frame), run ``check`` on them, publish all or none.

    The frames are written in one pass where the engine can (Dask computes shared inputs once).
    ``check`` receives the staged tables as pandas frames and returns the problems it found; any
    problem raises :class:`~include.etl.errors.QualityCheckFailed` and nothing is published.
    Returns ``{table: {"table", "path", "rows_out", "version"}}``.
    """
    lake = ctx.pipeline_lake
    staged = {name: lake.stage(name, ctx.ds) for name in outputs}
    summary: dict[str, Any] = {}
    try:
        frames = {lake.engine_path(staged[name]): _native(frame) for name, frame in outputs.items()}
        rows = ctx.engine.write_parquets(frames, filesystem=lake.filesystem())
        for name, uri in staged.items():
            log.info("%s: %s rows staged", name, rows[lake.engine_path(uri)])
            summary[name] = {"table": name, "path": lake.table_uri(name), "rows_out": rows[lake.engine_path(uri)]}
        if check is not None:
            gate(check({name: read_staged(lake, uri) for name, uri in staged.items()}), ds=ctx.ds)
        for name, uri in staged.items():
            summary[name]["version"] = lake.commit(name, ctx.ds, uri)["version"]
    except BaseException:
        for uri in staged.values():
            lake.discard(uri)
        raise
    log.info("quality checks passed, published %s", ", ".join(staged))
    return summary


def read_staged(lake: Any, staged: str) -> Any:
    """A staged directory's Parquet files as one pandas frame, in this process (for the checks)."""
    import pyarrow.dataset as pads

    return pads.dataset(lake.engine_path(staged), format="parquet", partitioning=None,
                        filesystem=lake.root.filesystem()).to_table().to_pandas()


def _native(frame: Any) -> Any:
    to_native = getattr(frame, "to_native", None)
    return to_native() if callable(to_native) else frame
