"""Spark engine: reads and writes through a Spark Connect session (the server does the work).

Paths are paths on the server's filesystem (the lake must be shared between the Airflow
workers and the Spark server, as it is between Airflow and Dask workers). Row parsing is
:func:`include.etl.parse.parse_block` (as on Dask), applied per partition with ``mapInPandas``
in the server's Python workers, which therefore need this project importable (the local server is
started with it on ``PYTHONPATH``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from include.etl.schemas import REJECT_COLUMNS, TableSchema

log = logging.getLogger(__name__)

# Files up to this size are read as one partition (like the Dask engine), which lets rejects
# carry line numbers and lets reference tables be de-duplicated on their key as a whole.
SINGLE_PARTITION_BYTES = 64 * 2**20
SPARK_TYPES = {"int": "bigint", "float": "double", "str": "string"}
# Lines per Arrow batch handed to ``mapInPandas``, i.e. per parsed block of a large file. Spark's
# default of 10,000 made the athletes ingest call the parser ~100 times per million rows, and
# each call has a fixed cost (pyarrow reader, checks, pandas frame).
ARROW_BATCH_LINES = 200_000


def parsed_ddl(schema: TableSchema) -> str:
    """Spark DDL of what :func:`include.etl.parse.parse_frame` returns: typed schema columns + reject bookkeeping."""
    cols = [f"`{c.name}` {SPARK_TYPES[c.type]}" for c in schema.columns]
    cols += ["`_source` string", "`_line` bigint", "`_raw` string", "`_reason` string"]
    return ", ".join(cols)


def _decode(value: bytes) -> str:
    """A line's bytes as text; invalid UTF-8 becomes U+FFFD (then rejected), exactly as on Dask."""
    return bytes(value).decode("utf-8", errors="replace")


def parse_partition(batches: Iterator, schema: TableSchema, source: str, header: list[str], whole_file: bool) -> Iterator:
    """``mapInPandas`` function: text lines of one partition -> ``parse_frame`` output.

    The lines (as bytes) are joined into one block and parsed by
    :func:`include.etl.parse.parse_block`, exactly as a Dask block is. With ``whole_file`` the
    partition is the whole file in order: its first line is the header and rows get line
    numbers; a table with a key is parsed in one piece so duplicates are found. Otherwise each
    Arrow batch of lines is a block, without line numbers, and lines equal to the header
    (quotes removed) are dropped.
    """
    from include.etl.parse import parse_block

    if whole_file:
        values = [v for frame in batches for v in frame["value"].tolist()]
        data = b"\n".join(map(bytes, values)) + b"\n" if values else b""
        yield parse_block(data, schema, source, header, 1, skip_header=True)
        return
    header_line = ",".join(header)
    if "\ufffd" in header_line:  # compare as the decoded text, like every other line
        def is_header(v: bytes) -> bool:
            return _decode(v).replace('"', "") == header_line
    else:  # for valid UTF-8 the same as comparing the decoded text; invalid UTF-8 never equals the header
        header_bytes = header_line.encode()

        def is_header(v: bytes) -> bool:
            return v.replace(b'"', b"") == header_bytes
    for frame in batches:
        lines = [v for v in map(bytes, frame["value"].tolist()) if not is_header(v)]
        yield parse_block(b"\n".join(lines), schema, source, header, None)


def _probe(batches: Iterator) -> Iterator:
    import include.etl.parse  # noqa: F401 - the job code and pandas import in the worker

    yield from batches


def probe_python_workers(session: Any) -> None:
    """Run a tiny ``mapInPandas`` on every task thread: fails if the workers cannot run job code."""
    import re

    match = re.match(r"local\[(\d+)", session.conf.get("spark.master", ""))
    parallelism = int(match.group(1)) if match else 2
    session.range(0, parallelism, numPartitions=parallelism).mapInPandas(_probe, "id bigint").collect()


class SparkEngine:
    name = "spark"

    def __init__(self, session: Any) -> None:
        self.session = session

    def read_csv(self, path: str, schema: TableSchema) -> Any:
        from include.etl.parse import check_header

        header = check_header(path, schema)  # names the file when it is unusable
        whole = schema.reference or os.path.getsize(path) <= SINGLE_PARTITION_BYTES
        # The file as text lines (LF, CRLF and the bare CR of noc_regions.csv are all line
        # ends; invalid UTF-8 becomes U+FFFD), tokenized in Python like on Dask, so both
        # engines accept and reject the same rows. Small files stay one partition, in order.
        from pyspark.sql import functions as F

        # As bytes: Spark keeps invalid UTF-8 in its strings, which Arrow then refuses to convert.
        self.session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_LINES))
        lines = self.session.read.text(path).select(F.col("value").cast("binary").alias("value"))
        if whole:
            lines = lines.coalesce(1)

        def parse(batches):
            return parse_partition(batches, schema, path, header, whole)

        return lines.mapInPandas(parse, parsed_ddl(schema))

    def write_split(self, parsed: Any, accepted_dir: str, rejects_dir: str) -> tuple[int, int]:
        from pyspark.sql import functions as F

        names = [c for c in parsed.columns if c not in REJECT_COLUMNS]
        ok = F.col("_reason").isNull()
        parsed = parsed.persist()  # parse once, write twice, count
        try:
            parsed.filter(ok).select(*names).write.mode("overwrite").parquet(accepted_dir)
            parsed.filter(~ok).select(*REJECT_COLUMNS).write.mode("overwrite").parquet(rejects_dir)
            row = parsed.select(
                F.count_if(ok).alias("accepted"), F.count_if(~ok).alias("rejected")
            ).collect()[0]
        finally:
            parsed.unpersist()
        return int(row["accepted"] or 0), int(row["rejected"] or 0)

    def read_parquet(self, path: str) -> Any:
        # Reading the partition directory itself: ``ds=...`` does not become a column.
        return self.session.read.parquet(path)

    def write_parquet(self, frame: Any, path: str) -> int:
        frame.write.mode("overwrite").parquet(path)
        return int(self.session.read.parquet(path).count())  # from the Parquet footers

    def write_parquets(self, frames: dict[str, Any]) -> dict[str, int]:
        """One Spark job per output (a DataFrame write has one sink); Parquet inputs are cheap to re-read."""
        return {path: self.write_parquet(frame, path) for path, frame in frames.items()}

    def run_noop(self) -> None:
        self.session.range(1).count()
