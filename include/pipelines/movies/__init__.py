"""The movies pipeline: MovieLens ratings, their links to IMDb and TMDB, and TMDB keywords -> three marts.

Registers the pipeline ``movies`` (lake domain ``movies``) with the contracts of its inputs
``ratings``, ``links`` and ``keywords`` (:mod:`.datasets`), their default files under
``ETL_DATA_DIR``, and its jobs: ``movies.ingest`` (the platform's generic ingest) and
``movies.marts`` (``movie_ratings``, ``keyword_ratings``, ``ratings_by_year``, published behind
their quality checks). DAG: ``dags/movies_etl.py``; see ``README.md`` in this folder.
"""

from __future__ import annotations

from include.etl.jobs import register_pipeline
from include.pipelines.movies.datasets import DATASETS, INPUTS

PIPELINE = register_pipeline(
    "movies",
    datasets=DATASETS,
    inputs=INPUTS,
    description="MovieLens ratings + links + TMDB keywords -> movie_ratings, keyword_ratings, ratings_by_year",
)

from include.pipelines.movies import jobs  # noqa: E402,F401 - registers movies.marts
