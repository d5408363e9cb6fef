"""The NZ trade transformations, written once with narwhals for every engine.

Each function takes and returns narwhals lazy frames, so the same code runs on Dask and on
PySpark (Spark Connect) frames, and on pandas in the unit tests. Two engine limits shape it:

* narwhals' Dask group-by takes only simple one-column aggregations (``sum``, ``count``, ...),
  so the row count is the sum of a derived column of ones;
* narwhals' ``cast(nw.Int64)`` on Dask turns a nullable Arrow ``int64`` into NumPy's (which
  holds no nulls), so integers are never cast: ingest types them as int64 on both engines and
  sums keep that type (a cast of ``previous_value``, null in a series' first year, would fail);
* narwhals cannot truncate a date to its month on Dask (``dt.truncate("1mo")``) nor parse a
  string to a date there (``str.to_date``), so ``month`` is the date formatted as
  ``%Y-%m-01`` and parsed back as a datetime, then cast to a date: the same on every engine.
"""

from __future__ import annotations

import narwhals as nw

# The series a row belongs to (the file has one row per day and series).
SERIES = ("Direction", "Measure", "Country", "Commodity", "Transport_Mode")
# The marts' key columns: the series, in lower case.
KEYS = ("direction", "measure", "country", "commodity", "transport_mode")
ENRICHED_EXTRA = ("month", "is_total", "breakdown")
MONTHLY_COLUMNS = (*KEYS, "month", "value", "days")
YEARLY_COLUMNS = (*KEYS, "year", "value", "previous_value", "change_pct")
# The columns of ``enriched`` the marts read: every engine then skips the rest of the files.
MART_INPUTS = (*SERIES, "Year", "month", "Value")
ALL = "All"  # Country, Commodity and Transport_Mode of a total row


def _series_keys() -> list[nw.Expr]:
    return [nw.col(src).alias(dst) for src, dst in zip(SERIES, KEYS, strict=True)]


def enrich_trade(trade: nw.LazyFrame) -> nw.LazyFrame:
    """Every typed row plus ``month`` (the first day of its month, a date), ``is_total`` and ``breakdown``.

    ``is_total``: the row is the total of its direction and measure (``Country``, ``Commodity``
    and ``Transport_Mode`` all ``All``). ``breakdown``: which dimensions the row breaks the
    total down by: ``total``, ``country``, ``commodity``, ``transport_mode`` or
    ``country_commodity``. Rows of different breakdowns overlap: summing across them double-counts.
    """
    country, commodity, mode = (nw.col(c) != ALL for c in ("Country", "Commodity", "Transport_Mode"))
    return trade.with_columns(
        month=nw.col("Date").dt.to_string("%Y-%m-01").str.to_datetime("%Y-%m-%d").cast(nw.Date),
        is_total=~(country | commodity | mode),
        breakdown=nw.when(country & commodity).then(nw.lit("country_commodity"))
        .when(country).then(nw.lit("country"))
        .when(commodity).then(nw.lit("commodity"))
        .when(mode).then(nw.lit("transport_mode"))
        .otherwise(nw.lit("total")),
    )


def monthly_trade(enriched: nw.LazyFrame) -> nw.LazyFrame:
    """Per series and month: ``value`` = sum of ``Value`` over the month's rows, ``days`` = their number."""
    per_month = (
        enriched.with_columns(_one=nw.lit(1, nw.Int64))
        .group_by(*SERIES, "month")
        .agg(nw.col("Value").sum(), nw.col("_one").sum())
    )
    return per_month.select(
        *_series_keys(),
        "month",
        nw.col("Value").alias("value"),
        nw.col("_one").alias("days"),
    )


def yearly_change(enriched: nw.LazyFrame) -> nw.LazyFrame:
    """Per series and calendar year: ``value``, the previous year's ``previous_value`` and ``change_pct``.

    ``previous_value`` is null when the series has no row in the previous year; ``change_pct`` =
    100 * (value - previous_value) / previous_value, null when ``previous_value`` is null or 0.
    ``Year`` is the year of ``Date`` (a rule of the contract: rows where they differ are rejected).
    """
    yearly = (
        enriched.group_by(*SERIES, "Year")
        .agg(nw.col("Value").sum())
        .select(*_series_keys(), nw.col("Year").alias("year"), nw.col("Value").alias("value"))
    )
    previous = yearly.select(*KEYS, (nw.col("year") + 1).alias("year"), nw.col("value").alias("previous_value"))
    joined = yearly.join(previous, on=[*KEYS, "year"], how="left")
    prev = nw.col("previous_value")
    return joined.select(
        *KEYS,
        "year",
        "value",
        prev,
        nw.when(prev != 0)
        .then((nw.col("value") - prev).cast(nw.Float64) * 100.0 / prev.cast(nw.Float64))
        .alias("change_pct"),
    )
