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
CORRUPT = "_corrupt_record"  # Spark's raw text of a row with the wrong number of fields
SPARK_TYPES = {"int": "bigint", "float": "double", "str": "string"}


def parsed_ddl(schema: TableSchema) -> str:
    """Spark DDL of what :func:`parse_frame` returns: typed schema columns + reject bookkeeping."""
    cols = [f"`{c.name}` {SPARK_TYPES[c.type]}" for c in schema.columns]
    cols += ["`_source` string", "`_line` bigint", "`_raw` string", "`_reason` string"]
    return ", ".join(cols)


def _parse_batch(raw, schema: TableSchema, source: str, first_line: int | None, n_fields: int):
    import pandas as pd

    if first_line is not None:
        raw = raw.assign(_line=pd.RangeIndex(first_line, first_line + len(raw)))
    out = parse_frame(raw, schema, source)
    corrupt = raw[CORRUPT].notna().to_numpy() if CORRUPT in raw.columns else None
    if corrupt is not None and corrupt.any():
        # Rows with too few or too many fields: Spark pads or truncates them; reject them instead.
        reason = f"malformed CSV row (expected {n_fields} fields)"
        out.loc[corrupt, "_reason"] = reason
        out.loc[corrupt, "_raw"] = raw.loc[corrupt, CORRUPT].astype("string").to_numpy()
    return out


def parse_partition(batches: Iterator, schema: TableSchema, source: str, whole_file: bool, n_fields: int) -> Iterator:
    """``mapInPandas`` function: raw string batches of one partition -> :func:`parse_frame` output.

    With ``whole_file`` the partition is the whole file in order, so rows get line numbers (the
    header is line 1; no quoted newlines in these inputs); a table with a key is parsed in one
    piece so that duplicates across Arrow batches are found.
    """
    import pandas as pd

    if whole_file and schema.key:
        frames = list(batches)
        if frames:
            raw = pd.concat(frames, ignore_index=True)
            yield _parse_batch(raw, schema, source, 2, n_fields)
        return
    line = 2
    for raw in batches:
        raw = raw.reset_index(drop=True)
        yield _parse_batch(raw, schema, source, line if whole_file else None, n_fields)
        line += len(raw)


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
        # Every field a string, by position (the header line is skipped, its names used), plus
        # the raw text of malformed rows. Nothing becomes null except empty fields: "NA" stays
        # a string and parse_frame treats both as missing, exactly as on Dask.
        fields = ", ".join(f"`{name}` string" for name in header)
        raw = (
            self.session.read.schema(f"{fields}, `{CORRUPT}` string")
            .option("header", True)
            .option("quote", '"')
            .option("escape", '"')  # the files double quotes inside quoted fields
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT)
            .option("encoding", "UTF-8")
            # One unsplittable partition per file, in file order. Line endings (LF, CRLF and
            # the bare CR of noc_regions.csv) are recognised in both modes.
            .option("multiLine", whole)
            .csv(path)
        )
        n_fields = len(header)

        def parse(batches):
            return parse_partition(batches, schema, path, whole, n_fields)

        return raw.mapInPandas(parse, parsed_ddl(schema))

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
