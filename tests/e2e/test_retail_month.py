"""A whole real month through the retail pipeline on both engines, rolled up, against SQL.

Every day of :data:`MONTH` (December 2010: 31 days, 20 with a landing file, 11 without: the
Saturdays and the Christmas break) goes through the daily jobs as ``retail_daily`` runs them
(``retail.ingest_day`` >> ``retail.enrich`` >> ``retail.marts``, or ``retail.empty_day`` for a day
without a file), then ``retail.check_period`` and ``retail.rollup`` for the month, as
``retail_monthly`` runs them; in this process, on the shared local Dask cluster and Spark
Connect server (``real_engines``). Then:

* ``monthly_sales_by_country`` (and every day's ``sales_by_country``) equal SQL (sqlite3) over the
  raw landing files, with the contract's rejects (README of the pipeline) and the marts' definitions
  written here, none of the project's code;
* every daily table has one schema over the month, days without trading included, on both
  engines: the columns and Arrow types declared in ``datasets.TABLE_SCHEMAS``.

A month is more than 15 daily partitions: Dask used to fail the rollup while planning it
(``KeyError: "['Country'] not in index"``, a group-by's ``split_out`` then a join), and its
trading days wrote text as ``large_string`` where the empty days (and Spark) write ``string``.
"""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import DATA_ROOT
from tests.lake import lake_of, read_partition

pytestmark = pytest.mark.slow

DAYS_DIR = DATA_ROOT / "retail" / "by-day"
MONTH, LABEL = "2010-12-01", "2010-12"
TRADING_DAYS = 20  # landing files of the month in the data set (its README: 297 files, 2010-12-01 .. 2011-11-30)
BACKENDS = ("dask", "spark")
HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]


def month_days() -> list[str]:
    start = dt.date.fromisoformat(MONTH)
    days, day = [], start
    while day.month == start.month:
        days.append(day.isoformat())
        day += dt.timedelta(days=1)
    return days


def landing_files() -> dict[str, Path]:
    """The month's landing files by day; fails (never skips) when the data set is not there."""
    if not DAYS_DIR.is_dir():
        pytest.fail(f"the retail data set is missing: expected the landing files in {DAYS_DIR} (ETL_DATA_DIR={DATA_ROOT})")
    files = {d: DAYS_DIR / f"{d}.csv" for d in month_days() if (DAYS_DIR / f"{d}.csv").is_file()}
    if len(files) != TRADING_DAYS:
        pytest.fail(f"{len(files)} landing files of {LABEL} in {DAYS_DIR}, expected the data set's {TRADING_DAYS} "
                    f"({DAYS_DIR}/{MONTH[:8]}DD.csv): the data set is incomplete")
    return files


# ---------------------------------------------------------------- the independent computation

# One row per physical data line of the month's files, as text.
_RAW = """
CREATE TABLE raw (day TEXT, fields INTEGER, InvoiceNo TEXT, StockCode TEXT, Description TEXT, Quantity TEXT,
                  InvoiceDate TEXT, UnitPrice TEXT, CustomerID TEXT, Country TEXT);
"""
# The contract (include/pipelines/retail/README.md): InvoiceNo, StockCode, Quantity (an integer),
# InvoiceDate (YYYY-MM-DD HH:MM:SS, on the file's day), UnitPrice (a decimal with at most 3
# places, >= 0) and Country required; CustomerID optional, a whole number written as a float.
# Every other line is rejected. Sale line: InvoiceNo starts with neither C nor A, Quantity > 0
# and UnitPrice > 0; cancellation: InvoiceNo starts with C. Money in whole thousandths.
_VALID = """
    fields = 8 AND InvoiceNo <> '' AND StockCode <> '' AND Country <> ''
    AND Quantity GLOB '[-0-9]*' AND Quantity <> '-' AND substr(Quantity, 2) NOT GLOB '*[^0-9]*'
    AND length(InvoiceDate) = 19 AND substr(InvoiceDate, 1, 10) = day
    AND UnitPrice GLOB '[0-9]*' AND UnitPrice NOT GLOB '*[^0-9.]*'
    AND (instr(UnitPrice, '.') = 0 OR length(UnitPrice) - instr(UnitPrice, '.') <= 3)
    AND (CustomerID = '' OR CAST(CustomerID AS REAL) = CAST(CAST(CustomerID AS REAL) AS INTEGER))
"""
_LINES = f"""
CREATE VIEW lines AS SELECT
    day, InvoiceNo, Country,
    CAST(Quantity AS INTEGER) AS q,
    CAST(ROUND(CAST(UnitPrice AS REAL) * 1000) AS INTEGER) AS pm,
    CASE WHEN CustomerID = '' THEN NULL ELSE CAST(CAST(CustomerID AS REAL) AS INTEGER) END AS cust,
    (substr(InvoiceNo, 1, 1) NOT IN ('C', 'A') AND CAST(Quantity AS INTEGER) > 0
     AND CAST(UnitPrice AS REAL) > 0) AS sale,
    (substr(InvoiceNo, 1, 1) = 'C') AS cancel
FROM raw WHERE {_VALID};
"""


def oracle(files: dict[str, Path]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(_RAW + _LINES)
    for day, path in files.items():
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            assert next(reader) == HEADER, path
            rows = [(day, len(r), *(r + [""] * 8)[:8]) for r in reader]
        db.executemany("INSERT INTO raw VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return db


def oracle_month(db: sqlite3.Connection) -> dict[str, tuple]:
    """country -> (invoices, customers, units, revenue in thousandths) over the whole month."""
    rows = db.execute("""
        SELECT Country,
               COUNT(DISTINCT CASE WHEN sale THEN InvoiceNo END),
               COUNT(DISTINCT CASE WHEN sale THEN cust END),
               COALESCE(SUM(CASE WHEN sale THEN q END), 0),
               COALESCE(SUM(CASE WHEN sale THEN q * pm END), 0)
        FROM lines GROUP BY Country""").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def oracle_days(db: sqlite3.Connection) -> dict[str, dict[str, tuple]]:
    """day -> country -> (invoices, customers, units, revenue, cancelled lines, cancelled value) of that day."""
    out: dict[str, dict[str, tuple]] = {}
    for day, country, *values in db.execute("""
        SELECT day, Country,
               COUNT(DISTINCT CASE WHEN sale THEN InvoiceNo END),
               COUNT(DISTINCT CASE WHEN sale THEN cust END),
               COALESCE(SUM(CASE WHEN sale THEN q END), 0),
               COALESCE(SUM(CASE WHEN sale THEN q * pm END), 0),
               SUM(cancel),
               COALESCE(SUM(CASE WHEN cancel THEN -q * pm END), 0)
        FROM lines GROUP BY day, Country"""):
        out.setdefault(day, {})[country] = tuple(values)
    return out


def milli(value: float) -> int:
    return int(round(value * 1000))


def rows(partition: Path) -> list[dict]:
    return read_partition(partition).to_pylist()


# ---------------------------------------------------------------- the month, on both engines


def run(engine, lake_root: Path, name: str, ds: str, **kwargs) -> dict:
    from include.etl.jobs import get_job

    job = get_job(name)
    return job(job.context(engine=engine, lake_root=lake_root, ds=ds), **kwargs)


def run_day(engine, lake_root: Path, ds: str, source: Path | None) -> None:
    """One day as ``retail_daily`` runs it: the three jobs, or the empty partitions of a day without a file."""
    if source is None:
        run(engine, lake_root, "retail.empty_day", ds, path=str(DAYS_DIR / f"{ds}.csv"),
            deadline="the test's deadline", decided="no file")
        return
    for name, kwargs in (("retail.ingest_day", {"source": str(source)}), ("retail.enrich", {}), ("retail.marts", {})):
        run(engine, lake_root, name, ds, **kwargs)


def run_rollup(engine, lake_root: Path) -> dict:
    """The month's run of ``retail_monthly``: ``check_period`` then ``rollup``."""
    t0 = time.monotonic()
    check = run(engine, lake_root, "retail.check_period", MONTH, period="month")
    rollup = run(engine, lake_root, "retail.rollup", MONTH, period="month")
    return {"lake": lake_root / "retail", "check": check, "rollup": rollup, "seconds": round(time.monotonic() - t0, 1)}


@pytest.fixture(scope="module")
def files() -> dict[str, Path]:
    return landing_files()


@pytest.fixture(scope="module")
def db(files) -> sqlite3.Connection:
    return oracle(files)


@pytest.fixture(scope="module")
def month(request, tmp_path_factory, files) -> dict[str, dict]:
    """The month on both engines (``real_engines``, asked for once the data is known to be there),
    one job at a time: days run in threads of this process hung (Dask and Spark jobs alike)."""
    real_engines = request.getfixturevalue("real_engines")
    base = tmp_path_factory.mktemp("retail-month")
    out, seconds = {}, {}
    for backend in BACKENDS:
        lake_root = base / f"lake-{backend}"
        t0 = time.monotonic()
        for ds in month_days():
            run_day(real_engines[backend], lake_root, ds, files.get(ds))
        out[backend] = run_rollup(real_engines[backend], lake_root)
        seconds[backend] = {"daily runs": round(time.monotonic() - t0 - out[backend]["seconds"], 1),
                            "rollup": out[backend]["seconds"]}
    print(f"{LABEL}: {len(files)} days with a file, {len(month_days()) - len(files)} without; seconds:", seconds)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_month_rollup_equals_sql_over_the_raw_files(month, db, files, backend):
    done = month[backend]
    days = month_days()
    assert done["check"]["complete"] and done["check"]["missing"] == [], done["check"]
    rollup = done["rollup"]
    mart = rows(done["lake"] / "monthly_sales_by_country" / f"ds={MONTH}")
    assert {r["month"] for r in mart} == {LABEL}
    got = {r["country"]: (r["invoices"], r["customers"], r["units"], milli(r["revenue"])) for r in mart}
    assert len(got) == len(mart), "a country twice in the mart"
    assert got == oracle_month(db), backend
    accepted = db.execute("SELECT COUNT(*) FROM lines").fetchone()[0]
    rejected = db.execute("SELECT COUNT(*) FROM raw").fetchone()[0] - accepted
    extra = rollup["asset_events"]["monthly_sales_by_country"]
    assert (extra["rows"], extra["days"], extra["trading_days"], extra["empty_days"], extra["invoice_lines"]) == (
        len(got), len(days), len(files), len(days) - len(files), accepted), extra
    assert rollup["trading_days"] == sorted(files)
    assert rollup["report"] == lake_of(done["lake"] / "monthly_sales_by_country" / f"ds={MONTH}")[0].report_uri(
        "monthly_sales_by_country", MONTH, "report.html")
    assert (done["lake"] / "_reports" / "monthly_sales_by_country" / f"ds={MONTH}" / "report.html").is_file()
    # Every day's mart (the rollup checks itself against them) and its rejects, days without trading included.
    expected_days = oracle_days(db)
    lake = done["lake"]
    n_rejected = 0
    for day in days:
        by_country = {r["country"]: (r["invoices"], r["customers"], r["units"], milli(r["revenue"]),
                                     r["cancelled_lines"], milli(r["cancelled_value"]))
                      for r in rows(lake / "sales_by_country" / f"ds={day}")}
        assert by_country == expected_days.get(day, {}), (backend, day)
        n_rejected += len(rows(lake / "_rejects" / "invoice_lines" / f"ds={day}"))
    assert n_rejected == rejected, backend


def test_every_daily_table_has_one_schema_over_the_month_on_both_engines(month):
    """One schema per table: the same columns and Arrow types on every day (with or without
    trading) and on both engines, the ones ``TABLE_SCHEMAS`` declares (``string``, never
    ``large_string``). Nullability aside: Spark marks the columns it computes not null."""
    from include.etl.landing import schema
    from include.pipelines.retail.datasets import TABLE_SCHEMAS

    for table, columns in TABLE_SCHEMAS.items():
        declared = [(f.name, str(f.type)) for f in schema(columns)]
        for backend in BACKENDS:
            lake = lake_of(month[backend]["lake"] / table / f"ds={MONTH}")[0]
            assert [(f.name, str(f.type)) for f in lake.schema(table)] == declared, (backend, table)  # the table's
            assert set(month_days()) <= lake.published_days(table), (backend, table)
            files = [Path(lake.engine_path(f)) for f in lake.files(table, month_days())]  # the latest version's
            by_day = {f: next(p for p in f.parts if p.startswith("ds=")) for f in files}
            assert set(by_day.values()) == {f"ds={d}" for d in month_days()}, (backend, table)  # >= 1 file a day
            seen: dict[str, list[str]] = {}
            for f, day in by_day.items():
                found = str([(c.name, str(c.type)) for c in pq.read_schema(f)])
                seen.setdefault(found, []).append(f"{day}/{f.name}")
            assert list(seen) == [str(declared)], (backend, table, {k: v[:3] for k, v in seen.items()})
