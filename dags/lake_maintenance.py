"""
### Lake maintenance: compact, checkpoint, vacuum

Once a day, for every Delta table of the lake (`ETL_LAKE_URI`, local or S3), rejects tables
included:

1. **compact**: partitions written as many small files (an engine writes one per task) are
   rewritten into few; rows and row counts stay the same;
2. **checkpoint**: the latest version is written as one Parquet checkpoint, so readers (the jobs,
   the **Lake** view) open the table without replaying every commit;
3. **vacuum**: files no version inside the retention references are deleted: those of versions
   replaced more than `ETL_LAKE_RETENTION_DAYS` (default 7) days ago, and the files a failed or
   killed run staged (`ds=…/w-…/`) and never committed, once that old. The commit log
   (`_delta_log`) is left alone.

Records of runs that staged partitions and never published them (`{pipeline}/_runs/`) are removed
once older than the retention too.

**Time travel** (the Lake view's "as of version", `Lake.read_arrow(version=…)`) keeps working for
versions younger than the retention; older versions' files are gone.

**Tasks:** `list_pipelines` (the lake's pipelines, read when the run starts) >>
`maintain_pipeline` (one mapped task per pipeline: logs per table the files compacted and removed,
returns a summary). A table that fails does not stop the others; its pipeline's task then fails
naming it, and its retry starts over (every step is idempotent).

Created **unpaused**: nothing else removes a failed run's staged files or the replaced versions,
and what it deletes is only what the retention says may go. Pause it to keep every version.

Code: `include/etl/lake/maintenance.py`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

with DAG(
    dag_id="lake_maintenance",
    description="Compact, checkpoint and vacuum every Delta table of the lake",
    doc_md=__doc__,
    schedule="@daily",
    start_date=pendulum.datetime(2024, 7, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    dagrun_timeout=timedelta(hours=6),
    tags=["lake", "maintenance", "platform"],
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=3),
    },
) as dag:

    @task
    def list_pipelines() -> list[str]:
        """The pipelines of the lake that have Delta tables."""
        from include.etl.lake.location import LakeLocation
        from include.etl.lake.maintenance import pipelines
        from include.etl.settings import Settings

        settings = Settings.from_env()
        return pipelines(LakeLocation.resolve(settings.lake_uri, settings.lake_conn_id))

    @task(max_active_tis_per_dagrun=2)
    def maintain_pipeline(pipeline: str) -> dict:
        """Compact, checkpoint and vacuum every table of ``pipeline``; a summary of what was done."""
        from include.etl.lake.location import LakeLocation
        from include.etl.lake.maintenance import maintain_pipeline as maintain
        from include.etl.lake.maintenance import retention_hours
        from include.etl.settings import Settings

        settings = Settings.from_env()
        return maintain(LakeLocation.resolve(settings.lake_uri, settings.lake_conn_id), pipeline,
                        retention_hours=retention_hours(settings.lake_retention_days))

    maintain_pipeline.expand(pipeline=list_pipelines())
