"""Test configuration: an isolated AIRFLOW_HOME and lake, set before Airflow is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="etl-test-airflow-"))

os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("ETL_LAKE_ROOT", str(_HOME / "lake"))
for var in [v for v in os.environ if v.startswith("AIRFLOW_CONN_")]:
    del os.environ[var]  # tests decide which clusters exist

import pytest  # noqa: E402

DATA = ROOT / "data" / "olympics"


@pytest.fixture
def data_dir() -> Path:
    return DATA
