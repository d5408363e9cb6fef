"""A job task killed (execution timeout) while its cluster works: the teardown leaves nothing running."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import ROOT
from tests.e2e.airflow_env import bin_airflow
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["dask", "spark"])
def test_killed_job_leaves_no_cluster_process(backend, airflow_home):
    t0 = time.monotonic()
    out = bin_airflow(
        airflow_home, "dags", "test", "killed_job", "2024-07-07", "-c", json.dumps({"backend": backend}),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "tests" / "fixtures" / "dags"),
    )
    logs = out.stdout + out.stderr
    assert "state=failed" in logs, logs[-4000:]
    assert "Timeout" in logs or "timed out" in logs.lower(), logs[-4000:]
    assert "Stopped the local" in logs, logs[-4000:]  # the teardown ran and stopped the cluster
    assert time.monotonic() - t0 < 300  # the 600 s of cluster work were cancelled, not waited for
    assert processes_with_env(str(airflow_home)) == [], "cluster processes (workers, JVM) survived the kill"
