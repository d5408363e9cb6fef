"""The retail transformations, written once with narwhals for every engine (Dask, Spark, pandas).

Money is computed exactly: ``UnitPrice`` has at most 3 decimals, so every line's value is a
whole number of thousandths of a pound (``_milli`` = ``Quantity`` x ``UnitPrice`` x 1000, an
integer), summed as integers, and published as pounds (the nearest double to the exact sum).
Distinct counts are two group-bys (unique keys, then count): narwhals' Dask group-by only takes
simple aggregations of one column.

Definitions (the marts' contract, see README.md):

* a **sale line**: ``InvoiceNo`` starts with neither ``C`` nor ``A``, ``Quantity > 0`` and
  ``UnitPrice > 0``; a **cancellation**: ``InvoiceNo`` starts with ``C``; an **adjustment**:
  ``InvoiceNo`` starts with ``A`` (bad-debt adjustments); **other**: every other line (zero
  prices, negative quantities that are not cancellations).
"""

from __future__ import annotations

from collections.abc import Sequence

import narwhals as nw

SALE, CANCELLATION, ADJUSTMENT, OTHER = "sale", "cancellation", "adjustment", "other"

SALES_BY_COUNTRY = ("country", "invoices", "customers", "units", "revenue", "cancelled_lines", "cancelled_value")
SALES_BY_PRODUCT = ("stock_code", "units", "revenue", "invoices")
# The columns of invoice_lines the marts need (readers skip the others).
MART_INPUTS = ("InvoiceNo", "StockCode", "Quantity", "UnitPrice", "CustomerID", "Country")


def _milli(price: nw.Expr) -> nw.Expr:
    """A price with at most 3 decimals as a whole number of thousandths (exact: rounding removes float noise)."""
    return (price.cast(nw.Float64) * 1000).round(0).cast(nw.Int64)


def classify(lines: nw.LazyFrame) -> nw.LazyFrame:
    """Add ``line_kind`` and ``_milli`` (the line's value in thousandths of a pound, an integer)."""
    invoice, qty, price = nw.col("InvoiceNo"), nw.col("Quantity"), nw.col("UnitPrice")
    kind = (
        nw.when(invoice.str.starts_with("C")).then(nw.lit(CANCELLATION))
        .when(invoice.str.starts_with("A")).then(nw.lit(ADJUSTMENT))
        .when((qty > 0) & (price > 0)).then(nw.lit(SALE))
        .otherwise(nw.lit(OTHER))
    )
    return lines.with_columns(kind.alias("line_kind"), (qty.cast(nw.Int64) * _milli(price)).alias("_milli"))


def _pounds(milli: nw.Expr) -> nw.Expr:
    return milli.cast(nw.Float64) / 1000


def enrich_lines(lines: nw.LazyFrame, countries: nw.LazyFrame) -> nw.LazyFrame:
    """Every invoice line (none dropped, none duplicated: the reference is unique on ``country``)
    plus ``line_total`` (``Quantity`` x ``UnitPrice``), ``line_kind``, ``iso_code`` and ``region``."""
    reference = countries.select(nw.col("country").alias("Country"), "iso_code", "region")
    classified = classify(lines)
    return (
        classified.join(reference, on="Country", how="left")
        .with_columns(_pounds(nw.col("_milli")).alias("line_total"))
        .select(*[c for c in lines.collect_schema().names()], "line_total", "line_kind", "iso_code", "region")
    )


def _distinct_count(frame: nw.LazyFrame, keys: Sequence[str], column: str, alias: str) -> nw.LazyFrame:
    """Number of distinct non-null ``column`` values per ``keys`` (two group-bys: unique, then count)."""
    return (
        frame.filter(~nw.col(column).is_null())
        .select(*keys, column)
        .unique()
        .group_by(*keys)
        .agg(nw.col(column).count().alias(alias))
    )


def _sale_totals(classified: nw.LazyFrame, key: str, alias: str) -> nw.LazyFrame:
    """Per ``key`` (renamed ``alias``): invoices, customers, units and revenue of the sale lines."""
    sales = classified.filter(nw.col("line_kind") == SALE)
    sums = sales.group_by(key).agg(nw.col("Quantity").sum().alias("units"), nw.col("_milli").sum())
    invoices = _distinct_count(sales, [key], "InvoiceNo", "invoices")
    customers = _distinct_count(sales, [key], "CustomerID", "customers")
    return (
        sums.join(invoices, on=key, how="left").join(customers, on=key, how="left")
        .select(nw.col(key).alias(alias), "invoices", "customers", "units", "_milli")
    )


def _int(name: str) -> nw.Expr:
    return nw.col(name).fill_null(0).cast(nw.Int64)


def sales_by_country(classified: nw.LazyFrame) -> nw.LazyFrame:
    """One row per country present in the lines (``classify``'d): sales and cancellations, 0 when none."""
    is_cancel = nw.col("line_kind") == CANCELLATION
    per_country = (
        classified.with_columns(
            is_cancel.cast(nw.Int64).alias("_cancelled"),
            nw.when(is_cancel).then(-nw.col("_milli")).otherwise(nw.lit(0, nw.Int64)).alias("_cancelled_milli"),
        )
        .group_by("Country")
        .agg(nw.col("_cancelled").sum(), nw.col("_cancelled_milli").sum())
        .rename({"Country": "country"})
    )
    totals = _sale_totals(classified, "Country", "country")
    return per_country.join(totals, on="country", how="left").select(
        nw.col("country"),
        _int("invoices").alias("invoices"),
        _int("customers").alias("customers"),
        _int("units").alias("units"),
        _pounds(_int("_milli")).alias("revenue"),
        _int("_cancelled").alias("cancelled_lines"),
        _pounds(_int("_cancelled_milli")).alias("cancelled_value"),
    )


def sales_by_product(classified: nw.LazyFrame) -> nw.LazyFrame:
    """One row per ``StockCode`` with at least one sale line: units, revenue, distinct invoices."""
    totals = _sale_totals(classified, "StockCode", "stock_code")
    return totals.select(
        nw.col("stock_code"),
        _int("units").alias("units"),
        _pounds(_int("_milli")).alias("revenue"),
        _int("invoices").alias("invoices"),
    )


def period_sales_by_country(classified: nw.LazyFrame, period_column: str, period: str) -> nw.LazyFrame:
    """One row per country present in a period's lines: ``period_column`` (the period's label,
    e.g. ``month`` = ``2011-01``), ``country``, and invoices, customers (distinct over the whole
    period), units and revenue of its sale lines, 0 when none."""
    countries = classified.select(nw.col("Country").alias("country")).unique()
    totals = _sale_totals(classified, "Country", "country")
    return countries.join(totals, on="country", how="left").select(
        nw.lit(period, nw.String).alias(period_column),
        nw.col("country"),
        _int("invoices").alias("invoices"),
        _int("customers").alias("customers"),
        _int("units").alias("units"),
        _pounds(_int("_milli")).alias("revenue"),
    )


def daily_activity(classified: nw.LazyFrame) -> nw.LazyFrame:
    """Per ``_day`` (a column the caller adds): revenue and invoices of sales, cancelled lines and value."""
    kind = nw.col("line_kind")
    per_day = classified.with_columns(
        nw.when(kind == SALE).then(nw.col("_milli")).otherwise(nw.lit(0, nw.Int64)).alias("_sale_milli"),
        (kind == CANCELLATION).cast(nw.Int64).alias("_cancelled"),
        nw.when(kind == CANCELLATION).then(-nw.col("_milli")).otherwise(nw.lit(0, nw.Int64)).alias("_cancelled_milli"),
    ).group_by("_day").agg(nw.col("_sale_milli").sum(), nw.col("_cancelled").sum(), nw.col("_cancelled_milli").sum())
    invoices = _distinct_count(classified.filter(kind == SALE), ["_day"], "InvoiceNo", "invoices")
    return per_day.join(invoices, on="_day", how="left").select(
        nw.col("_day").alias("day"),
        _pounds(_int("_sale_milli")).alias("revenue"),
        _int("invoices").alias("invoices"),
        _int("_cancelled").alias("cancelled_lines"),
        _pounds(_int("_cancelled_milli")).alias("cancelled_value"),
    )


def top_products(classified: nw.LazyFrame, kind: str = SALE) -> nw.LazyFrame:
    """Per ``StockCode`` over the lines of ``kind``: lines, units and value (for cancellations the
    value cancelled, positive), for the report's rankings (the caller takes the top rows)."""
    lines = classified.filter(nw.col("line_kind") == kind)
    sign = -1 if kind == CANCELLATION else 1
    return lines.with_columns(nw.lit(1, nw.Int64).alias("_n"), (nw.col("_milli") * sign).alias("_value")).group_by(
        "StockCode"
    ).agg(nw.col("_n").sum(), nw.col("Quantity").sum(), nw.col("_value").sum()).select(
        nw.col("StockCode").alias("stock_code"),
        _int("_n").alias("lines"),
        (_int("Quantity") * sign).alias("units"),
        _pounds(_int("_value")).alias("value"),
    )
