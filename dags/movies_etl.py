"""
### Movies ETL

Ingests the MovieLens "small" ratings, their links to IMDb and TMDB, and TMDB's keyword lists
side by side, and publishes three marts: `movie_ratings` (per rated movie: IMDb and TMDB ids,
rating count, mean, a weighted rating and the first and last rating time), `keyword_ratings`
(per keyword of a rated movie: its movies and their ratings) and `ratings_by_year` (per UTC
year: ratings, distinct users, mean).

**Contracts:** `rating` is 0.5 to 5.0 in steps of 0.5 (an expression rule) and a user rates a
movie once; `imdbId` is 7 digits; `timestamp` is Unix seconds (read as a UTC timestamp);
`keywords` is a Python literal list of `{'id', 'name'}` (parsed safely, typed as a list of
structs); exact copies of a keyword row are dropped and counted (`duplicates_dropped` in the
ingest summary and the table's asset event). Columns are renamed to snake_case in the lake.

**Cluster:** `start_cluster` brings up a Dask or Spark cluster (or attaches to the one the
`dask_default` / `spark_connect_default` connection names); `stop_cluster` is its teardown and
runs even when a job fails, stopping only what was started.

**Outputs:** Delta tables `{ETL_LAKE_URI}/movies/{table}`, one partition per `ds`, committed
together by `publish` once every task and the marts' quality checks have passed (a failed run
changes no table; a rerun replaces the `ds`). Rejected input rows, with the reason and line, are
in `movies/_rejects/{input}`.

**Inputs:** by default `movies/ratings_small.csv`, `movies/links.csv` and `movies/keywords.csv`
under the pipeline's data root `data_dir` (`ETL_DATA_DIR_MOVIES` when set, else `ETL_DATA_DIR`);
`start_cluster` checks they exist and fails at once, before starting any cluster.

**Trigger form:** `backend`, `data_dir`, `ratings_path`, `links_path` and `keywords_path`
(relative to `data_dir`, or absolute).

Pipeline code: `include/pipelines/movies/`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param

from etl_platform.operators import LakePublishOperator, SparkJobOperator, StartClusterOperator, StopClusterOperator
from include.etl.settings import BACKENDS, Settings, data_path
from include.pipelines.movies import PIPELINE

settings = Settings.from_env()  # environment only: no I/O at parse time
DATA_DIR = settings.pipeline_data_dir(PIPELINE.name)  # ETL_DATA_DIR_MOVIES, else ETL_DATA_DIR
SOURCES = {table: f"{{{{ data_path(params.data_dir, params.{table}_path) }}}}" for table in PIPELINE.inputs}
FILES = {"ratings": "ratings_small.csv", "links": "links.csv", "keywords": "keywords.csv"}

# The marts, and the inputs (their events carry the ingest's counts: rows_in, accepted, rejected, dropped).
OUTLETS = [Asset(f"lake://movies/{name}") for name in ("movie_ratings", "keyword_ratings", "ratings_by_year",
                                                       "ratings", "links", "keywords")]

with DAG(
    dag_id="movies_etl",
    description="MovieLens ratings + links + TMDB keywords -> movie_ratings, keyword_ratings, ratings_by_year",
    doc_md=__doc__,
    schedule="@daily",
    start_date=pendulum.datetime(2024, 7, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    tags=["movies", "etl"],
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
                          description="Folder the relative input paths are read under (ETL_DATA_DIR_MOVIES, else ETL_DATA_DIR)."),
        **{f"{table}_path": Param(PIPELINE.inputs[table], type="string",
                                  description=f"{FILES[table]} format; relative to data_dir, or absolute.")
           for table in PIPELINE.inputs},
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
        SparkJobOperator(task_id=f"ingest_{table}", job="movies.ingest", cluster=cluster,
                         job_kwargs={"table": table, "source": SOURCES[table]})
        for table in PIPELINE.inputs
    ]
    marts = SparkJobOperator(task_id="marts", job="movies.marts", cluster=cluster)
    publish = LakePublishOperator(task_id="publish", pipeline="movies", outlets=OUTLETS)
    stop_cluster = StopClusterOperator(task_id="stop_cluster", cluster=cluster)

    start_cluster >> ingests >> marts >> stop_cluster.as_teardown(setups=start_cluster)
    marts >> publish
