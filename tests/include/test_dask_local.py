"""The Dask engine's one-partition inputs (include/etl/engines/dask.py): a CSV file of one parse
block and one small Parquet file are pandas frames, computed where the job's driver runs, and
everything they give is what the same input as Dask frames gives: the same rows, rejects and
counts, the same written Arrow types, the same column dtypes. Inputs of several partitions stay
Dask frames, and ``align`` lets a job join both kinds (in-process ``LocalCluster``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.etl.engines import dask as dask_engine
from include.etl.engines.dask import DaskEngine
from include.etl.jobs import steps
from include.pipelines.retail.datasets import INVOICE_LINES
from include.pipelines.retail.transforms import MART_INPUTS, classify, sales_by_country, sales_by_product

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
LINES = [
    "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "536366,22633,HAND WARMER UNION JACK,6,2010-12-01 08:28:00,1.85,,France",
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.50,14527.0,United Kingdom",
    "536380,22961,JAM MAKING SET,not-a-number,2010-12-01 09:41:00,1.45,17809.0,France",  # rejected
    "536381,22139,RETROSPOT TEA SET,2,2010-12-02 09:41:00,4.95,15311.0,EIRE",  # another day: rejected
    "536382,10002,INFLATABLE GLOBE,12,2010-12-01 09:45:00,0.85,15311.0,EIRE",
]
DS = "2010-12-01"


@pytest.fixture(scope="module")
def engine():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield DaskEngine(client)


@pytest.fixture
def day_file(tmp_path) -> Path:
    path = tmp_path / f"{DS}.csv"
    path.write_text(HEADER + "\n".join(LINES) + "\n")
    return path


def _written(directory: Path) -> pa.Table:
    files = sorted(directory.glob("*.parquet"))
    assert files, f"nothing written in {directory}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def _ingest(engine, path: Path, out: Path) -> tuple[tuple[int, int, int], pa.Table, pa.Table, object]:
    parsed = engine.read_csv(str(path), INVOICE_LINES, ds=DS)
    counts = engine.write_split(parsed, str(out / "accepted"), str(out / "rejects"))
    return counts, _written(out / "accepted"), _written(out / "rejects"), parsed


def test_a_one_block_csv_is_a_pandas_frame_and_writes_what_dask_writes(engine, day_file, tmp_path, monkeypatch):
    counts, accepted, rejects, parsed = _ingest(engine, day_file, tmp_path / "local")
    assert isinstance(parsed, pd.DataFrame)
    monkeypatch.setattr(dask_engine, "LOCAL_MAX_BYTES", -1)
    d_counts, d_accepted, d_rejects, d_parsed = _ingest(engine, day_file, tmp_path / "dask")
    assert not isinstance(d_parsed, pd.DataFrame)
    assert counts == d_counts == (5, 2, 0)
    assert accepted.schema.remove_metadata() == d_accepted.schema.remove_metadata()
    assert rejects.schema.remove_metadata() == d_rejects.schema.remove_metadata()
    assert accepted.to_pylist() == d_accepted.to_pylist()
    assert sorted(r["_line"] for r in rejects.to_pylist()) == [6, 7]
    assert rejects.to_pylist() == d_rejects.to_pylist()


@pytest.mark.parametrize("exact", [False, True])
def test_one_small_parquet_file_reads_as_dask_reads_it(engine, day_file, tmp_path, monkeypatch, exact):
    _ingest(engine, day_file, tmp_path / "day")
    files = [str(f) for f in sorted((tmp_path / "day" / "accepted").glob("*.parquet"))]
    schema = pq.read_schema(files[0])
    read = engine.read_parquets if exact else engine.read_parquet
    local = read(files, schema)
    assert isinstance(local, pd.DataFrame)
    monkeypatch.setattr(dask_engine, "LOCAL_MAX_BYTES", -1)
    distributed = read(files, schema).compute()
    assert dict(local.dtypes) == dict(distributed.dtypes)
    pd.testing.assert_frame_equal(local.reset_index(drop=True), distributed.reset_index(drop=True))


def _marts(engine, accepted: Path, out: Path) -> dict[str, pa.Table]:
    files = [str(f) for f in sorted(accepted.glob("*.parquet"))]
    lines = steps.lazy(engine.read_parquet(files, pq.read_schema(files[0]))).select(*MART_INPUTS)
    classified = classify(lines)
    frames = {str(out / "sales_by_country"): sales_by_country(classified).to_native(),
              str(out / "sales_by_product"): sales_by_product(classified).to_native()}
    rows = engine.write_parquets(frames)
    tables = {Path(p).name: _written(Path(p)) for p in frames}
    assert rows == {p: tables[Path(p).name].num_rows for p in frames}
    return tables


def test_the_marts_of_a_small_day_equal_the_dask_ones_types_included(engine, day_file, tmp_path, monkeypatch):
    _ingest(engine, day_file, tmp_path / "day")
    local = _marts(engine, tmp_path / "day" / "accepted", tmp_path / "local")
    monkeypatch.setattr(dask_engine, "LOCAL_MAX_BYTES", -1)
    distributed = _marts(engine, tmp_path / "day" / "accepted", tmp_path / "dask")
    for name, table in local.items():
        other = distributed[name]
        assert table.schema.remove_metadata() == other.schema.remove_metadata(), name
        key = table.column_names[0]
        assert table.sort_by(key).to_pylist() == other.sort_by(key).to_pylist(), name
    assert local["sales_by_country"].schema.field("country").type == pa.string()  # never large_string
    uk = next(r for r in local["sales_by_country"].to_pylist() if r["country"] == "United Kingdom")
    assert (uk["invoices"], uk["units"], uk["cancelled_lines"]) == (1, 12, 1)


def test_a_job_joins_a_small_input_with_a_large_one(engine, day_file, tmp_path, monkeypatch):
    """The small input is a pandas frame, the large one (two files) a Dask frame: ``steps.together``
    puts them on one backend, and the join gives every line its country's code."""
    from types import SimpleNamespace

    import narwhals as nw

    _ingest(engine, day_file, tmp_path / "day")
    accepted = pq.read_table(next((tmp_path / "day" / "accepted").glob("*.parquet")))
    parts = tmp_path / "lines"
    parts.mkdir()
    pq.write_table(accepted.slice(0, 2), parts / "part.0.parquet")
    pq.write_table(accepted.slice(2), parts / "part.1.parquet")
    pq.write_table(pa.table({"Country": ["United Kingdom", "France", "EIRE"], "iso": ["GB", "FR", "IE"]}),
                   tmp_path / "countries.parquet")
    large = engine.read_parquet([str(p) for p in sorted(parts.glob("*.parquet"))], accepted.schema)
    small = engine.read_parquet([str(tmp_path / "countries.parquet")], pa.schema([("Country", pa.string())]))
    assert isinstance(small, pd.DataFrame) and not isinstance(large, pd.DataFrame)
    lines, countries = steps.together(SimpleNamespace(engine=engine), large, small)
    joined = lines.join(countries, on="Country", how="left").select("InvoiceNo", "iso").collect(backend="pandas")
    got = sorted(zip(joined["InvoiceNo"].to_list(), joined["iso"].to_list(), strict=True))
    assert got == sorted([("536365", "GB"), ("536365", "GB"), ("536366", "FR"), ("C536379", "GB"), ("536382", "IE")])
    assert all(isinstance(f, pd.DataFrame) for f in engine.align([small, small]))  # all small: stay pandas
    assert nw.from_native(small).lazy().to_native() is small
