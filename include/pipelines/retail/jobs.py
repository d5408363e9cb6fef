"""The retail jobs. DAG parsing imports this module: narwhals, pandas and the transforms are
imported inside the jobs only.

Daily (``dags/retail_daily.py``), for the run's day ``ds``:

* ``retail.ingest_day(source)``: the landing file -> ``invoice_lines`` (+ ``_rejects/invoice_lines``)
  through the platform's generic ingest and the contract :data:`.datasets.INVOICE_LINES`;
* ``retail.enrich``: ``invoice_lines`` + the shipped country reference -> ``enriched_lines``;
* ``retail.marts``: ``invoice_lines`` -> ``sales_by_country``, ``sales_by_product``, checked
  before they are published;
* ``retail.empty_day(path, deadline, decided)``: no file by the deadline: empty partitions of
  every table (in the task's process, no cluster).

Rollup (``dags/retail_monthly.py``), for a period (a month, or a week in the tests):

* ``retail.check_period(period, partition_key)``: which of the period's days are published
  (in the task's process);
* ``retail.rollup(period)``: the period's ``invoice_lines`` partitions ->
  ``monthly_sales_by_country`` (distinct counts over the whole period) and ``report.html``
  beside it, checked against the daily marts before they are published.

Each job's summary carries ``asset_events`` (the ``extra`` of its tables' asset events, see
``etl_platform.operators.partitioned``); a daily run that replaced a day published before also
asks for an event on :data:`include.pipelines.retail.RERUN_URI`, which re-runs the day's period.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from include.etl import lake as lakelib
from include.etl.errors import InputFileError
from include.etl.jobs import JobContext, job, steps
from include.pipelines.retail.datasets import (
    COUNTRIES,
    COUNTRIES_FILE,
    DAILY_MARTS,
    INVOICE_LINES,
    TABLE_SCHEMAS,
)
from include.pipelines.retail.periods import mart_table, period_column, period_days, period_label

log = logging.getLogger(__name__)

# The tables whose asset events a daily run emits (the reject table has none of its own).
DAILY_ASSETS = ("invoice_lines", "enriched_lines", *DAILY_MARTS)
# The daily asset the rollup waits for, and the marker of a rollup run caused by a re-run day.
ROLLUP_SOURCE = "sales_by_country"
RERUN_SUFFIX = "re-run"


def _rerun_events(ctx: JobContext, replaced: bool, **extra: Any) -> dict[str, Any]:
    from include.pipelines.retail import RERUN_ALIAS, RERUN_URI

    if not replaced:
        return {}
    log.info("ds=%s had been published before: this run replaced it, so its period's rollup runs again", ctx.ds)
    return {RERUN_ALIAS: [{"uri": RERUN_URI, "extra": {"ds": ctx.ds, "replaced": True, **extra}}]}


def read_days(lake: lakelib.Lake, table: str, days: list[str]):
    """The daily partitions of ``table`` for ``days`` as one pandas frame of the table's declared
    schema (:data:`TABLE_SCHEMAS`), in this process: small tables (the daily marts of a period)."""
    import pyarrow.dataset as pads

    from include.etl.landing import schema

    files = [lake.engine_path(f) for f in lake.files(table, days)]
    return pads.dataset(files, schema=schema(TABLE_SCHEMAS[table]), format="parquet",
                        filesystem=lake.root.filesystem()).to_table().to_pandas()


@job("retail.ingest_day")
def ingest_day(ctx: JobContext, *, source: str) -> dict[str, Any]:
    """The day's landing file -> ``invoice_lines`` (rejected lines kept aside with their reason)."""
    summary = steps.ingest(ctx, INVOICE_LINES, source)
    summary["asset_events"] = {"invoice_lines": {
        "ds": ctx.ds, "rows": summary["rows_accepted"], "rows_in": summary["rows_in"],
        "rejected": summary["rows_rejected"], "source": source, "empty_day": False,
    }}
    return summary


def read_countries(ctx: JobContext):
    """The shipped country reference, read through its contract on the engine (accepted rows only)."""
    import narwhals as nw

    parsed = steps.lazy(ctx.engine.read_csv(str(COUNTRIES_FILE), COUNTRIES))
    return parsed.filter(nw.col("_reason").is_null()).select(*COUNTRIES.names)


def reference_countries() -> list[str]:
    """The reference's country names, read in this process (for the checks)."""
    import csv

    with open(COUNTRIES_FILE, newline="", encoding="utf-8") as f:
        return [row["country"] for row in csv.DictReader(f)]


@job("retail.enrich")
def enrich(ctx: JobContext) -> dict[str, Any]:
    """``invoice_lines`` -> ``enriched_lines``: line_total, line_kind, iso_code and region."""
    from include.pipelines.retail.transforms import enrich_lines

    lines, countries = steps.together(ctx, steps.read_table(ctx, "invoice_lines"), read_countries(ctx))
    summary = steps.write_table(ctx, enrich_lines(lines, countries), "enriched_lines")
    log.info("enriched_lines: %s rows out to %s", summary["rows_out"], summary["path"])
    summary["asset_events"] = {"enriched_lines": {"ds": ctx.ds, "rows": summary["rows_out"], "empty_day": False}}
    return summary


@job("retail.marts")
def marts(ctx: JobContext) -> dict[str, Any]:
    """``invoice_lines`` -> ``sales_by_country`` and ``sales_by_product``, both or neither published."""
    from include.pipelines.retail.quality import check_daily_marts, unknown_countries
    from include.pipelines.retail.transforms import MART_INPUTS, classify, sales_by_country, sales_by_product

    lake = ctx.pipeline_lake
    source = lake.table_uri("invoice_lines")
    lines = lake.row_count("invoice_lines", ctx.ds)
    rejected = lake.row_count(lake.rejects("invoice_lines"), ctx.ds)
    replaced = lake.has_partition(ROLLUP_SOURCE, ctx.ds)
    classified = classify(steps.read_table(ctx, "invoice_lines", MART_INPUTS))
    outputs = {"sales_by_country": sales_by_country(classified), "sales_by_product": sales_by_product(classified)}

    def check(staged) -> list[str]:
        unknown = unknown_countries(staged["sales_by_country"]["country"], reference_countries())
        if unknown:
            log.warning("countries missing from the shipped reference (no ISO code or region in enriched_lines): %s "
                        "- add them to include/pipelines/retail/countries.csv", unknown)
        return check_daily_marts(staged, lines)

    published = steps.publish_checked(ctx, outputs, check)
    events = {table: {"ds": ctx.ds, "rows": published[table]["rows_out"], "invoice_lines": lines, "rejected": rejected,
                      "empty_day": False} for table in DAILY_MARTS}
    return {"source": str(source), **published, "replaced": replaced, "asset_events": events,
            "alias_events": _rerun_events(ctx, replaced)}


@job("retail.empty_day")
def empty_day(ctx: JobContext, *, path: str, deadline: str, decided: str = "") -> dict[str, Any]:
    """No landing file by the deadline: a day without trading. Empty partitions of every table."""
    from include.etl.landing import publish_empty

    lake = ctx.pipeline_lake
    replaced = lake.has_partition(ROLLUP_SOURCE, ctx.ds)
    reason = (f"no landing file {path} by its deadline {deadline}" + (f" ({decided})" if decided else "")
              + ": a day without trading, published as empty partitions")
    log.warning("ds=%s: %s", ctx.ds, reason)
    paths = publish_empty(lake, ctx.ds, TABLE_SCHEMAS)
    events = {table: {"ds": ctx.ds, "rows": 0, "rejected": 0, "empty_day": True, "reason": reason}
              for table in DAILY_ASSETS}
    return {"empty_day": True, "reason": reason, "paths": paths, "replaced": replaced, "asset_events": events,
            "alias_events": _rerun_events(ctx, replaced, empty_day=True)}


@job("retail.check_period")
def check_period(ctx: JobContext, *, period: str, partition_key: str = "") -> dict[str, Any]:
    """Which days of the period containing ``ds`` have their daily partitions.

    A rollup run (the period complete in Airflow's eyes, or a manual run) fails naming the
    missing days (a data error: the task fails at once, without retries); a run caused by a
    re-run day (``partition_key`` ending in ``re-run``) of a period not complete yet is
    skipped: its rollup comes when the period is complete.
    """
    from include.pipelines.retail.periods import day_ranges

    lake = ctx.pipeline_lake
    days = period_days(period, ctx.ds)
    label = period_label(period, ctx.ds)
    published = [lake.published_days(t) for t in ("invoice_lines", ROLLUP_SOURCE)]
    missing = [d for d in days if not all(d in p for p in published)]
    rerun = partition_key.strip().endswith(RERUN_SUFFIX)
    summary = {"ds": days[0], "period": period, "label": label, "days": days, "complete": not missing,
               "missing": missing, "rerun": rerun}
    if missing and not rerun:
        raise InputFileError(
            f"the {period} {label} ({days[0]} to {days[-1]}) is not complete: {len(missing)} of its {len(days)} days "
            f"lack their daily partitions in {lake.root.join(lake.domain)}: {day_ranges(missing)}. Run retail_daily for "
            f"those days first (a day without a landing file publishes empty partitions), then this {period} again")
    if missing:
        summary["reason"] = (f"a day of the {period} {label} was re-run, but the {period} is not complete yet (no daily "
                             f"partitions for {day_ranges(missing)}): its rollup runs once every day is in")
    else:
        summary["reason"] = f"every day of the {period} {label} is published" + (" (a day was re-run)" if rerun else "")
    log.info("%s", summary["reason"])
    return summary


@job("retail.rollup")
def rollup(ctx: JobContext, *, period: str) -> dict[str, Any]:
    """The period's ``invoice_lines`` -> ``<period>ly_sales_by_country`` + ``report.html``, checked, published together."""
    import narwhals as nw
    import pandas as pd

    from include.etl.landing import schema as arrow_schema
    from include.etl.quality import gate
    from include.pipelines.retail.quality import check_period_mart
    from include.pipelines.retail.report import PRODUCT_CODE, best_description, render
    from include.pipelines.retail.transforms import (
        CANCELLATION,
        MART_INPUTS,
        SALE,
        classify,
        daily_activity,
        period_sales_by_country,
        top_products,
    )

    lake = ctx.pipeline_lake
    days = period_days(period, ctx.ds)
    if days[0] != ctx.ds:
        raise ValueError(f"a {period} rollup runs for the first day of its {period} ({days[0]}), not ds={ctx.ds}")
    table, label, column = mart_table(period), period_label(period, ctx.ds), period_column(period)
    published = lake.row_counts("invoice_lines")
    counts = {d: published.get(d, 0) for d in days}
    trading = [d for d in days if counts[d]]
    # The period's partitions in one read, as the table's declared schema (whatever each day's
    # files say about their types), in few engine partitions rather than one per day. ``_day``:
    # the line's InvoiceDate day, its partition's day (a rule of the contract).
    fs = lake.filesystem()
    lines = steps.lazy(ctx.engine.read_parquets([lake.engine_path(f) for f in lake.files("invoice_lines", days)],
                                                    arrow_schema(TABLE_SCHEMAS["invoice_lines"]), filesystem=fs))
    classified = classify(lines.select(*MART_INPUTS, "Description",
                                       nw.col("InvoiceDate").dt.to_string("%Y-%m-%d").alias("_day")))
    mart = period_sales_by_country(classified, column, label)

    def collect(frame) -> pd.DataFrame:
        return frame.collect(backend="pandas").to_native().reset_index(drop=True)

    staging = lake.stage(table, ctx.ds)
    try:
        rows = ctx.engine.write_parquets({lake.engine_path(staging): mart.to_native()}, filesystem=fs)[
            lake.engine_path(staging)]
        staged = steps.read_staged(lake, staging)
        daily = read_days(lake, ROLLUP_SOURCE, days)
        gate(check_period_mart(table, staged, daily), ds=ctx.ds)
        # The report's figures: the period's classified lines once from the engine (a month is at
        # most ~100k small rows), then the same narwhals transforms on pandas.
        local = nw.from_native(collect(classified.select(
            "_day", "InvoiceNo", "StockCode", "Description", "Quantity", "CustomerID", "Country", "line_kind", "_milli",
        ))).lazy()
        activity = collect(daily_activity(local))
        products = collect(top_products(local, SALE)).sort_values(["value", "stock_code"], ascending=[False, True])
        cancelled = collect(top_products(local, CANCELLATION)).sort_values(["value", "stock_code"],
                                                                           ascending=[False, True])
        goods = products[products["stock_code"].astype(str).str.match(PRODUCT_CODE)]
        shown = sorted(set(goods["stock_code"].head(10)) | set(cancelled["stock_code"].head(10)))
        described = collect(
            local.filter(nw.col("StockCode").is_in(shown) & ~nw.col("Description").is_null())
            .select("StockCode", "Description").unique()
        )
        descriptions = {code: best_description(g["Description"].astype(str)) for code, g in described.groupby("StockCode")}
        customers = len(collect(
            local.filter((nw.col("line_kind") == SALE) & ~nw.col("CustomerID").is_null()).select("CustomerID").unique()
        ))
        unknown = collect(local.filter((nw.col("line_kind") == SALE) & nw.col("CustomerID").is_null()).select("_milli"))
        title = f"Retail sales, {period} {label}"
        html = render(title=title, period_label=label, days=days, daily=activity, mart=staged, top_products=products,
                      cancelled_products=cancelled, descriptions=descriptions, customers=customers,
                      unknown_customer=(len(unknown), int(unknown["_milli"].sum()) / 1000),
                      generated=dt.datetime.now(dt.UTC))
        version = lake.commit(table, ctx.ds, staging)["version"]
    except BaseException:
        lake.discard(staging)
        raise
    report = lake.write_report(table, ctx.ds, "report.html", html)
    log.info("%s ds=%s: %s rows, %s of %s days with trading; report %s", table, ctx.ds, rows, len(trading), len(days),
             report)
    extra = {"period": label, "ds": ctx.ds, "rows": rows, "days": len(days), "trading_days": len(trading),
             "empty_days": len(days) - len(trading), "invoice_lines": sum(counts.values()), "report": str(report)}
    return {"table": table, "path": lake.table_uri(table), "version": version, "rows_out": rows, "report": str(report), "days": days,
            "trading_days": trading, "asset_events": {table: extra}}


__all__ = ["check_period", "empty_day", "enrich", "ingest_day", "marts", "rollup"]
