"""movies_etl's jobs end to end on the real movies files, on both engines (the shared module-scoped
Dask cluster and Spark Connect server, ``real_engines``).

* One ``bin/airflow dags test movies_etl`` run (Dask) proves the DAG itself: default inputs under
  ``ETL_DATA_DIR``, the marts published and equal to the oracle, the asset events carrying the
  ingest counts (the keywords' dropped copies included).
* The marts equal an independent computation over the raw files: DuckDB SQL over the CSVs, and
  Python's ``ast.literal_eval`` for the keyword lists (nothing from the project), and they are
  identical on both engines, column types included.
* Small files (real headers and rows, injected bad rows) check the contracts: exact lines and
  reasons on both engines, exact copies dropped and counted (``rows_in = accepted + rejected +
  duplicates_dropped``).
"""

from __future__ import annotations

import ast
import csv
import json
import math
import sqlite3
import time
from pathlib import Path

import pytest

from include.etl.jobs import JobContext, resolve_job
from include.etl.lake import Lake
from tests.conftest import DATA_ROOT
from tests.e2e.airflow_env import bin_airflow

pytestmark = pytest.mark.slow

DS = "2024-07-07"
MOVIES = DATA_ROOT / "movies"
FILES = {"ratings": MOVIES / "ratings_small.csv", "links": MOVIES / "links.csv", "keywords": MOVIES / "keywords.csv"}
MARTS = ("movie_ratings", "keyword_ratings", "ratings_by_year")
KEYS = {"movie_ratings": "movie_id", "keyword_ratings": "keyword_id", "ratings_by_year": "year"}


# --- the independent computation: DuckDB over the raw CSVs, ast.literal_eval for the keywords ---------


def expected_marts() -> dict[str, list[tuple]]:
    import duckdb
    import pandas as pd

    db = duckdb.connect()
    db.execute(f"""create table ratings as select * from read_csv('{FILES["ratings"]}', header = true,
                   columns = {{'userId': 'BIGINT', 'movieId': 'BIGINT', 'rating': 'DOUBLE', 'ts': 'BIGINT'}})""")
    db.execute(f"""create table links as select cast(movieId as bigint) as movieId, imdbId,
                   cast(nullif(tmdbId, '') as bigint) as tmdbId
                   from read_csv('{FILES["links"]}', header = true, all_varchar = true)""")
    assert db.execute("select count(*), min(length(imdbId)), max(length(imdbId)) from links").fetchone() == (45843, 7, 7)
    pairs = set()
    with open(FILES["keywords"], newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            pairs |= {(int(row["id"]), k["id"], k["name"]) for k in ast.literal_eval(row["keywords"])}
    db.register("keywords", pd.DataFrame(sorted(pairs), columns=["tmdb_id", "kw_id", "name"]))
    movies = db.execute("""
        with c as (select avg(rating) as c from ratings)
        select r.movieId, 'tt' || l.imdbId, l.tmdbId, count(*), avg(r.rating),
               (sum(r.rating) + 10 * c.c) / (count(*) + 10), min(r.ts), max(r.ts)
        from ratings r left join links l on l.movieId = r.movieId, c
        group by r.movieId, l.imdbId, l.tmdbId, c.c order by 1""").fetchall()
    keywords = db.execute("""
        with per_movie as (select movieId, count(*) as n, sum(rating) as s from ratings group by movieId),
             pairs as (select distinct p.movieId, k.kw_id, k.name, p.n, p.s
                       from per_movie p join links l on l.movieId = p.movieId join keywords k on k.tmdb_id = l.tmdbId)
        select kw_id, name, count(*), sum(n), sum(s) / sum(n) from pairs group by kw_id, name order by 1""").fetchall()
    years = db.execute("""
        select year(make_timestamp(ts * 1000000)) as y, count(*), count(distinct userId), avg(rating)
        from ratings group by y order by 1""").fetchall()
    rows = db.execute("select count(*) from ratings").fetchone()[0]
    return {"movie_ratings": movies, "keyword_ratings": keywords, "ratings_by_year": years, "ratings": rows}


def as_tuples(table) -> list[tuple]:
    """A mart's rows as tuples, timestamps as Unix seconds, sorted by its key."""
    rows = []
    for r in table.to_pylist():
        rows.append(tuple(int(v.timestamp()) if hasattr(v, "timestamp") else v for v in r.values()))
    return sorted(rows, key=lambda r: r[0])


def assert_rows_close(got: list[tuple], want: list[tuple], what: str) -> None:
    assert len(got) == len(want), what
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            ok = math.isclose(a, b, rel_tol=1e-9) if isinstance(b, float) else a == b
            assert ok, f"{what}: {g} != {w}"


@pytest.fixture(scope="module")
def expected() -> dict:
    missing = [str(p) for p in FILES.values() if not p.is_file()]
    if missing:
        pytest.fail(f"the movies data set is missing: {missing} (ETL_DATA_DIR={DATA_ROOT})")
    t0 = time.monotonic()
    out = expected_marts()
    print(f"duckdb oracle: {time.monotonic() - t0:.2f} s")
    return out


def test_dags_test_on_dask_publishes_the_marts_and_counts_in_asset_events(airflow_home, expected):
    t0 = time.monotonic()
    out = bin_airflow(airflow_home, "dags", "test", "movies_etl", DS, "-c", json.dumps({"backend": "dask"}),
                      ETL_DATA_DIR=str(DATA_ROOT))  # the default *_path inputs, under ETL_DATA_DIR
    print(f"dags test movies_etl: {time.monotonic() - t0:.1f} s")
    logs = out.stdout + out.stderr
    assert out.returncode == 0, logs[-4000:]
    assert "state=success" in logs and "new_state=failed" not in logs and "up_for_retry" not in logs
    lake = Lake(airflow_home / "lake", "movies")
    for mart in MARTS:
        assert_rows_close(as_tuples(lake.read_arrow(mart, DS)), expected[mart], f"dags test {mart}")
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute("SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                          "WHERE e.partition_key = ?", (DS,)).fetchall()
    events = {uri.rsplit("/", 1)[-1]: json.loads(extra) for uri, extra in rows}
    assert set(events) == {*MARTS, "ratings", "links", "keywords"}, events
    keywords = events["keywords"]
    assert (keywords["rows_in"], keywords["rows_accepted"], keywords["rows_rejected"], keywords["duplicates_dropped"]) == (
        46_419, 46_419 - 987, 0, 987), keywords
    assert events["movie_ratings"]["rows"] == len(expected["movie_ratings"])


@pytest.fixture(scope="module")
def engines(real_engines) -> dict:
    return real_engines


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("movies")


def ingest_all(engine, lake: Lake, files: dict[str, Path], max_reject_ratio: float = 0.01) -> dict:
    ctx = JobContext(engine=engine, lake=lake, ds=DS, max_reject_ratio=max_reject_ratio)
    return {table: resolve_job("movies.ingest")(ctx, table=table, source=str(path)) for table, path in files.items()}


def test_marts_on_both_engines_equal_the_independent_computation_and_each_other(engines, base, expected):
    tables = {}
    for name, engine in engines.items():
        lake = Lake(base / f"lake-{name}", "movies")
        t0 = time.monotonic()
        ingests = ingest_all(engine, lake, FILES)
        t1 = time.monotonic()
        marts = resolve_job("movies.marts")(JobContext(engine=engine, lake=lake, ds=DS))
        print(f"{name}: ingest {t1 - t0:.1f} s, marts {time.monotonic() - t1:.1f} s")
        counts = {t: (s["rows_in"], s["rows_accepted"], s["rows_rejected"], s["duplicates_dropped"])
                  for t, s in ingests.items()}
        assert counts == {"ratings": (100_004, 100_004, 0, 0), "links": (45_843, 45_843, 0, 0),
                          "keywords": (46_419, 46_419 - 987, 0, 987)}, name
        assert ingests["keywords"]["asset_events"]["keywords"]["duplicates_dropped"] == 987
        assert marts["ratings"] == expected["ratings"]
        tables[name] = {m: lake.read_arrow(m, DS) for m in MARTS}
        for mart in MARTS:
            assert marts[mart]["rows_out"] == len(expected[mart]), (name, mart)
            assert_rows_close(as_tuples(tables[name][mart]), expected[mart], f"{name} {mart}")
    for mart in MARTS:
        dask_t, spark_t = (tables[n][mart].sort_by(KEYS[mart]) for n in ("dask", "spark"))
        assert [(f.name, f.type) for f in dask_t.schema] == [(f.name, f.type) for f in spark_t.schema], mart
        assert_rows_close(as_tuples(spark_t), as_tuples(dask_t), f"spark vs dask {mart}")
    movie = tables["dask"]["movie_ratings"]
    assert str(movie.schema.field("first_rated").type) == "timestamp[us, tz=UTC]"
    no_link = [r for r in movie.to_pylist() if r["imdb_id"] is None]
    assert len(no_link) == 8 and all(r["tmdb_id"] is None for r in no_link)  # 8 rated movies have no link


# --- the contracts on small files with injected bad rows ----------------------------------------------------

RATINGS_BAD = {  # line -> reason
    "1,31,5.5,1260759144": "breaks rule: rating is 0.5 to 5.0 in steps of 0.5",
    "1,32,3.25,1260759144": "breaks rule: rating is 0.5 to 5.0 in steps of 0.5",
    "1,1029,4.0,1260759200": "duplicate key (userId, movieId)",
    "1,33,4.0,yesterday": "timestamp is not a Unix time in seconds",
    ",34,4.0,1260759144": "missing required userId",
    "1,35,four,1260759144": "rating is not a number",
}
LINKS_BAD = {
    "90001,114709,862": "breaks rule: imdbId is 7 digits",
    "90002,0114709,tt862": "tmdbId is not a number",
    "1,0114709,862": "duplicate key (movieId)",
}
KEYWORDS_BAD = {
    "90001,\"[{'id': 1, 'name': 'x'}\"": "keywords is not a Python literal",
    "90002,\"[{'id': 'one', 'name': 'x'}]\"": "keywords does not match list<struct<id: integer, name: string>>: "
                                             "[0].id is not an integer",
    "90003,__import__('os')": "keywords is not a Python literal",
    "862,[]": "duplicate key (id)",
}


def small_file(folder: Path, table: str, bad: dict[str, str], good_rows: int = 3) -> tuple[Path, list, list[str]]:
    """The real header and first rows (with the file's line ends), the bad rows, then a copy of the first row."""
    raw = FILES[table].read_bytes()
    newline = b"\r\n" if b"\r\n" in raw[:200] else b"\n"
    lines = raw.split(newline)[: 1 + good_rows]
    body = [*lines, *(b.encode() for b in bad), lines[1]]
    path = folder / FILES[table].name
    path.write_bytes(newline.join(body) + newline)
    expected = [(2 + good_rows + i, line, reason) for i, (line, reason) in enumerate(bad.items())]
    return path, expected, [lines[1].decode()]


def test_injected_bad_rows_are_rejected_with_reason_and_line_on_both_engines(engines, base):
    folder = base / "small"
    folder.mkdir()
    made = {t: small_file(folder, t, bad) for t, bad in
            (("ratings", RATINGS_BAD), ("links", LINKS_BAD), ("keywords", KEYWORDS_BAD))}
    accepted = {}
    for name, engine in engines.items():
        lake = Lake(base / f"small-{name}", "movies")
        ingests = ingest_all(engine, lake, {t: m[0] for t, m in made.items()}, max_reject_ratio=1.0)
        for table, (path, expected, _copy) in made.items():
            s = ingests[table]
            # the last line copies the first data row: a duplicate key, except keywords drops exact copies
            dropped = 1 if table == "keywords" else 0
            rejected = [*expected, (len(expected) + 5, _copy[0], f"duplicate key ({', '.join(lake_key(table))})")]
            rejected = rejected[:-1] if dropped else rejected
            assert (s["rows_in"], s["rows_accepted"], s["rows_rejected"], s["duplicates_dropped"]) == (
                3 + len(expected) + 1, 3, len(rejected), dropped), (name, table, s)
            assert s["rows_in"] == s["rows_accepted"] + s["rows_rejected"] + s["duplicates_dropped"]
            got = lake.read_arrow(lake.rejects(table), DS).sort_by("_line").to_pylist()
            assert [(r["_line"], r["_raw"], r["_reason"]) for r in got] == rejected, (name, table)
            assert {r["_source"] for r in got} == {str(path)}
            accepted[(name, table)] = lake.read_arrow(table, DS).to_pylist()
    for table in made:
        assert accepted[("dask", table)] == accepted[("spark", table)], table
    assert accepted[("dask", "links")][0] == {"movie_id": 1, "imdb_id": "0114709", "tmdb_id": 862}


def lake_key(table: str) -> tuple[str, ...]:
    from include.pipelines.movies.datasets import DATASETS

    return DATASETS[table].key
