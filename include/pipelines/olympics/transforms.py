"""The Olympics transformations, written once with narwhals for every engine.

Each function takes and returns narwhals lazy frames, so the same code runs on Dask and
PySpark (classic or Spark Connect) frames, and on pandas in the unit tests. Group-bys use
only simple sums (narwhals' Dask group-by accepts nothing more), so means are computed as
sum / count from derived indicator columns.
"""

from __future__ import annotations

import narwhals as nw

ENRICHED_EXTRA = ("region", "lon", "lat")
AVG_AGE_COLUMNS = ("year", "season", "avg_age", "n")
MEDALS_COLUMNS = ("year", "season", "region", "gold", "silver", "bronze", "total")
# The columns of ``enriched`` that the marts read: selecting them first lets every engine skip
# the rest (names, teams, events: most of the bytes) when it reads the Parquet files.
MART_INPUTS = ("Year", "Season", "Age", "Medal", "NOC", "region")


def enrich_athletes(athletes: nw.LazyFrame, regions: nw.LazyFrame, venues: nw.LazyFrame) -> nw.LazyFrame:
    """Every athlete row (left joins: none dropped, none duplicated) plus ``region``, ``lon``, ``lat``.

    ``regions`` and ``venues`` must be unique on their join keys; ingest guarantees it by
    rejecting duplicate keys.
    """
    regions = regions.select("NOC", "region")
    venues = venues.select("Year", "Season", "City", "lon", "lat")
    return athletes.join(regions, on="NOC", how="left").join(venues, on=["Year", "Season", "City"], how="left")


def avg_age_by_year(enriched: nw.LazyFrame) -> nw.LazyFrame:
    """Mean age per (year, season) over rows with an age; ``n`` counts those rows (0 -> null mean)."""
    age = nw.col("Age")
    per_games = (
        enriched.with_columns(
            _age=age.fill_null(0).cast(nw.Int64),
            _has_age=age.is_null().cast(nw.Int64) * -1 + 1,
        )
        .group_by("Year", "Season")
        .agg(nw.col("_age").sum(), nw.col("_has_age").sum())
    )
    n = nw.col("_has_age")
    return per_games.select(
        nw.col("Year").cast(nw.Int64).alias("year"),
        nw.col("Season").alias("season"),
        nw.when(n > 0).then(nw.col("_age").cast(nw.Float64) / n.cast(nw.Float64)).alias("avg_age"),
        n.cast(nw.Int64).alias("n"),
    )


def medals_by_region(enriched: nw.LazyFrame) -> nw.LazyFrame:
    """Medal counts per (year, season, region) over rows with a medal.

    ``region`` is the athlete's region, or the NOC code when the NOC is absent from the
    regions table or its region is missing.
    """
    medal = nw.col("Medal")
    counts = (
        enriched.filter(~medal.is_null())
        .with_columns(
            _region=nw.coalesce(nw.col("region"), nw.col("NOC")),
            _gold=(medal == "Gold").cast(nw.Int64),
            _silver=(medal == "Silver").cast(nw.Int64),
            _bronze=(medal == "Bronze").cast(nw.Int64),
        )
        .group_by("Year", "Season", "_region")
        .agg(nw.col("_gold").sum(), nw.col("_silver").sum(), nw.col("_bronze").sum())
    )
    return counts.select(
        nw.col("Year").cast(nw.Int64).alias("year"),
        nw.col("Season").alias("season"),
        nw.col("_region").alias("region"),
        nw.col("_gold").cast(nw.Int64).alias("gold"),
        nw.col("_silver").cast(nw.Int64).alias("silver"),
        nw.col("_bronze").cast(nw.Int64).alias("bronze"),
        (nw.col("_gold") + nw.col("_silver") + nw.col("_bronze")).cast(nw.Int64).alias("total"),
    )
