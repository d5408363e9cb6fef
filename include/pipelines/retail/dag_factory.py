"""The retail rollup DAG, for a month (``dags/retail_monthly.py``) or a week (the scheduler test's
fixture, ``tests/fixtures/dags/retail_weekly.py``): the same code path, only the window differs.

Imported at parse time: Airflow and the platform's operators only.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import pendulum
from airflow.sdk import (
    DAG,
    Asset,
    ChainMapper,
    IdentityMapper,
    MonthWindow,
    Param,
    PartitionedAssetTimetable,
    RollupMapper,
    StartOfMonthMapper,
    StartOfWeekMapper,
    WaitForAll,
    WeekWindow,
)

from etl_platform.operators import StartClusterOperator, StopClusterOperator
from etl_platform.operators.partitioned import LocalJobOperator, PartitionedJobOperator
from include.etl.settings import BACKENDS, Settings
from include.pipelines.retail import ASSET_PREFIX, RERUN_URI
from include.pipelines.retail.jobs import RERUN_SUFFIX, ROLLUP_SOURCE
from include.pipelines.retail.periods import check_period, key_start, mart_table

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "execution_timeout": timedelta(hours=1),
}
# The daily runs' partition keys are their days (CronPartitionTimetable key_format).
DAY_KEY_FORMAT = "%Y-%m-%d"


def daily_asset(table: str) -> Asset:
    return Asset(f"{ASSET_PREFIX}{table}")


def rollup_schedule(period: str) -> PartitionedAssetTimetable:
    """Run once every day of the period has its ``sales_by_country`` partition (empty days too),
    and again for a day re-run after that.

    * ``lake://retail/sales_by_country``, rolled up: ``RollupMapper`` maps each daily key to its
      period (``StartOfMonthMapper`` -> ``2011-01``; ``StartOfWeekMapper`` -> ``2011-01-03 (W01)``)
      and ``WaitForAll`` holds the run until the window (``MonthWindow``: every day of the
      calendar month; ``WeekWindow``: Monday to Sunday) has all its keys.
    * ``lake://retail/daily_reruns``: emitted by a daily run only when it replaced a day
      published before. Airflow's rollup counts the keys of one pending run: once a period's run
      was created, a re-run day starts a new, incomplete window that would wait for every other
      day again. This asset maps the re-run day to the period's key with a `` re-run`` suffix (a
      run of its own, which cannot take the pending window of a period still filling up) and
      fires at once; the run checks in the lake that the period is complete (else it skips).

    A key typed in the trigger form (``2011-11``) is checked by Airflow against the mapper of
    *every* asset (``PartitionedAssetTimetable._decode_partition_date``: each mapper's
    ``to_partition_date`` must accept it). A temporal re-run mapper would only accept
    ``2011-11 re-run``, the rollup's only ``2011-11``: no key could pass both. So the re-run
    mapper ends with an ``IdentityMapper`` (``ChainMapper``'s date is its last mapper's, and an
    identity key has none): it maps a day exactly as before, accepts any key, and leaves the
    rollup's ``StartOfMonthMapper`` to validate the typed key and give the run its
    ``partition_date``. A re-run run therefore has no ``partition_date``: its tasks take the
    period from the key (:func:`.periods.key_start`).
    """
    check_period(period)
    if period == "month":
        rollup = RollupMapper(upstream_mapper=StartOfMonthMapper(input_format=DAY_KEY_FORMAT), window=MonthWindow(),
                              wait_policy=WaitForAll())
        rerun_key = StartOfMonthMapper(input_format=DAY_KEY_FORMAT, output_format=f"%Y-%m {RERUN_SUFFIX}")
    else:
        rollup = RollupMapper(upstream_mapper=StartOfWeekMapper(input_format=DAY_KEY_FORMAT), window=WeekWindow(),
                              wait_policy=WaitForAll())
        rerun_key = StartOfWeekMapper(input_format=DAY_KEY_FORMAT, output_format=f"%Y-%m-%d (W%V) {RERUN_SUFFIX}")
    rerun = ChainMapper(rerun_key, IdentityMapper())
    days, reruns = daily_asset(ROLLUP_SOURCE), Asset(RERUN_URI)
    return PartitionedAssetTimetable(assets=days | reruns, partition_mapper_config={days: rollup, reruns: rerun})


def rollup_dag(*, dag_id: str, period: str, doc_md: str, tags: list[str], fileloc: str, **dag_kwargs: Any) -> DAG:
    """``check_period`` (in the task's process) >> ``start_cluster`` >> ``rollup`` >> ``stop_cluster`` (teardown).

    ``fileloc``: the DAG file calling this (``__file__``); Airflow re-parses the DAG from there.

    The DAG is created *unpaused* (``is_paused_upon_creation=False``, unless ``dag_kwargs`` say
    otherwise): Airflow does not queue an asset event for a paused consumer at all
    (``AssetManager.register_asset_change`` keeps only DAGs ``not is_paused``), so a rollup
    created paused would silently lose every day published before someone unpauses it, and
    unpausing does not bring them back. It runs on data only, so unpaused it does nothing until
    a period is complete.
    """
    settings = Settings.from_env()  # environment only: no I/O at parse time
    table = mart_table(period)
    dag_kwargs.setdefault("is_paused_upon_creation", False)
    with DAG(
        dag_id=dag_id,
        description=f"{table} + report once every day of the {period} is in (partitioned assets, not a clock)",
        doc_md=doc_md,
        schedule=rollup_schedule(period),
        start_date=pendulum.datetime(2010, 12, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=timedelta(hours=2),
        tags=tags,
        default_args=DEFAULT_ARGS,
        params={"backend": Param(settings.default_backend, enum=list(BACKENDS), description="Engine that runs the jobs.")},
        user_defined_macros={"period_start": partial(key_start, period)},
        **dag_kwargs,
    ) as dag:
        check = LocalJobOperator(
            task_id="check_period",
            job="retail.check_period",
            # The period from the key (a re-run's key too, which has no partition_date); without a
            # key, the run's logical date (`dags test`), else the task fails at once (no retries).
            ds="{{ period_start(partition_key) }}",
            job_kwargs={"period": period, "partition_key": "{{ partition_key or '' }}"},
            skip_unless="complete",
        )
        start_cluster = StartClusterOperator(task_id="start_cluster", backend="{{ params.backend }}")
        cluster = start_cluster.output
        rollup = PartitionedJobOperator(
            task_id="rollup",
            job="retail.rollup",
            cluster=cluster,
            ds="{{ ti.xcom_pull(task_ids='check_period')['ds'] }}",
            # The period's own key on the mart's event, also for a run caused by a re-run day.
            partition_key=f"{{{{ (partition_key or '') | replace(' {RERUN_SUFFIX}', '') }}}}",
            job_kwargs={"period": period},
            outlets=[daily_asset(table)],
        )
        stop_cluster = StopClusterOperator(task_id="stop_cluster", cluster=cluster)
        check >> start_cluster >> rollup >> stop_cluster.as_teardown(setups=start_cluster)
    dag.fileloc = fileloc  # not this module: the DAG is the calling file's
    return dag
