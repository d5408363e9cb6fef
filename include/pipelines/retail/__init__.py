"""The retail pipeline: one landing file of invoice lines per trading day -> daily marts -> a monthly rollup and report.

Registers the pipeline ``retail`` (lake domain ``retail``) with its input contract and its jobs
(``include/pipelines/retail/jobs.py``): ``retail.ingest_day``, ``retail.enrich``,
``retail.marts``, ``retail.empty_day`` (a day without a file), ``retail.check_period`` and
``retail.rollup`` (the monthly, or weekly, mart and report). DAGs: ``dags/retail_daily.py``
and ``dags/retail_monthly.py`` (built by :mod:`include.pipelines.retail.dag_factory`).
"""

from __future__ import annotations

from include.etl.jobs import register_pipeline
from include.pipelines.retail.datasets import DATASETS, LANDING_DIR

PIPELINE = register_pipeline(
    "retail",
    datasets=DATASETS,
    description="daily landing files of invoice lines -> invoice_lines -> enriched_lines -> sales_by_country, "
                "sales_by_product; monthly_sales_by_country + report once a month is complete",
)

# Asset URIs: one per published table (lake://retail/<table>), and the asset a daily run
# emits, through the alias, only when it replaced a day that had been published before.
ASSET_PREFIX = "lake://retail/"
RERUN_ALIAS = "retail_daily_reruns"
RERUN_URI = ASSET_PREFIX + "daily_reruns"

__all__ = ["ASSET_PREFIX", "LANDING_DIR", "PIPELINE", "RERUN_ALIAS", "RERUN_URI"]

from include.pipelines.retail import jobs  # noqa: E402,F401 - registers the retail jobs
