"""
### NZ trade ETL

Ingests Stats NZ's daily goods trade ("Effects of COVID-19 on trade": exports, imports and
reimports per day, country, commodity and transport mode, in `$` and `Tonnes`), adds each row's
`month` in `enriched`, and publishes two marts: `monthly_trade` (value and number of days per
series and month) and `yearly_change` (value per series and calendar year, against the
previous year).

**Cluster:** `start_cluster` brings up a Dask or Spark cluster (or attaches to the one the
`dask_default` / `spark_connect_default` connection names); `stop_cluster` is its teardown and
runs even when a job fails, stopping only what was started. While a run is running, its
cluster's dashboard (Dask dashboard or Spark UI) is one click away: the run's **Cluster** tab, or
**Lake** in the navigation (clusters of running runs).

**Outputs:** Delta tables `{ETL_LAKE_URI}/nz_trade/{table}`, one partition per `ds`, committed
together by `publish` once every task and the marts' quality checks have passed (a failed run
changes no table; a rerun replaces the `ds`). Rejected input rows, with the reason and line, are
in `nz_trade/_rejects/trade`.

**Inputs:** by default the Stats NZ file under the pipeline's data root `data_dir`
(`nz_trade/effects-of-covid-19-on-trade-at-15-december-2021-provisional.csv`); the root is
`ETL_DATA_DIR_NZ_TRADE` when set, else `ETL_DATA_DIR`. `start_cluster` checks the file exists and
fails at once, before starting any cluster, naming it.

**Trigger form:** `backend`, `data_dir` and `trade_path` (relative to `data_dir`, or absolute) can
be set per run. Which engine ran a job task is
shown in its rendered field `backend`.

Pipeline code: `include/pipelines/nz_trade/`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param

from etl_platform.operators import LakePublishOperator, SparkJobOperator, StartClusterOperator, StopClusterOperator
from include.etl.settings import BACKENDS, Settings, data_path
from include.pipelines.nz_trade import PIPELINE

settings = Settings.from_env()  # environment only: no I/O at parse time
# Paths only: a missing file fails the run, not the parse. The input is rendered as trade_path
# under the data_dir param (an absolute trade_path is used as given).
DATA_DIR = settings.pipeline_data_dir(PIPELINE.name)  # ETL_DATA_DIR_NZ_TRADE, else ETL_DATA_DIR
TRADE = "{{ data_path(params.data_dir, params.trade_path) }}"

MARTS = [Asset(f"lake://nz_trade/{name}") for name in ("monthly_trade", "yearly_change")]

with DAG(
    dag_id="nz_trade_etl",
    description="Stats NZ daily trade -> enriched -> monthly_trade, yearly_change, on Dask or Spark",
    doc_md=__doc__,
    schedule="@daily",
    start_date=pendulum.datetime(2024, 7, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    tags=["nz_trade", "etl"],
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": 2.0,
        "execution_timeout": timedelta(hours=1),
    },
    params={
        "backend": Param(settings.default_backend, enum=list(BACKENDS), description="Engine that runs the jobs."),
        "data_dir": Param(str(DATA_DIR), type="string",
                          description="Folder a relative trade_path is read under (ETL_DATA_DIR_NZ_TRADE, else ETL_DATA_DIR)."),
        "trade_path": Param(PIPELINE.inputs["trade"], type="string",
                            description="Stats NZ 'Effects of COVID-19 on trade' CSV format; relative to data_dir, or absolute."),
    },
    user_defined_macros={"data_path": data_path},
) as dag:
    start_cluster = StartClusterOperator(task_id="start_cluster", backend="{{ params.backend }}",
                                         inputs={"trade_path": TRADE})
    cluster = start_cluster.output

    ingest = SparkJobOperator(
        task_id="ingest_trade",
        job="nz_trade.ingest",
        cluster=cluster,
        job_kwargs={"table": "trade", "source": TRADE},
    )
    enrich = SparkJobOperator(task_id="enrich_trade", job="nz_trade.enrich", cluster=cluster)
    marts = SparkJobOperator(task_id="marts", job="nz_trade.marts", cluster=cluster)
    publish = LakePublishOperator(task_id="publish", pipeline="nz_trade", outlets=MARTS)
    stop_cluster = StopClusterOperator(task_id="stop_cluster", cluster=cluster)

    start_cluster >> ingest >> enrich >> marts >> stop_cluster.as_teardown(setups=start_cluster)
    marts >> publish
