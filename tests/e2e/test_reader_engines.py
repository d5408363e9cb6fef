"""The reader on both real clusters: a local Dask cluster and a local Spark Connect server.

- a generated multi-block file (quoted line breaks of every kind across block boundaries,
  stray quotes, bad rows): identical accepted and rejected tables on both engines, equal to the
  in-process reader, with exact line numbers;
- the real data sets in ../shared/data through their contracts, read in several blocks:
  the whole athletes file, the NZ trade file and all 297 retail day files (on Dask; Spark reads a
  sample of them and must agree file by file), with the counts.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from include.etl.contract import Column, Dataset, on_partition_day
from tests.conftest import DATA_ROOT
from tests.include.test_reader import read as read_in_process

pytestmark = pytest.mark.slow

SHARED = DATA_ROOT
ATHLETES = SHARED / "olympics" / "athlete_events.csv"
TRADE = SHARED / "nz_trade" / "effects-of-covid-19-on-trade-at-15-december-2021-provisional.csv"
RETAIL = SHARED / "retail" / "by-day"
needs_data = pytest.mark.usefixtures("shared_data")  # missing data fails, never skips


@pytest.fixture(scope="module")
def engines(real_engines):
    return real_engines


def split(engine, frame, out: Path) -> tuple[pa.Table, pa.Table]:
    accepted, rejected, dropped = engine.write_split(frame, str(out / "accepted"), str(out / "rejects"))
    assert dropped == 0
    acc = pq.read_table(out / "accepted")
    rej = pq.read_table(out / "rejects").sort_by("_line")
    assert (acc.num_rows, rej.num_rows) == (accepted, rejected)
    return acc, rej


PEOPLE = Dataset("people", (
    Column("ID", "integer", required=True),
    Column("Name"),
    Column("Age", "integer", range=(0, 120)),
    Column("Born", "date", format="%d/%m/%Y"),
))


def _people_file(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    lines = ["ID,Name,Age,Born"]
    for i in range(1, rows + 1):
        kind = rng.random()
        nl = rng.choice(["\n", "\r\n", "\r"])
        if kind < 0.05:
            name = f'"first{nl}second ""{i}"""'  # a quoted line break
        elif kind < 0.08:
            name = f'FRAME {i}" WIDE'  # a stray quote, part of the value
        else:
            name = f'"name, {i}"'
        age = "abc" if kind > 0.995 else str(i % 100)
        extra = ",x" if 0.99 < kind <= 0.993 else ""
        lines.append(f"{i},{name},{age},{i % 28 + 1}/{i % 12 + 1}/19{i % 100:02d}{extra}")
        if i % 7919 == 0:  # a data line equal to the header is a record like any other (Spark once dropped it)
            lines.append(lines[0])
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def test_multi_block_file_is_read_identically_on_both_engines(engines, tmp_path):
    path = tmp_path / "people.csv"
    _people_file(path, 30_000)
    block = 64 * 1024  # ~20 blocks: many records with line breaks straddle a naive boundary
    reference = read_in_process(path, PEOPLE, block_bytes=block)
    ref_ok = reference.filter(pc.is_null(reference["_reason"])).select(list(PEOPLE.names)).sort_by("ID")
    ref_bad = reference.filter(pc.is_valid(reference["_reason"])).select(["_line", "_raw", "_reason"])
    assert ref_bad.num_rows > 100 and ref_ok.num_rows > 29_000
    header_lines = [r for r in ref_bad.to_pylist() if r["_raw"] == "ID,Name,Age,Born"]
    assert [r["_reason"] for r in header_lines] == ["ID is not a number"] * 3
    results = {}
    for name, engine in engines.items():
        t0 = time.monotonic()
        acc, rej = split(engine, engine.read_csv(str(path), PEOPLE, ds=None, block_bytes=block), tmp_path / name)
        results[name] = (acc.sort_by("ID"), rej.select(["_line", "_raw", "_reason"]))
        print(f"{name}: {acc.num_rows} accepted, {rej.num_rows} rejected in {time.monotonic() - t0:.2f} s")
    for name, (acc, rej) in results.items():
        assert acc.equals(ref_ok.cast(acc.schema)), name
        assert rej.to_pylist() == ref_bad.to_pylist(), name
    assert rej.num_rows + acc.num_rows == 30_000 + 3


@needs_data
@pytest.mark.parametrize("which", ["athletes", "trade"])
def test_real_files_through_their_contracts_on_both_engines(engines, tmp_path, which):
    from include.pipelines.nz_trade.datasets import TRADE as TRADE_DS
    from include.pipelines.olympics.datasets import ATHLETES as ATHLETES_DS

    path, dataset, rows = {"athletes": (ATHLETES, ATHLETES_DS, 271_116), "trade": (TRADE, TRADE_DS, 111_438)}[which]
    counts = {}
    for name, engine in engines.items():
        t0 = time.monotonic()
        acc, rej = split(engine, engine.read_csv(str(path), dataset, ds=None, block_bytes=4 << 20), tmp_path / name)
        counts[name] = (acc.num_rows, rej.num_rows)
        print(f"{which} on {name}: {acc.num_rows} accepted, {rej.num_rows} rejected, {time.monotonic() - t0:.2f} s")
        assert rej.num_rows == 0, rej.slice(0, 5).to_pylist()
    assert counts == {"dask": (rows, 0), "spark": (rows, 0)}


@needs_data
def test_all_retail_days_through_their_contract_on_both_engines(engines):
    """Every day file on Dask (the default backend). Spark reads every 10th file and the day with
    rejects, and must give the same lines and rejects per file: all 297 cost Spark 41 s here (a
    Python task per file), for the parse that the month's and the generated files' tests also
    compare between the engines."""
    from functools import reduce

    import dask
    import pandas as pd

    from include.pipelines.retail.datasets import INVOICE_LINES

    files = sorted(RETAIL.glob("*.csv"))
    assert len(files) == 297
    with_rejects = RETAIL / "2011-08-12.csv"
    sample = sorted(set(files[::10]) | {with_rejects})

    def read(engine, chosen):
        return [engine.read_csv(str(f), INVOICE_LINES, ds=f.stem, block_bytes=1 << 20) for f in chosen]

    t0 = time.monotonic()
    whole = pd.concat(dask.compute(*[f[["_source", "_line", "_reason"]] for f in read(engines["dask"], files)],
                                   scheduler=engines["dask"].client))
    lines = {Path(s).name: n for s, n in whole.groupby("_source").size().items()}
    bad = whole[whole["_reason"].notna()]
    bad = sorted((Path(s).name, int(line), r) for s, line, r in bad.itertuples(index=False))
    print(f"retail on dask: {len(whole)} lines in {len(lines)} files, {len(bad)} rejected, {time.monotonic() - t0:.2f} s")
    assert len(whole) == 516_384 and len(lines) == 297
    # Real bad rows: the two bad-debt adjustments of 2011-08-12 have a negative price, and the contract
    # says UnitPrice >= 0 (they are kept in the rejects, with the reason).
    assert bad == [("2011-08-12.csv", 631, "UnitPrice must be >= 0"),
                   ("2011-08-12.csv", 632, "UnitPrice must be >= 0")]

    t0 = time.monotonic()
    spark = reduce(lambda a, b: a.unionByName(b), read(engines["spark"], sample)).select("_source", "_line", "_reason")
    spark = spark.persist()  # one parse for the two queries
    try:
        spark_lines = {Path(r["_source"]).name: r["count"] for r in spark.groupBy("_source").count().collect()}
        spark_bad = sorted((Path(r["_source"]).name, r["_line"], r["_reason"])
                           for r in spark.filter("_reason is not null").collect())
    finally:
        spark.unpersist()
    print(f"retail on spark: {sum(spark_lines.values())} lines in {len(spark_lines)} files, {time.monotonic() - t0:.2f} s")
    assert spark_lines == {f.name: lines[f.name] for f in sample}
    assert spark_bad == bad


EVERY_TYPE = Dataset("every_type", (
    Column("id", "integer", required=True),
    Column("n", "integer", thousands=",", whole_float=True, range=(0, None)),
    Column("x", "float"),
    Column("price", "decimal", precision=8, scale=2),
    Column("flag", "boolean", true_values=("Y",), false_values=("N",)),
    Column("kind", allowed=("a", "b")),
    Column("day", "date", format="%d/%m/%Y"),
    Column("at", "timestamp", format="%Y-%m-%d %H:%M:%S"),
), rules=(on_partition_day("at"),))
EVERY_TYPE_ROWS = [  # (text, reason or None)
    ('1,"2,156,624,900",1.5,12.34,Y,a,1/2/2020,2024-07-07 08:00:00', None),
    ("2,17850.0,-1e3,0.5,N,b,01/02/2020,2024-07-07 23:59:59", None),
    ("3,,NA,NA,NA,NA,NA,NA", None),
    ("4,17850.5,1,1,Y,a,1/1/2020,2024-07-07 00:00:00", "n is not a whole number"),
    ("5,-3,1,1,Y,a,1/1/2020,2024-07-07 00:00:00", "n must be >= 0"),
    ("6,1,abc,1,Y,a,1/1/2020,2024-07-07 00:00:00", "x is not a number"),
    ("7,1,1,1.234,Y,a,1/1/2020,2024-07-07 00:00:00", "price has more than 2 decimal places"),
    ("8,1,1,1,maybe,a,1/1/2020,2024-07-07 00:00:00", "flag is not a boolean (Y/N)"),
    ("9,1,1,1,Y,c,1/1/2020,2024-07-07 00:00:00", "kind not in a/b"),
    ("10,1,1,1,Y,a,31/02/2020,2024-07-07 00:00:00", "day is not a date of the form %d/%m/%Y"),
    ("11,1,1,1,Y,a,1/1/2020,2024-07-07 25:00:00", "at is not a timestamp of the form %Y-%m-%d %H:%M:%S"),
    ("12,1,1,1,Y,a,1/1/2020,2024-07-08 00:00:00", "breaks rule: at falls on the partition's day"),
]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252"])
def test_every_type_and_encoding_alike_on_both_engines(engines, tmp_path, encoding):
    import dataclasses

    from include.etl.contract import FileFormat

    dataset = dataclasses.replace(EVERY_TYPE, format=FileFormat(encoding=encoding))
    text = "id,n,x,price,flag,kind,day,at,note\r\n" + "".join(f"{t},caf\u00e9\r\n" for t, _ in EVERY_TYPE_ROWS)
    path = tmp_path / "every.csv"
    path.write_bytes(text.encode("utf-8-sig" if encoding == "utf-8-sig" else encoding))
    expected = [(i + 2, reason) for i, (_, reason) in enumerate(EVERY_TYPE_ROWS) if reason]
    tables = {}
    for name, engine in engines.items():
        acc, rej = split(engine, engine.read_csv(str(path), dataset, ds="2024-07-07", block_bytes=64), tmp_path / name)
        assert [(r["_line"], r["_reason"]) for r in rej.to_pylist()] == expected, name
        tables[name] = acc.sort_by("id")
    assert tables["dask"].num_rows == 3
    assert tables["dask"].to_pylist() == tables["spark"].cast(tables["dask"].schema).to_pylist()
    first = tables["dask"].to_pylist()[0]
    assert (first["n"], first["x"], str(first["price"]), first["flag"], str(first["day"]), str(first["at"])) == (
        2156624900, 1.5, "12.34", True, "2020-02-01", "2024-07-07 08:00:00")


def test_contract_features_alike_on_both_engines(engines, tmp_path):
    """Renamed columns, nested values, Unix times, expression rules and exact copies dropped: the
    same rows accepted, rejected (exact lines and reasons) and dropped on both engines, counted
    in the ingest summary and its asset event (rows_in = accepted + rejected + dropped)."""
    from include.etl.jobs import JobContext, steps
    from include.etl.lake import Lake
    from tests.include.test_contract_features import BAD, GOOD, HEADER, MOVIES

    lines = [HEADER, GOOD.format(id=1), GOOD.format(id=2), GOOD.format(id=1), *BAD, GOOD.format(id=2)]
    path = tmp_path / "movies.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    expected = [(5 + i, line, reason) for i, (line, reason) in enumerate(BAD.items())]
    tables = {}
    for name, engine in engines.items():
        lake = Lake(tmp_path / f"lake-{name}", "demo")
        ctx = JobContext(engine=engine, lake=lake, ds="2024-07-07", max_reject_ratio=1.0)
        summary = steps.ingest(ctx, MOVIES, str(path))
        counts = {"rows_in": len(lines) - 1, "rows_accepted": 2, "rows_rejected": len(BAD), "duplicates_dropped": 2}
        assert {k: summary[k] for k in counts} == counts, name
        assert summary["asset_events"]["movies"] == {"ds": "2024-07-07", "source": str(path), **counts}, name
        rej = lake.read_arrow(lake.rejects("movies"), "2024-07-07").sort_by("_line")
        assert [(r["_line"], r["_raw"], r["_reason"]) for r in rej.to_pylist()] == expected, name
        tables[name] = lake.read_arrow("movies", "2024-07-07").sort_by("movie_id")
        assert lake.delta("movies").history()[0]["duplicates_dropped"] == "2", name  # in the commit
    dask_rows, spark_rows = tables["dask"], tables["spark"]
    assert dask_rows.schema.field("rated_at").type == spark_rows.schema.field("rated_at").type
    assert dask_rows.to_pylist() == spark_rows.cast(dask_rows.schema).to_pylist()
    first = dask_rows.to_pylist()[0]
    assert (first["movie_id"], str(first["rated_at"]), first["tags"], first["meta"]) == (
        1, "2009-12-14 02:52:24+00:00", [{"id": 1, "name": "children's"}], {"a": 1.0, "b": [True]})
