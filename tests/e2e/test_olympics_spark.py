"""The whole olympics_etl on the Spark backend through `dags test`: Spark inside the run's one process.

Generated edge cases on both engines are compared table by table in
``tests/e2e/test_spark_backend.py`` (on that module's warm clusters).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA
from tests.e2e.airflow_env import bin_airflow
from tests.e2e.expected import assert_marts_match
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow
DS = "2024-07-07"


def _run(home, conf):
    out = bin_airflow(home, "dags", "test", "olympics_etl", DS, "-c", json.dumps(conf))
    logs = out.stdout + out.stderr
    assert out.returncode == 0 and "state=success" in logs, logs[-4000:]
    assert processes_with_env(str(home)) == [], "cluster processes (JVM, workers) left after the run"
    return logs


def test_spark_run_on_shipped_data_matches_independent_computation(airflow_home):
    logs = _run(airflow_home, {"backend": "spark"})
    assert "Spark in this process (a classic local[" in logs and "Stopped the Spark session of this one-off run" in logs
    assert_marts_match(airflow_home / "lake", DS, DATA)
