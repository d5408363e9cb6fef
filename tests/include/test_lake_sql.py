"""SQL over the lake (include/etl/lake/sql.py) on a small lake of two pipelines built here with Lake.stage/commit.

In process, no Airflow: tables by name across pipelines, rejects by name, the row cap, the time
limit, every kind of statement refused (writes, COPY, ATTACH, INSTALL/LOAD, PRAGMA, SET, files,
URLs, Python variables), readable errors for unknown tables and bad syntax, JSON-friendly values,
the settings' lake by default, and a year of daily partitions answered within the 2 s target.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.etl.lake import Lake
from include.etl.lake.sql import (
    LakeSQLError,
    QueryRefused,
    QuerySyntaxError,
    QueryTimeout,
    UnknownTable,
    query,
    tables,
)

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
SLOW = "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = 7"


def _publish(lake: Lake, table: str, ds: str, data: pa.Table) -> None:
    staged = lake.stage(table, ds)
    path = Path(lake.engine_path(staged))
    path.mkdir(parents=True)
    pq.write_table(data, path / "part-0.parquet")
    lake.commit(table, ds, staged)


@pytest.fixture(scope="module")
def lake_uri(tmp_path_factory) -> str:
    """``demo.sales`` (4 rows a day, 3 days), its rejects (1 row), ``shop.orders`` (2 rows a day)."""
    root = tmp_path_factory.mktemp("lake")
    demo, shop = Lake(root, "demo"), Lake(root, "shop")
    for i, ds in enumerate(DAYS):
        _publish(demo, "sales", ds, pa.table({"country": ["UK", "FR", "DE", "ES"],
                                              "revenue": [10.0 * i + k for k in range(4)]}))
        _publish(shop, "orders", ds, pa.table({"order_id": [2 * i, 2 * i + 1], "country": ["UK", "FR"]}))
    _publish(demo, Lake.rejects("sales"), DAYS[0], pa.table({"line": [7], "reason": ["negative price"]}))
    return demo.root.uri


def test_every_table_by_name(lake_uri):
    assert [t.name for t in tables(lake_uri)] == ["demo._rejects_sales", "demo.sales", "shop.orders"]
    joined = query("SELECT s.ds, s.country, s.revenue, o.order_id FROM demo.sales s "
                   "JOIN shop.orders o USING (ds, country) WHERE s.ds = '2024-01-02' ORDER BY o.order_id", lake=lake_uri)
    assert joined.columns == ["ds", "country", "revenue", "order_id"]
    assert joined.rows == [("2024-01-02", "UK", 10.0, 2), ("2024-01-02", "FR", 11.0, 3)]
    assert not joined.truncated and joined.elapsed_s > 0
    assert sorted(joined.tables) == ["demo.sales", "shop.orders"]  # only what the statement names is opened
    rejects = query("SELECT ds, reason FROM demo._rejects_sales", lake=lake_uri)
    assert rejects.rows == [("2024-01-01", "negative price")]
    per_day = query("SELECT ds, count(*) AS n FROM demo.sales GROUP BY ds ORDER BY ds", lake=lake_uri)
    assert per_day.rows == [(d, 4) for d in DAYS] and per_day.types == ["VARCHAR", "BIGINT"]


def test_catalog_statements_see_the_whole_lake(lake_uri):
    shown = query("SHOW ALL TABLES", lake=lake_uri)
    assert {(r[1], r[2]) for r in shown.rows} >= {("demo", "sales"), ("demo", "_rejects_sales"), ("shop", "orders")}
    described = query("DESCRIBE demo.sales", lake=lake_uri)
    assert [r[0] for r in described.rows] == ["country", "revenue", "ds"]


def test_row_cap(lake_uri):
    capped = query("SELECT * FROM demo.sales ORDER BY ds, country", lake=lake_uri, max_rows=5)
    assert len(capped.rows) == 5 and capped.truncated and capped.max_rows == 5
    assert capped.rows[0] == ("DE", 2.0, "2024-01-01")
    exact = query("SELECT * FROM demo.sales", lake=lake_uri, max_rows=12)
    assert len(exact.rows) == 12 and not exact.truncated
    assert query("SELECT * FROM range(25000)", lake=lake_uri).truncated  # the default cap: 10,000 rows
    with pytest.raises(ValueError, match="max_rows"):
        query("SELECT 1", lake=lake_uri, max_rows=0)


def test_time_limit(lake_uri):
    t = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"query exceeded 0\.5 s"):
        query(SLOW, lake=lake_uri, timeout_s=0.5)
    assert time.monotonic() - t < 10
    assert query("SELECT 42", lake=lake_uri).rows == [(42,)]  # nothing left behind


@pytest.mark.parametrize("sql", [
    "INSERT INTO demo.sales VALUES ('XX', 1.0, '2024-01-09')",
    "CREATE TABLE t AS SELECT 1",
    "DELETE FROM demo.sales",
    "COPY (SELECT * FROM demo.sales) TO '/tmp/out.csv'",
    "ATTACH '/tmp/other.db'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA version",
    "EXPLAIN ANALYZE SELECT 1",
    "SELECT 1; SELECT 2",
    "",
])
def test_only_one_select_runs(lake_uri, sql):
    with pytest.raises(QueryRefused):
        query(sql, lake=lake_uri)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
])
def test_no_file_or_network_access(lake_uri, sql):
    with pytest.raises(QueryRefused, match="Only the lake's tables can be read") as caught:
        query(sql, lake=lake_uri)
    assert "root:" not in str(caught.value)


def test_no_python_variables_or_files_as_tables(lake_uri, tmp_path):
    secret = pa.table({"s": ["do not show"]})  # noqa: F841 - DuckDB would find it by name in this frame
    with pytest.raises(UnknownTable):
        query("SELECT * FROM secret", lake=lake_uri)
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(LakeSQLError):
        query(f"SELECT * FROM '{tmp_path / 'x.csv'}'", lake=lake_uri)


def test_unknown_table_lists_the_lake(lake_uri):
    with pytest.raises(UnknownTable) as caught:
        query("SELECT * FROM demo.nope", lake=lake_uri)
    message = str(caught.value)
    assert "nope" in message and "demo._rejects_sales, demo.sales, shop.orders" in message
    assert caught.value.tables == ["demo._rejects_sales", "demo.sales", "shop.orders"]
    with pytest.raises(UnknownTable, match="shop.orders"):
        query("SELECT * FROM elsewhere.orders", lake=lake_uri)


def test_syntax_error(lake_uri):
    with pytest.raises(QuerySyntaxError, match='syntax error at or near "SELEC"'):
        query("SELEC * FROM demo.sales", lake=lake_uri)


def test_values_are_json_friendly(lake_uri):
    result = query("SELECT 1.5::DECIMAL(10, 2) AS d, DATE '2024-01-02' AS day, TIMESTAMP '2024-01-02 03:04:05' AS ts, "
                   "INTERVAL 3 DAY AS i, 'nan'::DOUBLE AS n, 'inf'::DOUBLE AS inf, 'ab'::BLOB AS b, [1, NULL] AS l, "
                   "{'k': DATE '2024-01-01'} AS s, NULL AS nothing, true AS yes, '00000000-0000-0000-0000-000000000001'"
                   "::UUID AS u", lake=lake_uri)
    assert result.rows == [(1.5, "2024-01-02", "2024-01-02T03:04:05", "3 days, 0:00:00", "NaN", "Infinity", "ab",
                            [1, None], {"k": "2024-01-01"}, None, True, "00000000-0000-0000-0000-000000000001")]
    json.dumps(result.to_dict(), allow_nan=False)


def test_the_settings_lake_by_default(lake_uri, monkeypatch):
    monkeypatch.setenv("ETL_LAKE_URI", lake_uri)
    assert query("SELECT count(*) FROM shop.orders").rows == [(6,)]


def test_a_year_of_daily_partitions_in_one_query(tmp_path):
    """365 partitions (files) of one table: a whole-table aggregate and a one-day filter."""
    from deltalake import write_deltalake

    days = [(dt.date(2023, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(365)]
    data = pa.table({"country": ["UK", "FR"] * 365, "revenue": [1.0] * 730, "ds": [d for d in days for _ in "ab"]})
    write_deltalake(str(tmp_path / "year" / "daily"), data, partition_by=["ds"])
    query("SELECT 1", lake=tmp_path)  # imports (pyarrow.dataset, pandas) are paid once per process
    total = query("SELECT country, sum(revenue), count(DISTINCT ds) FROM year.daily GROUP BY 1 ORDER BY 1", lake=tmp_path)
    assert total.rows == [("FR", 365.0, 365), ("UK", 365.0, 365)]
    assert query("SELECT count(*) FROM year.daily WHERE ds = '2023-07-01'", lake=tmp_path).rows == [(2,)]
    # Its time is measured by `make bench` (bench/lake_storage.py), never asserted on a noisy machine.
