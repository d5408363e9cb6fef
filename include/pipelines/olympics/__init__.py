"""The Olympics pipeline: athletes, regions and venues -> ``enriched`` -> two marts.

Registers the pipeline ``olympics`` (lake domain ``olympics``) with its three input contracts
and default inputs under ``ETL_DATA_DIR``, and its jobs: ``olympics.ingest`` (the platform's
generic ingest), ``olympics.enrich`` and ``olympics.aggregate``. DAG: ``dags/olympics_etl.py``.
"""

from __future__ import annotations

from include.etl.jobs import register_pipeline
from include.pipelines.olympics.datasets import DATASETS, INPUTS

PIPELINE = register_pipeline(
    "olympics",
    datasets=DATASETS,
    inputs=INPUTS,
    description="Olympics athletes + regions + venues -> enriched -> avg_age_by_year, medals_by_region",
)

from include.pipelines.olympics import jobs  # noqa: E402,F401 - registers olympics.enrich and olympics.aggregate
