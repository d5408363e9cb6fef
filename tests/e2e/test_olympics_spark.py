"""The whole olympics_etl on the Spark backend (a warm local Spark Connect server), equal to Dask."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA
from tests.e2e.airflow_env import bin_airflow
from tests.e2e.expected import assert_marts_match, read_mart
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow
DS = "2024-07-07"
MARTS = ("avg_age_by_year", "medals_by_region")


def _run(home, conf):
    out = bin_airflow(home, "dags", "test", "olympics_etl", DS, "-c", json.dumps(conf))
    logs = out.stdout + out.stderr
    assert out.returncode == 0 and "state=success" in logs, logs[-4000:]
    assert processes_with_env(str(home)) == [], "cluster processes (JVM, workers) left after the run"
    return logs


def test_spark_run_on_shipped_data_matches_independent_computation(airflow_home):
    logs = _run(airflow_home, {"backend": "spark"})
    assert "Local Spark Connect server up" in logs or "Spark Connect server" in logs
    assert_marts_match(airflow_home / "lake", DS, DATA)


def test_generated_edge_cases_give_identical_marts_on_both_backends(airflow_home, tmp_path):
    from include.etl.generate import generate_athletes

    data = tmp_path / "generated"
    summary = generate_athletes(data, rows=20_000, seed=7, edge_cases=True)
    assert summary["rows"] == 20_000 and summary["edge_rows"]
    marts = {}
    for backend in ("dask", "spark"):
        lake = tmp_path / f"lake-{backend}"
        conf = {
            "backend": backend,
            "athletes_path": str(data / "athlete_events.csv"),
            "regions_path": str(data / "noc_regions.csv"),
            "venues_path": str(data / "host_city_locations.csv"),
        }
        out = bin_airflow(airflow_home, "dags", "test", "olympics_etl", DS, "-c", json.dumps(conf), ETL_LAKE_ROOT=str(lake))
        assert out.returncode == 0 and "state=success" in out.stdout + out.stderr, (out.stdout + out.stderr)[-4000:]
        assert_marts_match(lake, DS, data, athletes="athlete_events.csv")
        marts[backend] = {m: read_mart(lake / "olympics" / m / f"ds={DS}") for m in MARTS}
        marts[backend]["enriched_rows"] = len(read_mart(lake / "olympics" / "enriched" / f"ds={DS}"))
    assert marts["dask"]["medals_by_region"] == marts["spark"]["medals_by_region"]
    assert marts["dask"]["enriched_rows"] == marts["spark"]["enriched_rows"] == 20_000
    dask_avg, spark_avg = marts["dask"]["avg_age_by_year"], marts["spark"]["avg_age_by_year"]
    assert [r[:2] + r[3:] for r in dask_avg] == [r[:2] + r[3:] for r in spark_avg]
    for a, b in zip(dask_avg, spark_avg, strict=True):
        assert (a[2] is None and b[2] is None) or a[2] == pytest.approx(b[2], rel=1e-9)
    assert processes_with_env(str(airflow_home)) == []
