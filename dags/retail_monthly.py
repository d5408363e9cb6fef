"""
### Retail, monthly: runs on data, not on a clock

`monthly_sales_by_country` (`month, country, invoices, customers, units, revenue`) and a report
page, once **every day of a month** has its `sales_by_country` partition from `retail_daily`
(days without trading included: they publish empty partitions), and again when a day of a
month already rolled up is re-run.

**Schedule:** `PartitionedAssetTimetable` on `lake://retail/sales_by_country` with
`RollupMapper(StartOfMonthMapper, MonthWindow, WaitForAll)`: the run's partition key is the
month (`2011-01`). A re-run day emits `lake://retail/daily_reruns`, mapped to the key
`2011-01 re-run`: that run recomputes the month if it is complete (else it is skipped, the
month's rollup comes when its last day is in).

**Run a month by hand:** **Trigger** → **Single Run** → **Advanced Options** → **Partition Key**:
the month as `YYYY-MM` (`2011-11`) → **Trigger**. Airflow refuses any other form of key (400, "is
invalid for this timetable's mappers"), a day (`2011-11-05`) or `2011-11 re-run` too. If every day
of the month is in the lake the run (re)computes it; if not, `check_period` fails at once,
without retries, naming the missing days: run them in `retail_daily` first. A run without a
Partition Key fails at once too. One month per run: this DAG's **Backfill** option is greyed
out ("This Dag's schedule does not support backfills").

**Paused means not told:** Airflow does not queue an asset event for a paused DAG at all, and
unpausing brings nothing back: a day published while this DAG is paused never counts towards its
month. So the DAG is created *unpaused* (it runs on data only: unpaused it does nothing until a
month is complete). After a pause (or on an installation where it was created paused), run by
hand, as above, each month whose days were published while it was paused.

**Tasks:** `check_period` (which days are in, in the task's process) >> `start_cluster` >>
`rollup` (reads the month's `invoice_lines` partitions: `customers` and `invoices` are distinct
over the whole month; checks the mart against the daily marts; writes `report.html` beside
it) >> `stop_cluster` (teardown).

**Outputs:** the Delta table `{ETL_LAKE_URI}/retail/monthly_sales_by_country` (partition
`ds` = the period's first day) and `retail/_reports/monthly_sales_by_country/ds=<first day>/report.html` (charts of revenue per day, top countries, top products, cancellations),
opened from the UI's **Lake** page.

Pipeline code and docs: `include/pipelines/retail/`, `docs/retail.md`.
"""

from __future__ import annotations

from airflow.sdk import DAG

from include.pipelines.retail.dag_factory import rollup_dag

# Airflow finds the DAG in this file (its parser only opens files naming both "airflow" and "dag").
dag: DAG = rollup_dag(dag_id="retail_monthly", period="month", doc_md=__doc__, fileloc=__file__,
                tags=["retail", "etl", "partitioned"])
