"""
### Retail, daily

One run per day from 2010-12-01, the day being the run's **partition** (`CronPartitionTimetable`,
key `YYYY-MM-DD`): it reads the day's landing file `{data_dir}/{landing_dir}/{ds}.csv` of invoice lines and
publishes the day's partitions of `invoice_lines`, `enriched_lines` and the daily marts
`sales_by_country` and `sales_by_product` in the lake (Delta tables `{ETL_LAKE_URI}/retail/<table>`,
partition `ds`), all at once in its `publish` step, which then emits the tables' asset events.

**Waiting for the file:** `wait_for_file` defers to the triggerer (no worker slot is held)
until the file lands or until `deadline_hours` after the day ends (UTC). When the deadline
passes without a file, or had already passed when the run started (backfills, old days), the
day is a **day without trading**: `publish_empty_day` publishes empty partitions of every
table (same columns), says so in its log and in the asset events, and the run succeeds,
without starting a cluster.

**With a file:** `start_cluster` >> `ingest` >> `enrich` >> `marts` >> `stop_cluster`
(teardown, runs even when a job fails). Rejected lines are kept with their reason in
`retail/_rejects/invoice_lines/ds={ds}/`.

**Inputs:** `data_dir` is the pipeline's data root (`ETL_DATA_DIR_RETAIL` when set, else
`ETL_DATA_DIR`), `landing_dir` the landing folder under it (`retail/by-day`; an absolute
`landing_dir` is used as given). Both can be set per run in the trigger form.

**Asset events:** every published table emits an event for the day's partition
(`lake://retail/<table>`), with its row count, the rejected lines and `empty_day` in `extra`.
`retail_monthly` rolls the days of `sales_by_country` up to months.

**From the UI** (the run's day is its partition key; this DAG's trigger form has no Logical Date):

* *A day:* **Trigger** → **Single Run** → **Advanced Options** → **Partition Key**: the day as
  `YYYY-MM-DD` (`2011-11-05`) → **Trigger**. Airflow refuses any other form of key (400,
  "does not match the timetable's key_format '%Y-%m-%d'"). A day run again replaces its partitions and re-runs
  its month's rollup in `retail_monthly`. A past day decides at once (file or no file).
* *A range of days:* **Trigger** → **Backfill** → **Date Range**: **From** and **To**, each a date
  picker whose **Date** field takes `YYYY/MM/DD` (`2011/11/01` and `2011/11/30`; leave **Time**
  empty: From is the start of its day, To the end of its day, both days included) → the dialog
  says how many runs it makes ("30 runs will be triggered.") → **Reprocess Behavior** (**Missing
  Runs** skips the days already run; **All Runs** runs them again) and **Max Active Runs** →
  **Run Backfill**. The dates are read in the UI's timezone: set it to **UTC** first (user menu →
  **Timezone**), else a timezone west of UTC shifts the range by a day.
* Either way the DAG must be unpaused for its runs to start (the dialog's "Unpause retail_daily on
  trigger" box, ticked by default, does it); once unpaused, it also runs every new day at midnight UTC.

**CLI:** `airflow backfill create --dag-id retail_daily --from-date 2010-12-01 --to-date 2011-11-30`
(one run per day; each decides at once). `airflow dags test retail_daily 2011-12-05` runs the
day 2011-12-05.

Pipeline code and docs: `include/pipelines/retail/`, `docs/retail.md`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, AssetAlias, CronPartitionTimetable, Param

from etl_platform.operators import LakePublishOperator, StartClusterOperator, StopClusterOperator
from etl_platform.operators.partitioned import LocalJobOperator, PartitionedJobOperator
from etl_platform.sensors import LandingFileSensor
from include.etl.settings import BACKENDS, Settings, data_path
from include.pipelines.retail import LANDING_DIR, RERUN_ALIAS
from include.pipelines.retail.dag_factory import DAY_KEY_FORMAT, DEFAULT_ARGS, daily_asset
from include.pipelines.retail.jobs import DAILY_ASSETS

settings = Settings.from_env()  # environment only: no I/O at parse time
ASSETS = {table: daily_asset(table) for table in DAILY_ASSETS}
RERUNS = AssetAlias(RERUN_ALIAS)
WAITED = "ti.xcom_pull(task_ids='wait_for_file', key='landing')"

with DAG(
    dag_id="retail_daily",
    description="Daily landing file of invoice lines -> invoice_lines -> enriched_lines -> daily marts, on Dask or Spark",
    doc_md=__doc__,
    schedule=CronPartitionTimetable("0 0 * * *", timezone="UTC", key_format=DAY_KEY_FORMAT),
    start_date=pendulum.datetime(2010, 12, 1, tz="UTC"),
    catchup=False,
    # A run waits for its day's file until after the day ends: the next days' runs overlap it.
    max_active_runs=3,
    dagrun_timeout=timedelta(days=3),
    tags=["retail", "etl", "partitioned"],
    default_args=DEFAULT_ARGS,
    params={
        "backend": Param(settings.default_backend, enum=list(BACKENDS), description="Engine that runs the jobs."),
        "data_dir": Param(str(settings.pipeline_data_dir("retail")), type="string",
                          description="Folder a relative landing_dir is under (ETL_DATA_DIR_RETAIL, else ETL_DATA_DIR)."),
        "landing_dir": Param(LANDING_DIR, type="string",
                             description="Directory of the daily landing files {ds}.csv; relative to data_dir, or absolute."),
        "deadline_hours": Param(6, type="number", minimum=0,
                                description="Hours after the end of the day (UTC) the day's file may still land."),
    },
    user_defined_macros={"data_path": data_path},
) as dag:
    wait_for_file = LandingFileSensor(
        task_id="wait_for_file",
        landing_dir="{{ data_path(params.data_dir, params.landing_dir) }}",
        deadline_hours="{{ params.deadline_hours }}",
        if_present="start_cluster",
        if_absent="publish_empty_day",
        poke_interval=settings.landing_poke_interval,  # ETL_LANDING_POKE_INTERVAL
        execution_timeout=timedelta(days=3),  # it waits, deferred, until the day's deadline
    )
    publish_empty_day = LocalJobOperator(
        task_id="publish_empty_day",
        job="retail.empty_day",
        job_kwargs={"path": f"{{{{ {WAITED}['path'] }}}}", "deadline": f"{{{{ {WAITED}['deadline'] }}}}",
                    "decided": f"{{{{ {WAITED}['decided'] }}}}"},
        outlets=[*ASSETS.values(), RERUNS],
    )
    start_cluster = StartClusterOperator(task_id="start_cluster", backend="{{ params.backend }}")
    cluster = start_cluster.output
    ingest = PartitionedJobOperator(
        task_id="ingest", job="retail.ingest_day", cluster=cluster,
        job_kwargs={"source": f"{{{{ {WAITED}['path'] }}}}"},
    )
    enrich = PartitionedJobOperator(task_id="enrich", job="retail.enrich", cluster=cluster)
    marts = PartitionedJobOperator(task_id="marts", job="retail.marts", cluster=cluster)
    # The day's tables become visible together, and their asset events (which start the rollups) follow.
    publish = LakePublishOperator(task_id="publish", pipeline="retail", outlets=[*ASSETS.values(), RERUNS])
    stop_cluster = StopClusterOperator(task_id="stop_cluster", cluster=cluster)

    wait_for_file >> [start_cluster, publish_empty_day]
    start_cluster >> ingest >> enrich >> marts >> stop_cluster.as_teardown(setups=start_cluster)
    marts >> publish
