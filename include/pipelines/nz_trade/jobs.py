"""The NZ trade jobs: ``nz_trade.enrich`` and ``nz_trade.marts``.

``nz_trade.ingest`` is the platform's generic ingest over :mod:`.datasets`, registered with the
pipeline (``include/pipelines/nz_trade/__init__.py``). The transforms (narwhals) and checks are
imported inside the jobs: DAG parsing imports this module and must stay light.
"""

from __future__ import annotations

from typing import Any

from include.etl.jobs import JobContext, job, steps

MARTS = ("monthly_trade", "yearly_change")


@job("nz_trade.enrich")
def enrich(ctx: JobContext) -> dict[str, Any]:
    """The typed ``trade`` rows plus ``month``, ``is_total`` and ``breakdown``, as ``enriched``."""
    from include.pipelines.nz_trade.transforms import enrich_trade

    return steps.run_transform(ctx, "enriched", enrich_trade, ("trade",))


def _source(ctx: JobContext) -> Any:
    """Row count and first/last ``Date`` of the published ``enriched`` partition (read locally, one column)."""
    import pyarrow.compute as pc

    from include.pipelines.nz_trade.quality import Source

    lake = ctx.pipeline_lake
    dates = lake.read_arrow("enriched", ctx.ds, columns=["Date"]).column("Date")
    bounds = pc.min_max(dates).as_py()
    return Source(rows=lake.row_count("enriched", ctx.ds), first=bounds["min"], last=bounds["max"])


@job("nz_trade.marts")
def marts(ctx: JobContext) -> dict[str, Any]:
    """Compute ``monthly_trade`` and ``yearly_change`` from ``enriched``; publish both only if
    every check of :func:`.quality.check_marts` passes (otherwise the previous partitions stay)."""
    from include.pipelines.nz_trade.quality import check_marts
    from include.pipelines.nz_trade.transforms import MART_INPUTS, monthly_trade, yearly_change

    path = ctx.pipeline_lake.table_uri("enriched")
    source = _source(ctx)
    enriched = steps.read_table(ctx, "enriched", MART_INPUTS)
    outputs = {"monthly_trade": monthly_trade(enriched), "yearly_change": yearly_change(enriched)}
    summary = steps.publish_checked(ctx, outputs, lambda tables: check_marts(tables, source))
    return {"source": str(path), "source_rows": source.rows, "first_date": str(source.first),
            "last_date": str(source.last), **summary}
