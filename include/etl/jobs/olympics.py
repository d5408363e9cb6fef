"""The Olympics jobs: ingest each input, enrich the athletes, aggregate the marts."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from include.etl import lake as lakelib
from include.etl.jobs import JobContext
from include.etl.parse import check_header
from include.etl.schemas import SCHEMAS
from include.etl.transforms import MART_INPUTS, avg_age_by_year, enrich_athletes, medals_by_region

log = logging.getLogger(__name__)

# narwhals 2.29 warns that Dask support will move to a separate `narwhals-dask` package,
# which is not published yet; narwhals is pinned, so the warning is noise for our users.
warnings.filterwarnings("ignore", message="Dask support is moving out of Narwhals", category=FutureWarning)

MARTS = ("avg_age_by_year", "medals_by_region")


class RejectThresholdExceeded(ValueError):
    """Too large a share of an input's rows was rejected; nothing was published."""


def noop(ctx: JobContext) -> dict[str, Any]:
    """Smallest possible job: one trivial task on the cluster (measures per-task overhead)."""
    ctx.engine.run_noop()
    return {"job": "noop"}


def ingest(ctx: JobContext, *, table: str, source: str) -> dict[str, Any]:
    """Parse ``source`` into ``{lake}/olympics/{table}/ds=..``; rejected rows go to ``_rejects``.

    Fails, publishing nothing, when the file is unusable or its rejected share exceeds
    ``ctx.max_reject_ratio``.
    """
    schema = SCHEMAS[table]
    check_header(source, schema)
    target, rejects_target = ctx.lake.partition(table, ctx.ds), ctx.lake.rejects(table, ctx.ds)
    staging, rejects_staging = ctx.lake.staging(target), ctx.lake.staging(rejects_target)
    try:
        parsed = ctx.engine.read_csv(source, schema)
        try:
            accepted, rejected = ctx.engine.write_split(parsed, str(staging), str(rejects_staging))
        except ValueError as exc:  # parser errors from the engine: name the file
            raise ValueError(f"{table} input {source}: {exc}") from exc
        rows_in = accepted + rejected
        log.info("ingest %s: %s rows read from %s, %s accepted, %s rejected", table, rows_in, source, accepted, rejected)
        if rows_in == 0:
            raise ValueError(f"{table} input {source}: no data rows after the header")
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
    }


def _narwhals(frame: Any):
    import narwhals as nw

    return nw.from_native(frame)


def enrich(ctx: JobContext) -> dict[str, Any]:
    """Join athletes with regions and venues into ``enriched`` (every athlete row kept)."""
    frames = {t: ctx.engine.read_parquet(str(ctx.lake.partition(t, ctx.ds))) for t in ("athletes", "regions", "venues")}
    enriched = enrich_athletes(*(_narwhals(frames[t]) for t in ("athletes", "regions", "venues")))
    target = ctx.lake.partition("enriched", ctx.ds)
    rows = _write(ctx, enriched.to_native(), target)
    log.info("enrich: %s rows out to %s", rows, target)
    return {"table": "enriched", "path": str(target), "rows_out": rows}


def aggregate(ctx: JobContext) -> dict[str, Any]:
    """Compute the marts ``avg_age_by_year`` and ``medals_by_region`` from ``enriched``.

    Both marts are written to staging, checked (:mod:`include.etl.quality`), and published
    only if every check passes; otherwise the previous partitions stay as they were.
    """
    import pandas as pd

    from include.etl.quality import QualityCheckFailed, check_marts

    source = ctx.lake.partition("enriched", ctx.ds)
    enriched = _narwhals(ctx.engine.read_parquet(str(source))).select(*MART_INPUTS)
    summary: dict[str, Any] = {"source": str(source)}
    staged: dict[str, tuple[Any, Any]] = {}
    try:
        frames = {}
        for name, transform in (("avg_age_by_year", avg_age_by_year), ("medals_by_region", medals_by_region)):
            target = ctx.lake.partition(name, ctx.ds)
            staged[name] = (ctx.lake.staging(target), target)
            frames[str(staged[name][0])] = transform(enriched).to_native()
        # Both marts in one pass where the engine can (Dask reads ``enriched`` once for the two).
        rows = ctx.engine.write_parquets(frames)
        for name, (staging, target) in staged.items():
            log.info("aggregate: %s rows of %s staged", rows[str(staging)], name)
            summary[name] = {"path": str(target), "rows_out": rows[str(staging)]}
        enriched_rows = lakelib.row_count(source)
        marts = {name: pd.read_parquet(staging) for name, (staging, _) in staged.items()}
        problems = check_marts(marts["avg_age_by_year"], marts["medals_by_region"], enriched_rows)
        if problems:
            raise QualityCheckFailed(
                f"quality checks failed for ds={ctx.ds}, nothing published (the previous marts stay): " + "; ".join(problems)
            )
        for staging, target in staged.values():
            lakelib.publish(staging, target)
    except BaseException:
        for staging, _ in staged.values():
            lakelib.discard(staging)
        raise
    log.info("aggregate: quality checks passed, published %s", ", ".join(staged))
    return summary


def _write(ctx: JobContext, frame: Any, target) -> int:
    staging = ctx.lake.staging(target)
    try:
        rows = ctx.engine.write_parquet(frame, str(staging))
        lakelib.publish(staging, target)
    except BaseException:
        lakelib.discard(staging)
        raise
    return rows
