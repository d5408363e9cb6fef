"""The Delta lake on both real engines, on local disk and on a real S3 server (SeaweedFS).

The olympics jobs run through the job registry on the shared real clusters (``real_engines``),
into a ``file://`` lake and an ``s3://`` lake. For each engine and storage:

- the marts equal the independent SQLite computation, and DuckDB and Polars read the same rows;
- a re-run replaces the partition (one new version per table, the same rows, no duplicates);
- two runs writing different ``ds`` of one table at the same time both land;
- a run that staged tables and then failed (before its publish step) leaves every table at its
  version; the next run's publish makes them visible, and time travel returns the previous rows.
"""

from __future__ import annotations

import concurrent.futures
import uuid

import pytest

from include.etl.jobs import get_job
from include.etl.lake import Lake, LakeLocation, list_tables
from tests.conftest import DATA
from tests.e2e.expected import expected_marts
from tests.s3 import s3_server_fixture  # noqa: F401 - the module's SeaweedFS server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_data")]
DS, DS2 = "2024-07-07", "2024-07-08"
INPUTS = {t: str(DATA / f) for t, f in
          (("athletes", "athlete_events_head.csv"), ("regions", "noc_regions.csv"), ("venues", "host_city_locations.csv"))}
MARTS = ("avg_age_by_year", "medals_by_region")


@pytest.fixture(scope="module")
def expected():
    return expected_marts(DATA)


@pytest.fixture(params=["file", "s3"])
def location(request, tmp_path, s3_server) -> LakeLocation:
    if request.param == "file":
        return LakeLocation.resolve(tmp_path / "lake")
    return s3_server.location(prefix=f"lake-{uuid.uuid4().hex[:8]}")


def run_olympics(engine, location: LakeLocation, ds: str, run_id: str | None = None, fail_before_publish=False):
    """The olympics DAG's jobs in order; with ``run_id``, staged per run and published at the end."""
    run = {"dag_id": "olympics_etl", "run_id": run_id, "task_id": "t", "try_number": 1, "publish": "run"} if run_id else {}

    def job(name, **kwargs):
        registered = get_job(name)
        return registered(registered.context(engine=engine, lake_root=location, ds=ds, run=run), **kwargs)

    for table, source in INPUTS.items():
        job("olympics.ingest", table=table, source=source)
    job("olympics.enrich")
    job("olympics.aggregate")
    if fail_before_publish:
        raise RuntimeError("the run failed before its publish step")
    if run_id:
        return Lake(location, "olympics", run=run).publish_run()
    return None


def sorted_rows(table) -> list[tuple]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def check_marts(lake: Lake, ds: str, expected) -> None:
    import math

    medals = sorted_rows(lake.read_arrow("medals_by_region", ds))
    assert medals == sorted(expected["medals_by_region"], key=repr)
    avg = sorted(sorted_rows(lake.read_arrow("avg_age_by_year", ds)), key=lambda r: (r[0], r[1]))
    want = expected["avg_age_by_year"]
    assert [(y, s, n) for y, s, _, n in avg] == [(y, s, n) for y, s, _, n in want]
    for (_, _, got, n), (_, _, w, _) in zip(avg, want, strict=True):
        assert (got is None or math.isnan(got)) if n == 0 else math.isclose(got, w, rel_tol=1e-9)
    assert lake.row_count("enriched", ds) == expected["athletes"]


@pytest.mark.parametrize("backend", ["dask", "spark"])
def test_write_rerun_and_external_readers(real_engines, backend, location, expected):
    import duckdb
    import polars as pl

    engine, lake = real_engines[backend], Lake(location, "olympics")
    run_olympics(engine, location, DS)
    check_marts(lake, DS, expected)
    tables = {t for p, t in list_tables(location) if p == "olympics"}
    assert {"athletes", "regions", "venues", "enriched", *MARTS, "_rejects/athletes"} <= tables
    first = {t: lake.delta(t).version() for t in MARTS}
    medals = sorted_rows(lake.read_arrow("medals_by_region", DS))

    # External readers see the same rows: DuckDB over the Delta table's Arrow dataset, and Polars.
    options = dict(location.storage_options)
    uri = lake.table_uri("medals_by_region")
    con = duckdb.connect()
    con.register("medals", lake.delta("medals_by_region").to_pyarrow_dataset())
    got = con.execute("select * exclude (ds) from medals where ds = ?", [DS]).fetchall()
    assert sorted(got, key=repr) == medals
    frame = pl.read_delta(uri, storage_options=options or None).filter(pl.col("ds") == DS).drop("ds")
    assert sorted(frame.rows(), key=repr) == medals

    # A re-run replaces the partition: one new version, the same rows (no duplicates).
    run_olympics(engine, location, DS)
    assert {t: lake.delta(t).version() for t in MARTS} == {t: v + 1 for t, v in first.items()}
    assert sorted_rows(lake.read_arrow("medals_by_region", DS)) == medals
    check_marts(lake, DS, expected)
    assert [h["rows_removed"] for h in lake.history("medals_by_region")[:1]] == [str(len(medals))]


@pytest.mark.parametrize("backend", ["dask", "spark"])
def test_failed_run_publishes_nothing_and_concurrent_days_both_land(real_engines, backend, location, expected,
                                                                   monkeypatch):
    engine, lake = real_engines[backend], Lake(location, "olympics")
    published = run_olympics(engine, location, DS, run_id="first")
    assert {p["table"] for p in published} >= {"athletes", "enriched", *MARTS, "_rejects/athletes"}
    check_marts(lake, DS, expected)
    versions = {t: lake.delta(t).version() for t in ("athletes", "enriched", *MARTS)}
    medals = sorted_rows(lake.read_arrow("medals_by_region", DS))

    # A run that staged every table and then failed: no table moved, the staged rows are invisible.
    with pytest.raises(RuntimeError, match="before its publish step"):
        run_olympics(engine, location, DS, run_id="failed", fail_before_publish=True)
    assert {t: lake.delta(t).version() for t in versions} == versions
    assert sorted_rows(lake.read_arrow("medals_by_region", DS)) == medals
    assert Lake(location, "olympics", run={"dag_id": "olympics_etl", "run_id": "failed"}).staged_entries()

    # Two runs for two days at once: both land, each in its own partition. Their drivers are two
    # threads of this process, as two jobs on one Dask worker are (which unlocks cached_property,
    # else two threads building Dask expressions deadlock on Python 3.11). Undone after the test: the
    # patch is process-wide, and tests/include/test_dask_job_driver.py needs the locked original.
    import functools

    from include.etl.clusters.dask_jobs import allow_concurrent_cached_property

    monkeypatch.setattr(functools.cached_property, "__get__", functools.cached_property.__get__)
    allow_concurrent_cached_property()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(run_olympics, engine, location, d, run_id=f"day-{d}") for d in (DS, DS2)]
        for r in runs:
            r.result()
    check_marts(lake, DS, expected)
    check_marts(lake, DS2, expected)
    # Time travel: the version before the last commit of DS still has the first run's rows.
    commits = [h for h in lake.history("medals_by_region") if h.get("ds") == DS]
    assert len(commits) == 2 and commits[0]["run_id"] == f"day-{DS}" and commits[1]["run_id"] == "first"
    assert sorted_rows(lake.read_arrow("medals_by_region", DS, version=commits[1]["version"])) == medals
