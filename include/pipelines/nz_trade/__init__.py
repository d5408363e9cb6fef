"""The NZ trade pipeline: Stats NZ "Effects of COVID-19 on trade" -> ``enriched`` -> two marts.

Registers the pipeline ``nz_trade`` (lake domain ``nz_trade``) with the contract of its one
input, ``trade`` (:mod:`.datasets`), its default file under ``ETL_DATA_DIR``, and its jobs:
``nz_trade.ingest`` (the platform's generic ingest), ``nz_trade.enrich`` and ``nz_trade.marts``
(``monthly_trade`` and ``yearly_change``, published behind their quality checks).
DAG: ``dags/nz_trade_etl.py``; see ``README.md`` in this folder.
"""

from __future__ import annotations

from include.etl.jobs import register_pipeline
from include.pipelines.nz_trade.datasets import DATASETS, INPUTS

PIPELINE = register_pipeline(
    "nz_trade",
    datasets=DATASETS,
    inputs=INPUTS,
    description="Stats NZ daily goods trade -> enriched -> monthly_trade, yearly_change",
)

from include.pipelines.nz_trade import jobs  # noqa: E402,F401 - registers nz_trade.enrich and nz_trade.marts
