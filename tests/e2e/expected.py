"""Independent computation of the Olympics marts: SQLite over the raw CSV files.

Deliberately shares nothing with the project's code (no pandas, no narwhals, no parse
module): the csv module reads the files and SQL computes the expected marts.
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path
from typing import Any


def _load(db: sqlite3.Connection, table: str, path: Path, numeric: set[str]) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    db.execute(f"create table {table} ({', '.join(header)})")

    def value(col: str, v: str):
        if v in ("NA", ""):
            return None
        return float(v) if col in numeric else v

    db.executemany(
        f"insert into {table} values ({', '.join('?' * len(header))})",
        [[value(c, v) for c, v in zip(header, r, strict=True)] for r in body],
    )


def expected_marts(data_dir: Path, athletes: str = "athlete_events_head.csv") -> dict[str, list[tuple]]:
    db = sqlite3.connect(":memory:")
    _load(db, "athletes", data_dir / athletes, {"ID", "Age", "Height", "Weight", "Year"})
    _load(db, "regions", data_dir / "noc_regions.csv", set())
    avg = db.execute(
        """select cast(Year as int), Season, avg(Age), count(Age) from athletes
           group by Year, Season order by 1, 2"""
    ).fetchall()
    medals = db.execute(
        """select cast(a.Year as int), a.Season, coalesce(r.region, a.NOC) as reg,
                  sum(a.Medal = 'Gold'), sum(a.Medal = 'Silver'), sum(a.Medal = 'Bronze'), count(*)
           from athletes a left join regions r on r.NOC = a.NOC
           where a.Medal is not null
           group by 1, 2, 3 order by 1, 2, 3"""
    ).fetchall()
    rows = db.execute("select count(*) from athletes").fetchone()[0]
    return {"avg_age_by_year": avg, "medals_by_region": medals, "athletes": rows}


def _sorted(table) -> list[tuple]:
    rows = [tuple(r.values()) for r in table.to_pylist()]
    return sorted(rows, key=lambda r: tuple((x is None, x) for x in r[:3]))


def read_mart(path: Path) -> list[tuple]:
    """A published mart partition (``{lake}/{pipeline}/{table}/ds={ds}``) as sorted tuples (None for nulls)."""
    from tests.lake import read_partition

    return _sorted(read_partition(path))


def assert_marts_match(lake_root: Path | Any, ds: str, data_dir: Path, athletes: str = "athlete_events_head.csv",
                       expected: dict | None = None) -> None:
    """The published marts of ``ds`` equal :func:`expected_marts` (pass ``expected`` to reuse a computed one).

    ``lake_root``: a local lake directory, or a ``LakeLocation`` (an S3 lake)."""
    import math

    from include.etl.lake import Lake

    expected = expected or expected_marts(data_dir, athletes)
    lake = Lake(lake_root, "olympics")
    for table in ("avg_age_by_year", "medals_by_region", "enriched"):
        assert lake.has_partition(table, ds), f"{table} has no published partition ds={ds} in {lake.table_uri(table)}"
    avg = _sorted(lake.read_arrow("avg_age_by_year", ds))
    assert [(y, s, n) for y, s, _, n in avg] == [(y, s, n) for y, s, _, n in expected["avg_age_by_year"]]
    for (y, s, got, n), (_, _, want, _) in zip(avg, expected["avg_age_by_year"], strict=True):
        if n == 0:
            assert got is None or math.isnan(got), (y, s, got)
        else:
            assert math.isclose(got, want, rel_tol=1e-9), (y, s, got, want)
    assert _sorted(lake.read_arrow("medals_by_region", ds)) == expected["medals_by_region"]
    assert lake.row_count("enriched", ds) == expected["athletes"]
