"""
### Olympics ETL

Ingests the Olympics athletes, regions (NOC → region) and venues (host cities) side by side,
joins them into `enriched`, and aggregates two marts: `avg_age_by_year` (mean age per Games)
and `medals_by_region` (medal counts per Games and region).

**Cluster:** `start_cluster` brings up a Dask or Spark cluster (or attaches to the one the
`dask_default` / `spark_connect_default` connection names); `stop_cluster` is its teardown and
runs even when a job fails, stopping only what was started. While a run is running, its
cluster's dashboard (Dask dashboard or Spark UI) is one click away: the run's **Cluster** tab, or
**Lake** in the navigation (clusters of running runs).

**Outputs:** Delta tables `{ETL_LAKE_URI}/olympics/{table}`, one partition per `ds`. The job
tasks stage their tables; `publish` commits them all once every task and quality check has
passed, so a failed run changes no table (a rerun replaces the run's `ds`, one new version per
table). Rejected input rows, with the reason, are in `olympics/_rejects/{table}`.

**Inputs:** by default the Olympics files under the pipeline's data root `data_dir`
(`olympics/athlete_events_head.csv`, `olympics/noc_regions.csv`, `olympics/host_city_locations.csv`);
the root is `ETL_DATA_DIR_OLYMPICS` when set, else `ETL_DATA_DIR`. `start_cluster` checks the files
exist and fails at once, before starting any cluster, naming a missing file.

**Trigger form:** `backend`, `data_dir` and each input path (relative to `data_dir`, or absolute)
can be set per run. Which engine ran a job task is shown in its rendered field `backend`.

Pipeline code: `include/pipelines/olympics/`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param

from etl_platform.operators import LakePublishOperator, SparkJobOperator, StartClusterOperator, StopClusterOperator
from include.etl.settings import BACKENDS, Settings, data_path
from include.pipelines.olympics import PIPELINE

settings = Settings.from_env()  # environment only: no I/O at parse time
# Paths only: a missing file fails the run, not the parse. Each input is rendered as its
# *_path param under the data_dir param (an absolute *_path is used as given).
DATA_DIR = settings.pipeline_data_dir(PIPELINE.name)  # ETL_DATA_DIR_OLYMPICS, else ETL_DATA_DIR
SOURCES = {table: f"{{{{ data_path(params.data_dir, params.{table}_path) }}}}" for table in PIPELINE.inputs}

MARTS = [Asset(f"lake://olympics/{name}") for name in ("avg_age_by_year", "medals_by_region")]

with DAG(
    dag_id="olympics_etl",
    description="Olympics athletes + regions + venues -> enriched -> marts, on Dask or Spark",
    doc_md=__doc__,
    schedule="@daily",
    start_date=pendulum.datetime(2024, 7, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    tags=["olympics", "etl", "example"],
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
                          description="Folder the relative input paths are read under (ETL_DATA_DIR_OLYMPICS, else ETL_DATA_DIR)."),
        "athletes_path": Param(PIPELINE.inputs["athletes"], type="string",
                               description="athlete_events.csv format; relative to data_dir, or absolute."),
        "regions_path": Param(PIPELINE.inputs["regions"], type="string",
                              description="noc_regions.csv format; relative to data_dir, or absolute."),
        "venues_path": Param(PIPELINE.inputs["venues"], type="string",
                             description="host_city_locations.csv format; relative to data_dir, or absolute."),
    },
    user_defined_macros={"data_path": data_path},
) as dag:
    start_cluster = StartClusterOperator(
        task_id="start_cluster",
        backend="{{ params.backend }}",
        inputs={f"{table}_path": source for table, source in SOURCES.items()},
    )
    cluster = start_cluster.output

    ingests = [
        SparkJobOperator(
            task_id=f"ingest_{table}",
            job="olympics.ingest",
            cluster=cluster,
            job_kwargs={"table": table, "source": SOURCES[table]},
        )
        for table in ("athletes", "regions", "venues")
    ]
    enrich = SparkJobOperator(task_id="enrich_athletes", job="olympics.enrich", cluster=cluster)
    aggregate = SparkJobOperator(task_id="aggregate", job="olympics.aggregate", cluster=cluster)
    publish = LakePublishOperator(task_id="publish", pipeline="olympics", outlets=MARTS)
    stop_cluster = StopClusterOperator(task_id="stop_cluster", cluster=cluster)

    start_cluster >> ingests >> enrich >> aggregate >> stop_cluster.as_teardown(setups=start_cluster)
    aggregate >> publish
