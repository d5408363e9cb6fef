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
    """Number of distinct non-null ``column`` values per ``keys`` (two group-bys: the unique
    ``keys`` + ``column``, a group-by without aggregation (Spark: a hash aggregate, where
    narwhals' ``unique`` is a window's sort), then count)."""
    return (
        frame.filter(~nw.col(column).is_null())
        .group_by(*keys, column)
        .agg()
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


def _invoice_totals(lines: nw.LazyFrame, key: str, sums: dict[str, nw.Expr]) -> nw.LazyFrame:
    """Per ``key``: the sums of ``sums`` (name -> a per-line integer expression) and ``invoices``, the
    number of distinct non-null ``InvoiceNo`` among the lines where ``_counted`` (an integer 0/1
    column) is 1. Two group-bys, no join: per (``key``, ``InvoiceNo``), then per ``key`` (a group of a
    null ``InvoiceNo`` counts no invoice)."""
    per_invoice = (
        lines.with_columns(**sums)
        .group_by(key, "InvoiceNo")
        .agg(*[nw.col(name).sum() for name in sums], nw.col("_counted").max())
    )
    invoice = nw.when(~nw.col("InvoiceNo").is_null()).then(nw.col("_counted")).otherwise(nw.lit(0, nw.Int64))
    return (
        per_invoice.with_columns(invoice.alias("_invoice"))
        .group_by(key)
        .agg(*[nw.col(name).sum() for name in sums], nw.col("_invoice").sum().alias("invoices"))
    )


def sales_by_country(classified: nw.LazyFrame) -> nw.LazyFrame:
    """One row per country present in the lines (``classify``'d): sales and cancellations, 0 when none."""
    is_sale, is_cancel = nw.col("line_kind") == SALE, nw.col("line_kind") == CANCELLATION
    zero = nw.lit(0, nw.Int64)
    totals = _invoice_totals(classified.with_columns(is_sale.cast(nw.Int64).alias("_counted")), "Country", {
        "units": nw.when(is_sale).then(nw.col("Quantity").cast(nw.Int64)).otherwise(zero),
        "_milli": nw.when(is_sale).then(nw.col("_milli")).otherwise(zero),
        "_cancelled": is_cancel.cast(nw.Int64),
        "_cancelled_milli": nw.when(is_cancel).then(-nw.col("_milli")).otherwise(zero),
    })
    customers = _distinct_count(classified.filter(is_sale), ["Country"], "CustomerID", "customers")
    return totals.join(customers, on="Country", how="left").select(
        nw.col("Country").alias("country"),
        _int("invoices").alias("invoices"),
        _int("customers").alias("customers"),
        _int("units").alias("units"),
        _pounds(_int("_milli")).alias("revenue"),
        _int("_cancelled").alias("cancelled_lines"),
        _pounds(_int("_cancelled_milli")).alias("cancelled_value"),
    )


def sales_by_product(classified: nw.LazyFrame) -> nw.LazyFrame:
    """One row per ``StockCode`` with at least one sale line: units, revenue, distinct invoices."""
    sales = classified.filter(nw.col("line_kind") == SALE).with_columns(nw.lit(1, nw.Int64).alias("_counted"))
    totals = _invoice_totals(sales, "StockCode", {"units": nw.col("Quantity").cast(nw.Int64), "_milli": nw.col("_milli")})
    return totals.select(
        nw.col("StockCode").alias("stock_code"),
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
