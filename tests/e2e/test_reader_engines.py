"""The reader on both real clusters: a local Dask cluster and a local Spark Connect server.

- a generated multi-block file (quoted line breaks of every kind across block boundaries,
  stray quotes, bad rows): identical accepted and rejected tables on both engines, equal to the
  in-process reader, with exact line numbers;
- the real data sets in ../shared/data through their contracts, read in several blocks:
  the whole athletes file, the NZ trade file and all 297 retail day files, with the counts.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from include.etl.contract import Column, Dataset
from tests.include.test_reader import read as read_in_process
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ETL_DATA_DIR") or ROOT.parent / "shared" / "data")
ATHLETES = SHARED / "olympics" / "athlete_events.csv"
TRADE = SHARED / "nz_trade" / "effects-of-covid-19-on-trade-at-15-december-2021-provisional.csv"
RETAIL = SHARED / "retail" / "by-day"
needs_data = pytest.mark.skipif(not ATHLETES.exists(), reason=f"the shared data sets are not in {SHARED}")


def _kill_leftovers(prefix: str) -> list[int]:
    left = processes_with_env(prefix)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("reader-engines")
    yield path
    assert _kill_leftovers(str(path)) == [], "a test left cluster processes running"


@pytest.fixture(scope="module")
def settings(base):
    from include.etl.settings import Settings

    return Settings.from_env({"ETL_LAKE_ROOT": str(base / "lake"), "ETL_DASK_WORKERS": "2", "ETL_DASK_THREADS": "1"})


@pytest.fixture(scope="module")
def engines(base, settings):
    """{"dask": DaskEngine, "spark": SparkEngine} on real local clusters, stopped at module end."""
    from distributed import Client

    from etl_platform.hooks.spark import SparkClusterHook
    from include.etl.clusters.dask_local import start_local_dask, stop_local_dask
    from include.etl.engines.dask import DaskEngine

    dask_handle = start_local_dask(settings, base / "dask")
    spark_hook = SparkClusterHook(settings=settings)
    spark_handle = None
    try:
        spark_handle = spark_hook.start_or_attach(base / "spark")
        with Client(dask_handle.address, timeout=30, set_as_default=False) as client:
            yield {"dask": DaskEngine(client), "spark": spark_hook.engine(spark_handle)}
    finally:
        spark_hook.close()
        if spark_handle is not None:
            spark_hook.stop(spark_handle)
        stop_local_dask(dask_handle)


def split(engine, frame, out: Path) -> tuple[pa.Table, pa.Table]:
    accepted, rejected = engine.write_split(frame, str(out / "accepted"), str(out / "rejects"))
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
    import dask

    from include.pipelines.retail.datasets import INVOICE_LINES

    files = sorted(RETAIL.glob("*.csv"))
    assert len(files) == 297
    for name, engine in engines.items():
        t0 = time.monotonic()
        frames = [engine.read_csv(str(f), INVOICE_LINES, ds=f.stem, block_bytes=1 << 20) for f in files]
        if name == "dask":
            import pandas as pd

            parts = dask.compute(*[f[["_source", "_line", "_reason"]] for f in frames], scheduler=engine.client)
            whole = pd.concat(parts)
            total = len(whole)
            bad = whole[whole["_reason"].notna()]
            bad = sorted((Path(s).name, int(line), r) for s, line, r in bad.itertuples(index=False))
        else:
            from functools import reduce

            whole = reduce(lambda a, b: a.unionByName(b), frames)
            whole = whole.select("_source", "_line", "_reason").persist()
            total = whole.count()
            bad = sorted((Path(r["_source"]).name, r["_line"], r["_reason"]) for r in
                         whole.filter("_reason is not null").collect())
            whole.unpersist()
        print(f"retail on {name}: {total} lines, {len(bad)} rejected, {time.monotonic() - t0:.2f} s")
        assert total == 516_384
        # Real bad rows: the two bad-debt adjustments of 2011-08-12 have a negative price, and the contract
        # says UnitPrice >= 0 (they are kept in the rejects, with the reason).
        assert bad == [("2011-08-12.csv", 631, "UnitPrice outside [0, inf]"),
                       ("2011-08-12.csv", 632, "UnitPrice outside [0, inf]")], name
