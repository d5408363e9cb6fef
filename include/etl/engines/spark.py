"""Spark engine: reads and writes through a Spark Connect session (the server does the work).

Paths are paths on the server's filesystem (the lake must be shared between the Airflow
workers and the Spark server, as it is between Airflow and Dask workers). Row parsing is
:func:`include.etl.parse.parse_frame`, applied per partition with ``mapInPandas`` in the
server's Python workers, which therefore need this project importable (the local server is
started with it on ``PYTHONPATH``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from include.etl.parse import parse_frame
from include.etl.schemas import REJECT_COLUMNS, TableSchema

log = logging.getLogger(__name__)

# Files up to this size are read as one partition (like the Dask engine), which lets rejects
# carry line numbers and lets reference tables be de-duplicated on their key as a whole.
SINGLE_PARTITION_BYTES = 64 * 2**20
SPARK_TYPES = {"int": "bigint", "float": "double", "str": "string"}


def parsed_ddl(schema: TableSchema) -> str:
    """Spark DDL of what :func:`parse_frame` returns: typed schema columns + reject bookkeeping."""
    cols = [f"`{c.name}` {SPARK_TYPES[c.type]}" for c in schema.columns]
    cols += ["`_source` string", "`_line` bigint", "`_raw` string", "`_reason` string"]
    return ", ".join(cols)


def _decode(value: bytes) -> str:
    """A line's bytes as text; invalid UTF-8 becomes U+FFFD (then rejected), exactly as on Dask."""
    return bytes(value).decode("utf-8", errors="replace")


def parse_partition(batches: Iterator, schema: TableSchema, source: str, header: list[str], whole_file: bool) -> Iterator:
    """``mapInPandas`` function: text lines of one partition -> :func:`parse_frame` output.

    Lines are tokenized by :func:`include.etl.parse.tokenize`, exactly as on Dask. With
    ``whole_file`` the partition is the whole file in order: its first line is the header and
    rows get line numbers; a table with a key is parsed in one piece so duplicates are found.
    """
    from include.etl.parse import skip_first_line, tokenize

    header_line = ",".join(header)
    if whole_file:
        values = [_decode(v) for frame in batches for v in frame["value"].tolist()]
        text = skip_first_line("\n".join(values) + "\n") if values else ""
        yield parse_frame(tokenize(text, header, 2), schema, source)
        return
    for frame in batches:
        lines = [line for line in map(_decode, frame["value"].tolist()) if line.replace('"', "") != header_line]
        yield parse_frame(tokenize("\n".join(lines), header, None), schema, source)


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

    def run_noop(self) -> None:
        self.session.range(1).count()
