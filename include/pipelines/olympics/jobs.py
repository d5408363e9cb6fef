"""The Olympics jobs: ``olympics.enrich`` and ``olympics.aggregate``.

``olympics.ingest`` is the platform's generic ingest over :mod:`.datasets`, registered with the
pipeline (``include/pipelines/olympics/__init__.py``). The transforms (narwhals) are imported
inside the jobs: DAG parsing imports this module and must stay light.
"""

from __future__ import annotations

from typing import Any

from include.etl.jobs import JobContext, job, steps

MARTS = ("avg_age_by_year", "medals_by_region")


@job("olympics.enrich")
def enrich(ctx: JobContext) -> dict[str, Any]:
    """Join athletes with regions and venues into ``enriched`` (every athlete row kept)."""
    from include.pipelines.olympics.transforms import enrich_athletes

    return steps.run_transform(ctx, "enriched", enrich_athletes, ("athletes", "regions", "venues"))


@job("olympics.aggregate")
def aggregate(ctx: JobContext) -> dict[str, Any]:
    """Compute the marts ``avg_age_by_year`` and ``medals_by_region`` from ``enriched``.

    Both marts are staged, checked (:func:`.quality.check_marts`), and published only if every
    check passes; otherwise the previous partitions stay as they were.
    """
    from include.pipelines.olympics.quality import check_marts
    from include.pipelines.olympics.transforms import MART_INPUTS, avg_age_by_year, medals_by_region

    lake = ctx.pipeline_lake
    source = lake.table_uri("enriched")
    enriched = steps.read_table(ctx, "enriched", MART_INPUTS)

    def check(marts) -> list[str]:
        return check_marts(marts["avg_age_by_year"], marts["medals_by_region"], lake.row_count("enriched", ctx.ds))

    outputs = {"avg_age_by_year": avg_age_by_year(enriched), "medals_by_region": medals_by_region(enriched)}
    return {"source": str(source), **steps.publish_checked(ctx, outputs, check)}
