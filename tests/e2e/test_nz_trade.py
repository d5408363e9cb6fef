"""nz_trade_etl end to end on the real Stats NZ file, on both engines.

* One ``bin/airflow dags test nz_trade_etl`` run (Dask) proves the DAG itself works: default
  input under ``ETL_DATA_DIR``, setup/teardown, marts published and equal to the oracle.
* The jobs run directly on module-scoped real clusters (one local Dask cluster, one local Spark
  Connect server, as ``test_spark_backend.py`` does) for the comparison on both engines.
* A small file (the real header, real rows and injected bad lines) checks the rejects: exact
  reasons and line numbers, ``rows_in = accepted + rejected``, the same on both engines.

The expected marts are computed here, independently of the project's code: the ``csv`` module
reads the raw file and SQLite computes the marts with SQL.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
import time
from pathlib import Path

import pytest

from include.etl.errors import RejectThresholdExceeded
from include.etl.jobs import JobContext, resolve_job
from include.etl.lake import Lake
from tests.conftest import DATA_ROOT
from tests.e2e.airflow_env import bin_airflow
from tests.lake import part, read_partition, rejects
from tests.lake import published as is_published
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow

DS = "2024-07-07"
TRADE = DATA_ROOT / "nz_trade" / "effects-of-covid-19-on-trade-at-15-december-2021-provisional.csv"
ROWS = 111_438
TABLES = ("trade", "enriched", "monthly_trade", "yearly_change")
MARTS = ("monthly_trade", "yearly_change")


# --- the independent computation: csv module + SQLite ------------------------------------------------


def expected_marts(path: Path) -> dict[str, list[tuple]]:
    """The marts by their definition, in SQL over the raw CSV (every row of the file is valid)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header == ["Direction", "Year", "Date", "Weekday", "Country", "Commodity", "Transport_Mode", "Measure",
                      "Value", "Cumulative"]
    assert all(re.fullmatch(r"\d\d/\d\d/\d{4}", r[2]) for r in body)  # so that substr() below is exact
    db = sqlite3.connect(":memory:")
    db.execute("create table trade (direction, year int, date, weekday, country, commodity, transport_mode, measure,"
               " value int, cumulative int)")
    db.executemany("insert into trade values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [(r[0], int(r[1]), *r[2:8], int(r[8]), int(r[9])) for r in body])
    keys = "direction, measure, country, commodity, transport_mode"
    monthly = db.execute(
        f"""select {keys}, substr(date, 7, 4) || '-' || substr(date, 4, 2) || '-01' as month, sum(value), count(*)
            from trade group by {keys}, month"""
    ).fetchall()
    yearly = db.execute(
        f"""with y as (select {keys}, cast(substr(date, 7, 4) as int) as year, sum(value) as value
                       from trade group by {keys}, year)
            select y.direction, y.measure, y.country, y.commodity, y.transport_mode, y.year, y.value, p.value,
                   case when p.value is null or p.value = 0 then null
                        else 100.0 * (y.value - p.value) / p.value end
            from y left join y as p
              on p.direction = y.direction and p.measure = y.measure and p.country = y.country
             and p.commodity = y.commodity and p.transport_mode = y.transport_mode and p.year = y.year - 1"""
    ).fetchall()
    return {"monthly_trade": sorted(monthly), "yearly_change": sorted(yearly, key=lambda r: r[:6]), "rows": len(body)}


def published(lake_root: Path, table: str) -> list[tuple]:
    """A published partition as sorted tuples (dates as ISO strings, None for nulls)."""
    rows = read_partition(part(lake_root, "nz_trade", table, DS)).to_pylist()
    out = [tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in r.values()) for r in rows]
    return sorted(out, key=lambda r: tuple((x is None, x) for x in r))


def assert_marts_equal_expected(lake_root: Path, expected: dict) -> None:
    assert published(lake_root, "monthly_trade") == expected["monthly_trade"]
    got = published(lake_root, "yearly_change")
    want = expected["yearly_change"]
    assert [r[:8] for r in got] == [r[:8] for r in want]
    for g, w in zip(got, want, strict=True):
        assert (g[8] is None) == (w[8] is None), (g, w)
        if w[8] is not None:
            assert math.isclose(g[8], w[8], rel_tol=1e-12), (g, w)


@pytest.fixture(scope="module")
def expected() -> dict:
    if not TRADE.is_file():
        pytest.fail(f"the NZ trade data set is missing: expected {TRADE} (ETL_DATA_DIR={DATA_ROOT})")
    t0 = time.monotonic()
    out = expected_marts(TRADE)
    print(f"sqlite oracle: {time.monotonic() - t0:.2f} s")
    return out


# --- the DAG itself: one `dags test` run on Dask ------------------------------------------------------


def test_dags_test_on_dask_publishes_the_expected_marts(airflow_home, expected):
    home = airflow_home
    t0 = time.monotonic()
    out = bin_airflow(home, "dags", "test", "nz_trade_etl", DS, "-c", json.dumps({"backend": "dask"}),
                      ETL_DATA_DIR=str(DATA_ROOT))  # the default trade_path, resolved under ETL_DATA_DIR
    print(f"dags test nz_trade_etl: {time.monotonic() - t0:.1f} s")
    logs = out.stdout + out.stderr
    assert out.returncode == 0, logs[-4000:]
    assert "state=success" in logs
    # every task ran once, in the DAG's order, and returned (pushed its XCom); none failed or was retried
    pushed = re.findall(r"Pushing xcom .*?task_id='(\w+)'", logs)
    # after the marts, the teardown and the run's publish step (both downstream of marts, in either order)
    assert pushed[:4] == ["start_cluster", "ingest_trade", "enrich_trade", "marts"], pushed
    assert sorted(pushed[4:]) == ["publish", "stop_cluster"], pushed
    assert "new_state=failed" not in logs and "up_for_retry" not in logs
    assert "Stopped the local Dask cluster" in logs
    assert processes_with_env(str(home)) == [], "cluster processes left running after the run"
    lake = home / "lake"
    nz = Lake(lake, "nz_trade")
    assert nz.row_count("trade", DS) == ROWS and nz.has_partition(nz.rejects("trade"), DS)  # an empty rejects partition
    assert read_partition(rejects(lake, "nz_trade", "trade", DS)).num_rows == 0
    assert_marts_equal_expected(lake, expected)
    assert len(published(lake, "enriched")) == expected["rows"] == ROWS
    # one commit per table (version 0 created it), by the run's publish step, recording the run
    for table in (*TABLES, nz.rejects("trade")):
        history = nz.history(table)
        assert [h["version"] for h in history] == [1, 0], (table, history)
        assert history[0]["dag_id"] == "nz_trade_etl" and history[0]["ds"] == DS, (table, history[0])
    assert list((lake / "nz_trade").glob("_runs/*")) == [], "the publish step left the run's staged entries"


# --- the jobs on module-scoped real clusters, both engines ---------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("nz-trade")


@pytest.fixture(scope="module")
def engines(real_engines) -> dict:
    return real_engines


@pytest.fixture(scope="module")
def dask_engine(engines):
    return engines["dask"]


def run_jobs(engine, lake_root: Path, source: str, max_reject_ratio: float = 0.01, upto: str = "marts") -> dict:
    """The nz_trade_etl DAG's jobs in order; each job's summary and wall time."""
    ctx = JobContext(engine=engine, lake=Lake(lake_root, "nz_trade"), ds=DS, max_reject_ratio=max_reject_ratio)
    steps = [("ingest", "nz_trade.ingest", {"table": "trade", "source": source}),
             ("enrich", "nz_trade.enrich", {}), ("marts", "nz_trade.marts", {})]
    out = {}
    for name, job, kwargs in steps:
        t0 = time.monotonic()
        out[name] = {"summary": resolve_job(job)(ctx, **kwargs), "seconds": round(time.monotonic() - t0, 2)}
        if name == upto:
            break
    return out


def table_of(path: Path):
    """(column types, pandas frame sorted on every column) of a published partition (:func:`tests.lake.part`)."""
    import pyarrow as pa

    table = read_partition(path).replace_schema_metadata(None)
    types = {f.name: ("string" if f.type in (pa.string(), pa.large_string()) else str(f.type)) for f in table.schema}
    frame = table.to_pandas()
    return types, frame.sort_values(list(frame.columns), na_position="last", kind="stable").reset_index(drop=True)


def assert_same_table(a: Path, b: Path) -> None:
    import pandas as pd

    types_a, frame_a = table_of(a)
    types_b, frame_b = table_of(b)
    assert types_a == types_b, f"{a} vs {b}"
    pd.testing.assert_frame_equal(frame_a, frame_b, check_exact=True, obj=str(a))


def test_marts_on_both_engines_equal_the_sql_computation_and_each_other(engines, base, expected):
    lakes = {name: base / f"lake-{name}" for name in engines}
    runs = {name: run_jobs(engine, lakes[name], str(TRADE)) for name, engine in engines.items()}
    for name, run in runs.items():
        print(name, {k: v["seconds"] for k, v in run.items()})
        ingest = run["ingest"]["summary"]
        assert (ingest["rows_in"], ingest["rows_accepted"], ingest["rows_rejected"]) == (ROWS, ROWS, 0), (name, ingest)
        assert ingest["extra_columns"] == []
        assert run["enrich"]["summary"]["rows_out"] == ROWS
        marts = run["marts"]["summary"]
        assert (marts["source_rows"], marts["first_date"], marts["last_date"]) == (ROWS, "2015-01-01", "2021-12-15")
        assert marts["monthly_trade"]["rows_out"] == len(expected["monthly_trade"])
        assert marts["yearly_change"]["rows_out"] == len(expected["yearly_change"])
        assert_marts_equal_expected(lakes[name], expected)
    for table in TABLES:
        assert_same_table(part(lakes["spark"], "nz_trade", table, DS),
                          part(lakes["dask"], "nz_trade", table, DS))
    types, yearly = table_of(part(lakes["dask"], "nz_trade", "yearly_change", DS))
    assert types == {"direction": "string", "measure": "string", "country": "string", "commodity": "string",
                     "transport_mode": "string", "year": "int64", "value": "int64", "previous_value": "int64",
                     "change_pct": "double"}
    assert table_of(part(lakes["dask"], "nz_trade", "monthly_trade", DS))[0]["month"] == "date32[day]"
    assert yearly["previous_value"].isna().sum() == 44  # every series' first year (2015)
    enriched = table_of(part(lakes["dask"], "nz_trade", "enriched", DS))[1]
    assert int(enriched["is_total"].sum()) == 2541 * 2 + 2525  # Exports $, Imports $ and Reimports $ totals


# --- rejects: a small file with injected bad rows ----------------------------------------------------

# (line in the file, raw line, reason); lines 2-13 are real rows (header on line 1).
BAD_LINES = [
    (14, "Exports,2021,29/02/2021,Monday,All,All,All,$,1000000,1000000",
     "Date is not a date of the form %d/%m/%Y"),  # an impossible date
    (15, "Exports,2015,01/01/2015,Friday,China,All,All,$,5000000,5000000",
     "breaks rule: Weekday is the day name of Date"),  # 1 January 2015 was a Thursday
    (16, "Exports,2016,02/01/2015,Friday,China,All,All,$,5000000,5000000",
     "breaks rule: Year is the year of Date"),
    (17, "Exports,2015,03/01/2015,Saturday,China,All,All,Litres,5000000,5000000", "Measure not in $/Tonnes"),
    (18, "Exports,2015,04/01/2015,Sunday,China,All,All,$,5 million,5000000", "Value is not a number"),
    (19, "Exports,2015,05/01/2015,Monday,,All,All,$,5000000,5000000", "missing required Country"),
    (20, "Exports,2015,06/01/2015,Tuesday,China,All,All,$,5000000", "expected 10 fields, found 9"),
]
TAIL_ROWS = 3  # real rows after the bad ones (lines 21-23)


def bad_rows_file(folder: Path) -> tuple[Path, int]:
    """Real header + 12 real rows (some with quoted commas) + the bad lines + 3 real rows, CRLF as the real file."""
    lines = TRADE.read_bytes().decode("ascii").split("\r\n")
    header, body = lines[0], [ln for ln in lines[1:] if ln]
    quoted = [ln for ln in body if '"' in ln][:4]
    good = body[:8] + quoted
    tail = body[-TAIL_ROWS:]
    assert len(good) == 12 and all(ln not in good for ln in tail)
    path = folder / "trade-with-bad-rows.csv"
    path.write_bytes(("\r\n".join([header, *good, *(raw for _, raw, _ in BAD_LINES), *tail]) + "\r\n").encode())
    return path, len(good) + len(tail)


@pytest.fixture(scope="module")
def bad_source(base) -> tuple[Path, int]:
    folder = base / "bad"
    folder.mkdir()
    return bad_rows_file(folder)


def test_injected_bad_rows_are_rejected_with_reason_and_line_on_both_engines(engines, base, bad_source):
    source, good = bad_source
    lakes = {name: base / f"bad-{name}" for name in engines}
    for name, engine in engines.items():
        run = run_jobs(engine, lakes[name], str(source), max_reject_ratio=1.0)
        ingest = run["ingest"]["summary"]
        assert ingest["rows_in"] == ingest["rows_accepted"] + ingest["rows_rejected"] == good + len(BAD_LINES), name
        assert (ingest["rows_accepted"], ingest["rows_rejected"]) == (good, len(BAD_LINES)), name
        assert ingest["rejects_path"] == Lake(lakes[name], "nz_trade").table_uri("_rejects/trade")
        rejected = table_of(rejects(lakes[name], "nz_trade", "trade", DS))[1].sort_values("_line")
        assert rejected[["_line", "_raw", "_reason"]].values.tolist() == [list(b) for b in BAD_LINES], name
        assert set(rejected["_source"]) == {str(source)}
        assert run["enrich"]["summary"]["rows_out"] == good
        assert run["marts"]["summary"]["source_rows"] == good
    for table in TABLES:
        assert_same_table(part(lakes["spark"], "nz_trade", table, DS),
                          part(lakes["dask"], "nz_trade", table, DS))
    assert_same_table(rejects(lakes["spark"], "nz_trade", "trade", DS),
                      rejects(lakes["dask"], "nz_trade", "trade", DS))


def test_too_many_rejects_publish_nothing(dask_engine, base, bad_source):
    source, good = bad_source  # 7 of 22 rows rejected, above the default limit of 1 %
    lake = base / "threshold"
    with pytest.raises(RejectThresholdExceeded, match=rf"7 of {good + 7} rows rejected .* above the limit of 1\.00%"):
        run_jobs(dask_engine, lake, str(source), upto="ingest")
    assert not is_published(part(lake, "nz_trade", "trade", DS))
    assert not is_published(rejects(lake, "nz_trade", "trade", DS))
    assert not Lake(lake, "nz_trade").exists("trade")  # nothing committed at all
