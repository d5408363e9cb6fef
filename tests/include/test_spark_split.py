"""The Spark engine's ingest split (include/etl/engines/spark.py ``split_batches``), as its Python
workers run it, without Spark: each block parsed, its accepted rows and rejects written as one
file each, named by the block, and counted. A retried task (its first attempt killed after it
wrote) replaces its files: the lake never sees a block's rows twice, nor an attempt's temporary file.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from include.etl.csvfile import plan_blocks, read_header
from include.etl.engines.spark import split_batches
from include.pipelines.retail.datasets import INVOICE_LINES

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
LINES = [
    "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "536366,22633,HAND WARMER UNION JACK,6,2010-12-01 08:28:00,1.85,,France",
    "536380,22961,JAM MAKING SET,not-a-number,2010-12-01 09:41:00,1.45,17809.0,France",  # rejected
    "536382,10002,INFLATABLE GLOBE,12,2010-12-01 09:45:00,0.85,15311.0,EIRE",
]


def _split(path: Path, out: Path) -> list[dict]:
    header = read_header(str(path), INVOICE_LINES)
    blocks = plan_blocks(str(path), header, INVOICE_LINES, 1 << 20, survey=None)
    batches = [pa.RecordBatch.from_pydict({"id": pa.array(range(len(blocks)), pa.int64())})]
    return [row for b in split_batches(iter(batches), str(path), blocks, header, INVOICE_LINES, "2010-12-01",
                                       str(out / "accepted"), str(out / "rejects"), None) for row in b.to_pylist()]


def test_a_retried_block_replaces_its_files_and_counts_stay_exact(tmp_path):
    source = tmp_path / "2010-12-01.csv"
    source.write_text(HEADER + "\n".join(LINES) + "\n")
    for d in ("accepted", "rejects"):
        (tmp_path / "out" / d).mkdir(parents=True)
    first = _split(source, tmp_path / "out")
    again = _split(source, tmp_path / "out")  # the task's retry, after its first attempt wrote
    assert first == again == [{"block": 0, "accepted": 3, "rejected": 1, "dropped": 0}]
    for d, rows in (("accepted", 3), ("rejects", 1)):
        files = sorted(p.name for p in (tmp_path / "out" / d).iterdir())
        assert files == ["part-00000.parquet"], files  # no second file, no temporary file left
        assert pq.read_table(tmp_path / "out" / d / files[0]).num_rows == rows
    rejected = pq.read_table(tmp_path / "out" / "rejects" / "part-00000.parquet").to_pylist()[0]
    assert rejected["_line"] == 4 and "Quantity" in rejected["_reason"] and rejected["_raw"] == LINES[2]
    accepted = pq.read_table(tmp_path / "out" / "accepted" / "part-00000.parquet")
    assert not any(c.startswith("_") for c in accepted.column_names), accepted.column_names
