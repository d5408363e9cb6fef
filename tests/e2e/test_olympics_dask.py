"""The whole olympics_etl on a real Dask cluster, through `bin/airflow dags test` (one process)."""

from __future__ import annotations

import json

import pytest

from include.etl.lake import Lake, list_tables
from tests.conftest import DATA
from tests.e2e.airflow_env import bin_airflow
from tests.e2e.expected import assert_marts_match, read_mart
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow
DS = "2024-07-07"


def test_dags_test_on_dask_matches_independent_computation(airflow_home):
    home = airflow_home
    out = bin_airflow(home, "dags", "test", "olympics_etl", DS, "-c", json.dumps({"backend": "dask"}))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "state=success" in out.stdout + out.stderr
    # Quiet logs: a normal run warns about nothing (no library deprecation notice either).
    warnings = [line for line in (out.stdout + out.stderr).splitlines() if "[py.warnings]" in line or "Warning:" in line]
    assert warnings == [], warnings
    assert_marts_match(home / "lake", DS, DATA)
    assert processes_with_env(str(home)) == [], "cluster processes left running after the run"
    tables = ("enriched", "avg_age_by_year", "medals_by_region")
    def rows(table):  # every row, in a total order (repr also makes NaN equal to NaN)
        return sorted(map(repr, read_mart(home / "lake" / "olympics" / table / f"ds={DS}")))

    first = {t: rows(t) for t in tables}

    # A rerun for the same ds replaces the partitions: identical tables, no duplicates, no staging left.
    out = bin_airflow(home, "dags", "test", "olympics_etl", DS, "-c", json.dumps({"backend": "dask"}))
    assert out.returncode == 0, out.stderr[-3000:]
    assert_marts_match(home / "lake", DS, DATA)
    for table in tables:
        assert rows(table) == first[table], f"rerun changed {table}"
    versions = [h["version"] for h in Lake(home / "lake", "olympics").history("medals_by_region")]
    assert versions == [2, 1, 0], "each run is one commit of the mart (0 creates the table)"


def test_failed_job_still_tears_the_cluster_down(airflow_home, tmp_path):
    home = airflow_home
    bad = tmp_path / "athletes.csv"
    bad.write_text("ID;Name\n1;A\n")  # present (the start task's check passes) but unusable
    conf = {"backend": "dask", "athletes_path": str(bad)}
    out = bin_airflow(home, "dags", "test", "olympics_etl", DS, "-c", json.dumps(conf))
    logs = out.stdout + out.stderr
    assert "state=failed" in logs
    assert f"athletes input {bad}: header is missing required columns" in logs
    # the teardown ran and stopped the cluster the run started
    assert "Stopped the local Dask cluster" in logs
    assert processes_with_env(str(home)) == []
    # Write, audit, publish: regions and venues were ingested and staged, but the run failed, so
    # its publish step never ran and no table of the lake exists.
    assert list_tables(home / "lake") == []
    assert "ingest_regions" in logs and "staged" in logs
