"""Independent computation of the Olympics marts: SQLite over the raw CSV files.

Deliberately shares nothing with the project's code (no pandas, no narwhals, no parse
module): the csv module reads the files and SQL computes the expected marts.
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path


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


def read_mart(path: Path) -> list[tuple]:
    """A published mart partition as sorted tuples (None for nulls)."""
    from tests.lake import read_partition

    table = read_partition(path)
    rows = [tuple(r.values()) for r in table.to_pylist()]
    return sorted(rows, key=lambda r: tuple((x is None, x) for x in r[:3]))


def assert_marts_match(lake_root: Path, ds: str, data_dir: Path, athletes: str = "athlete_events_head.csv",
                       expected: dict | None = None) -> None:
    """The published marts of ``ds`` equal :func:`expected_marts` (pass ``expected`` to reuse a computed one)."""
    import math

    expected = expected or expected_marts(data_dir, athletes)
    base = lake_root / "olympics"
    avg = read_mart(base / "avg_age_by_year" / f"ds={ds}")
    assert [(y, s, n) for y, s, _, n in avg] == [(y, s, n) for y, s, _, n in expected["avg_age_by_year"]]
    for (y, s, got, n), (_, _, want, _) in zip(avg, expected["avg_age_by_year"], strict=True):
        if n == 0:
            assert got is None or math.isnan(got), (y, s, got)
        else:
            assert math.isclose(got, want, rel_tol=1e-9), (y, s, got, want)
    medals = read_mart(base / "medals_by_region" / f"ds={ds}")
    assert medals == expected["medals_by_region"]
    enriched = read_mart(base / "enriched" / f"ds={ds}")
    assert len(enriched) == expected["athletes"]
