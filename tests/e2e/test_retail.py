"""The retail pipeline on real clusters, checked against an independent computation.

* Real days of the shared data set (one with the two negative-price bad-debt lines the
  contract rejects) through ``retail.ingest_day`` >> ``retail.enrich`` >> ``retail.marts`` on a
  local Dask cluster and a local Spark Connect server: both daily marts equal SQL (sqlite3)
  over the raw day file, and the published tables have exactly the declared columns, the same
  as the empty partitions of a day without trading.
* A day file with injected bad lines (non-numeric quantity, non-numeric price, an
  ``InvoiceDate`` on another day, an impossible timestamp, a missing ``InvoiceNo``, a missing
  field) rejects exactly those lines, on both engines.
* ``bin/airflow dags test retail_daily <day>`` on Spark (the whole DAG, its asset events). A day
  without a file (no cluster, empty partitions of every table) runs through the scheduler in
  ``test_retail_scheduler.py``.

The oracle (:func:`oracle_sales_by_country`, ...) is written here, from the issue's definitions,
with the csv module and sqlite3: none of the project's code.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import DATA_ROOT
from tests.e2e.airflow_env import bin_airflow
from tests.lake import part as partition
from tests.lake import published, read_partition
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow

SHARED = DATA_ROOT
DAYS_DIR = SHARED / "retail" / "by-day"
needs_data = pytest.mark.usefixtures("shared_data")  # missing data fails, never skips
# Two real days per engine: a plain one, and the one with the two negative-price lines (rejected).
REAL_DAYS = ("2010-12-07", "2011-08-12")
BAD_DAY = "2011-11-16"

# ---------------------------------------------------------------- the independent computation

_LINES = """
CREATE TABLE raw (InvoiceNo TEXT, StockCode TEXT, Description TEXT, Quantity TEXT, InvoiceDate TEXT, UnitPrice TEXT,
                  CustomerID TEXT, Country TEXT, day TEXT);
"""
# Accepted lines of the real files (their only lines the contract rejects have a negative price),
# with the definitions: a sale line starts with neither C nor A and has Quantity > 0 and
# UnitPrice > 0; a cancellation starts with C. Money in whole thousandths (prices have <= 3 decimals).
_TYPED = """
CREATE VIEW lines AS SELECT
    InvoiceNo, StockCode, Country, day,
    CAST(Quantity AS INTEGER) AS q,
    CAST(ROUND(CAST(UnitPrice AS REAL) * 1000) AS INTEGER) AS pm,
    CASE WHEN CustomerID = '' THEN NULL ELSE CAST(CAST(CustomerID AS REAL) AS INTEGER) END AS cust,
    (substr(InvoiceNo, 1, 1) NOT IN ('C', 'A') AND CAST(Quantity AS INTEGER) > 0 AND CAST(UnitPrice AS REAL) > 0) AS sale,
    (substr(InvoiceNo, 1, 1) = 'C') AS cancel
FROM raw WHERE CAST(UnitPrice AS REAL) >= 0;
"""


def oracle_db(files: list[Path]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(_LINES + _TYPED)
    for path in files:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(*r.values(), path.stem) for r in csv.DictReader(f)]
        db.executemany("INSERT INTO raw VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return db


def oracle_sales_by_country(db: sqlite3.Connection) -> dict[str, tuple]:
    """country -> (invoices, customers, units, revenue_milli, cancelled_lines, cancelled_milli)."""
    rows = db.execute("""
        SELECT Country,
               COUNT(DISTINCT CASE WHEN sale THEN InvoiceNo END),
               COUNT(DISTINCT CASE WHEN sale THEN cust END),
               COALESCE(SUM(CASE WHEN sale THEN q END), 0),
               COALESCE(SUM(CASE WHEN sale THEN q * pm END), 0),
               SUM(cancel),
               COALESCE(SUM(CASE WHEN cancel THEN -q * pm END), 0)
        FROM lines GROUP BY Country""").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def oracle_sales_by_product(db: sqlite3.Connection) -> dict[str, tuple]:
    """stock_code -> (units, revenue_milli, invoices), stock codes with at least one sale line."""
    rows = db.execute("""
        SELECT StockCode, SUM(q), SUM(q * pm), COUNT(DISTINCT InvoiceNo)
        FROM lines WHERE sale GROUP BY StockCode""").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def oracle_period_by_country(db: sqlite3.Connection) -> dict[str, tuple]:
    """country -> (invoices, customers, units, revenue_milli) over every day loaded (distinct over all)."""
    return {k: v[:4] for k, v in oracle_sales_by_country(db).items()}


def milli(value: float) -> int:
    return int(round(value * 1000))


def read_table(path: Path) -> list[dict]:
    """The rows of a published partition (``{lake}/{pipeline}/{table}/ds={ds}``), as of its table's latest version."""
    assert published(path), f"nothing published at {path}"
    return read_partition(path).to_pylist()


def mart_by_country(path: Path) -> dict[str, tuple]:
    return {r["country"]: (r["invoices"], r["customers"], r["units"], milli(r["revenue"]), r["cancelled_lines"],
                           milli(r["cancelled_value"])) for r in read_table(path)}


def mart_by_product(path: Path) -> dict[str, tuple]:
    return {r["stock_code"]: (r["units"], milli(r["revenue"]), r["invoices"]) for r in read_table(path)}


def period_by_country(path: Path, column: str, label: str) -> dict[str, tuple]:
    rows = read_table(path)
    assert {r[column] for r in rows} == {label}, rows[:3]
    return {r["country"]: (r["invoices"], r["customers"], r["units"], milli(r["revenue"])) for r in rows}


# ---------------------------------------------------------------- clusters and jobs


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("retail-engines")


@pytest.fixture(scope="module")
def engines(real_engines):
    return real_engines


def run_day(engine, lake_root: Path, ds: str, source: Path) -> dict[str, dict]:
    """The daily jobs as the DAG runs them (ingest >> enrich >> marts), in this process."""
    from include.etl.jobs import get_job

    out = {}
    for name, kwargs in (("retail.ingest_day", {"source": str(source)}), ("retail.enrich", {}), ("retail.marts", {})):
        job = get_job(name)
        out[name] = job(job.context(engine=engine, lake_root=lake_root, ds=ds), **kwargs)
    return out


def _schema(path: Path) -> list[tuple[str, str]]:
    """(column, Arrow type) of a published partition as readers get it; Arrow's string and large_string
    are the same Parquet type (Dask's pandas strings are written as large_string)."""
    assert published(path), f"nothing published at {path}"
    return [(f.name, str(f.type).replace("large_string", "string")) for f in read_partition(path).schema]


@needs_data
@pytest.mark.parametrize("backend", ["dask", "spark"])
def test_daily_marts_of_real_days_equal_sql_over_the_raw_file(engines, base, backend):
    from include.etl.lake import Lake
    from include.etl.landing import publish_empty
    from include.pipelines.retail.datasets import TABLE_SCHEMAS

    lake_root = base / f"lake-{backend}"
    timings = {}
    for ds in REAL_DAYS:
        source = DAYS_DIR / f"{ds}.csv"
        t0 = time.monotonic()
        out = run_day(engines[backend], lake_root, ds, source)
        timings[ds] = round(time.monotonic() - t0, 1)
        db = oracle_db([source])
        raw_lines = db.execute("SELECT COUNT(*) FROM raw").fetchone()[0]
        negative = db.execute("SELECT COUNT(*) FROM raw WHERE CAST(UnitPrice AS REAL) < 0").fetchone()[0]
        ingest = out["retail.ingest_day"]
        assert (ingest["rows_in"], ingest["rows_rejected"]) == (raw_lines, negative), ingest
        events = out["retail.marts"]["asset_events"]
        assert events["sales_by_country"]["rejected"] == negative
        assert events["sales_by_country"]["invoice_lines"] == raw_lines - negative
        part = lake_root / "retail"
        assert mart_by_country(part / "sales_by_country" / f"ds={ds}") == oracle_sales_by_country(db), (backend, ds)
        assert mart_by_product(part / "sales_by_product" / f"ds={ds}") == oracle_sales_by_product(db), (backend, ds)
        enriched = read_table(part / "enriched_lines" / f"ds={ds}")
        assert len(enriched) == raw_lines - negative
        assert all(r["region"] for r in enriched), "a country of the data is missing from the reference"
        kinds = {r["line_kind"] for r in enriched}
        assert kinds <= {"sale", "cancellation", "adjustment", "other"} and "sale" in kinds
        for r in enriched[:200]:
            assert milli(r["line_total"]) == r["Quantity"] * milli(float(r["UnitPrice"]))
    # What the engine wrote has exactly the columns of an empty day's partitions.
    empty = publish_empty(Lake(base / "lake-empty", "retail"), "2011-11-05", TABLE_SCHEMAS)
    assert set(empty) == set(TABLE_SCHEMAS)
    for table in empty:
        assert _schema(partition(base / "lake-empty", "retail", table, "2011-11-05")) == _schema(
            partition(lake_root, "retail", table, REAL_DAYS[0])), (backend, table)
    print(f"{backend} daily jobs per day (s):", timings)


BAD_LINES = [  # (where to insert: after this many data lines, text, what the reason must mention)
    (10, "581999,22222,TEST QTY,abc,{day} 10:00:00,1.25,17850.0,United Kingdom", "Quantity"),
    (500, "581999,22222,TEST PRICE,5,{day} 10:00:00,1.2x,17850.0,United Kingdom", "UnitPrice"),
    (1500, "581999,22222,TEST OTHER DAY,5,2011-11-15 10:00:00,1.25,17850.0,United Kingdom", "InvoiceDate"),
    (2500, "581999,22222,TEST IMPOSSIBLE,5,{day} 24:61:00,1.25,17850.0,United Kingdom", "InvoiceDate"),
    (3000, ",22222,TEST NO INVOICE,5,{day} 10:00:00,1.25,17850.0,United Kingdom", "InvoiceNo"),
    (4000, "581999,22222,TEST SHORT,5,{day} 10:00:00,1.25,United Kingdom", "fields"),
]


@needs_data
def test_injected_bad_lines_are_rejected_exactly_on_both_engines(engines, base):
    source = DAYS_DIR / f"{BAD_DAY}.csv"
    text = source.read_text(encoding="utf-8").splitlines()
    header, data = text[0], text[1:]
    out_lines, expected = [header], {}
    inserted = 0
    for i, line in enumerate(data):
        out_lines.append(line)
        for after, bad, why in BAD_LINES:
            if after == i + 1:
                out_lines.append(bad.format(day=BAD_DAY))
                inserted += 1
                expected[len(out_lines)] = (bad.format(day=BAD_DAY), why)  # physical line number (header = 1)
    assert inserted == len(BAD_LINES)
    bad_file = base / "landing-bad" / f"{BAD_DAY}.csv"
    bad_file.parent.mkdir(exist_ok=True)
    bad_file.write_text("\n".join(out_lines) + "\n", encoding="utf-8")
    db = oracle_db([source])  # the marts: as if the bad lines were not there
    for backend in ("dask", "spark"):
        lake_root = base / f"lake-bad-{backend}"
        out = run_day(engines[backend], lake_root, BAD_DAY, bad_file)
        ingest = out["retail.ingest_day"]
        assert (ingest["rows_in"], ingest["rows_rejected"]) == (len(data) + len(BAD_LINES), len(BAD_LINES)), ingest
        rejects = read_table(lake_root / "retail" / "_rejects" / "invoice_lines" / f"ds={BAD_DAY}")
        got = {r["_line"]: (r["_raw"], r["_reason"]) for r in rejects}
        assert set(got) == set(expected), (backend, got)
        for line, (raw, why) in expected.items():
            assert got[line][0] == raw, (backend, line, got[line])
            assert why in got[line][1], (backend, line, got[line][1])
        part = lake_root / "retail"
        assert mart_by_country(part / "sales_by_country" / f"ds={BAD_DAY}") == oracle_sales_by_country(db), backend
        assert mart_by_product(part / "sales_by_product" / f"ds={BAD_DAY}") == oracle_sales_by_product(db), backend
        assert out["retail.marts"]["asset_events"]["sales_by_product"]["rejected"] == len(BAD_LINES)


# ---------------------------------------------------------------- the whole DAG, `dags test`


def _events(home: Path, ds: str) -> dict[str, dict]:
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                          "WHERE e.partition_key = ?", (ds,)).fetchall()
    return {uri.rsplit("/", 1)[-1]: json.loads(extra) for uri, extra in rows}


@needs_data
def test_dags_test_on_spark_processes_the_given_day(airflow_home, tmp_path):
    ds = "2011-11-29"
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(DAYS_DIR / f"{ds}.csv", landing)
    out = bin_airflow(airflow_home, "dags", "test", "retail_daily", ds, "-c",
                      json.dumps({"backend": "spark", "landing_dir": str(landing)}), timeout=900)
    logs = out.stdout + out.stderr
    assert out.returncode == 0 and "state=success" in logs, logs[-4000:]
    db = oracle_db([DAYS_DIR / f"{ds}.csv"])
    part = airflow_home / "lake" / "retail"
    assert mart_by_country(part / "sales_by_country" / f"ds={ds}") == oracle_sales_by_country(db)
    assert mart_by_product(part / "sales_by_product" / f"ds={ds}") == oracle_sales_by_product(db)
    events = _events(airflow_home, ds)
    assert set(events) == {"invoice_lines", "enriched_lines", "sales_by_country", "sales_by_product"}, events
    lines = db.execute("SELECT COUNT(*) FROM raw").fetchone()[0]
    assert events["invoice_lines"]["rows"] == lines and events["invoice_lines"]["rejected"] == 0
    assert events["sales_by_country"]["rows"] == len(oracle_sales_by_country(db))
    assert events["sales_by_product"]["rows"] == len(oracle_sales_by_product(db))
    assert not any(e["empty_day"] for e in events.values())
    assert "spark (a classic session in the run's process)" in logs  # the engine that ran the jobs
    assert processes_with_env(str(airflow_home)) == [], "cluster processes left running after the run"
