"""Spark engine: reads and writes through a Spark Connect session (the server does the work).

Paths are paths on the server's filesystem (the lake must be shared between the Airflow
workers and the Spark server, as it is between Airflow and Dask workers). A CSV input is read
as on Dask (:mod:`include.etl.reader`): the planner splits the file into blocks of whole
records, and each block is parsed by :func:`include.etl.reader.parse_block` in one Spark task
(``mapInArrow`` over one row per block), in the server's Python workers, which therefore need
this project importable (the local server is started with it on ``PYTHONPATH``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from include.etl.reader import DROPPED, REJECT_COLUMNS

if TYPE_CHECKING:
    from include.etl.contract import Dataset, FileFormat
    from include.etl.csvfile import Block, Header

log = logging.getLogger(__name__)

# Files up to this size are read as one partition (like the Dask engine).
BLOCK_BYTES = 64 * 2**20
SURVEY_DDL = "block bigint, lines bigint, line_index array<bigint>, line_offset array<bigint>, complete boolean"


def survey_batches(batches: Iterator, path: str, blocks: list[Block], fmt: FileFormat) -> Iterator:
    """``mapInArrow`` function: block numbers -> :func:`include.etl.csvfile.survey_block` of each."""
    import pyarrow as pa

    from include.etl.csvfile import survey_block

    for batch in batches:
        for k in batch.column(0).to_pylist():
            s = survey_block(path, blocks[k], fmt)
            yield pa.RecordBatch.from_pydict({
                "block": pa.array([k], pa.int64()), "lines": pa.array([s.lines], pa.int64()),
                "line_index": pa.array([[i for i, _ in s.nonsimple]], pa.list_(pa.int64())),
                "line_offset": pa.array([[o for _, o in s.nonsimple]], pa.list_(pa.int64())),
                "complete": pa.array([s.complete], pa.bool_()),
            })


def parse_batches(batches: Iterator, path: str, blocks: list[Block], header: Header, dataset: Dataset,
                  ds: str | None) -> Iterator:
    """``mapInArrow`` function: block numbers -> the parsed records of each block."""
    from include.etl.reader import parse_block

    for batch in batches:
        for k in batch.column(0).to_pylist():
            yield from parse_block(path, blocks[k], header, dataset, ds).to_batches()


SPLIT_DDL = "block bigint, accepted bigint, rejected bigint, dropped bigint"


def write_once(table: Any, path: str, filesystem: Any) -> None:
    """Write ``table`` to ``path`` so that a retried Spark task replaces its killed attempt's file
    instead of adding one beside it: ``path`` is named by the task's block or partition, never by
    the attempt, and on local disk the file is written under a hidden name, then renamed (the lake
    skips hidden files). An object store's PUT is whole or absent by itself."""
    import uuid

    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    if filesystem is not None:
        pq.write_table(table, path, filesystem=filesystem)
        return
    directory, name = path.rsplit("/", 1)
    tmp = f"{directory}/.{name}.{uuid.uuid4().hex}"
    pq.write_table(table, tmp)
    pafs.LocalFileSystem().move(tmp, path)


def split_batches(batches: Iterator, path: str, blocks: list[Block], header: Header, dataset: Dataset,
                  ds: str | None, accepted_dir: str, rejects_dir: str, filesystem: Any) -> Iterator:
    """``mapInArrow`` function: block numbers -> each block parsed, its accepted rows and its rejects
    written as one Parquet file each (as the Dask engine writes a partition), and their counts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from include.etl.reader import parse_block

    for batch in batches:
        for k in batch.column(0).to_pylist():
            table = parse_block(path, blocks[k], header, dataset, ds)
            reason = table.column("_reason")
            ok = pc.is_null(reason)
            dropped = pc.fill_null(pc.equal(reason, DROPPED), False)
            accepted = table.filter(ok).drop_columns(list(REJECT_COLUMNS))
            rejects = table.filter(pc.and_(pc.invert(ok), pc.invert(dropped))).select(list(REJECT_COLUMNS))
            write_once(accepted, f"{accepted_dir}/part-{k:05d}.parquet", filesystem)
            write_once(rejects, f"{rejects_dir}/part-{k:05d}.parquet", filesystem)
            yield pa.RecordBatch.from_pydict({
                "block": pa.array([k], pa.int64()), "accepted": pa.array([accepted.num_rows], pa.int64()),
                "rejected": pa.array([rejects.num_rows], pa.int64()),
                "dropped": pa.array([pc.sum(dropped.cast(pa.int64())).as_py() or 0], pa.int64()),
            })


def _probe(batches: Iterator) -> Iterator:
    import include.etl.reader  # noqa: F401 - the job code, pyarrow and pandas import in the worker

    yield from batches


def local_slots(session: Any) -> int | None:
    """The task threads of a local session or server (``local[N...]``); None for a cluster's master."""
    import re

    match = re.match(r"local\[(\d+)", session.conf.get("spark.master", ""))
    return int(match.group(1)) if match else None


def probe_python_workers(session: Any) -> None:
    """Run a tiny ``mapInPandas`` on every task thread: fails if the workers cannot run job code."""
    parallelism = local_slots(session) or 2
    session.range(0, parallelism, numPartitions=parallelism).mapInPandas(_probe, "id bigint").collect()


# An object-store lake (``filesystem`` given) is read and written by the Spark tasks' Python
# workers with pyarrow (``mapInArrow``), not by Spark's own Parquet source: that needs Hadoop's
# S3A connector (``hadoop-aws``) on the server, which a deployment may not have (no Maven).
WRITTEN_DDL = "path string, rows bigint"


def write_batches(batches: Iterator, filesystem: Any, directory: str) -> Iterator:
    """``mapInArrow`` function: a Spark partition's rows -> one Parquet file under ``directory``,
    named by the partition (a retried task replaces its killed attempt's file, see :func:`write_once`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark import TaskContext

    writer, rows, path = None, 0, f"{directory}/part-{TaskContext.get().partitionId():05d}.parquet"
    for batch in batches:
        if writer is None:
            writer = pq.ParquetWriter(path, batch.schema, filesystem=filesystem)
        writer.write_batch(batch)
        rows += batch.num_rows
    if writer is not None:
        writer.close()
        yield pa.RecordBatch.from_pydict({"path": [path], "rows": pa.array([rows], pa.int64())})


def read_files(batches: Iterator, filesystem: Any, schema: Any) -> Iterator:
    """``mapInArrow`` function: Parquet file paths -> their rows as ``schema``."""
    import pyarrow.parquet as pq

    for batch in batches:
        for path in batch.column(0).to_pylist():
            yield from pq.read_table(path, filesystem=filesystem).select(schema.names).cast(schema).to_batches()


def _local_fs() -> Any:
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem()


class SparkEngine:
    """Calendar functions (``year``, casts to dates) of the session run in UTC, as the lake's
    timestamps are (a UTC timestamp column, e.g. from Unix times, is the same instant everywhere),
    and such a column is written to Parquet as microseconds, as on Dask (Spark's default, INT96,
    reads back as nanoseconds, which Delta readers refuse)."""

    name = "spark"

    def __init__(self, session: Any) -> None:
        self.session = session
        session.conf.set("spark.sql.session.timeZone", "UTC")
        session.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")

    def _per_block(self, n: int) -> Any:
        """A frame of the numbers 0..n-1, one per partition: one Spark task per block."""
        return self.session.range(0, n, 1, numPartitions=max(n, 1))

    def read_csv(self, path: str, dataset: Dataset, *, ds: str | None = None, block_bytes: int = BLOCK_BYTES) -> Any:
        """The file as one partition per block of whole records (see :mod:`include.etl.reader`)."""
        import functools

        from include.etl.csvfile import BlockLines, even_block_bytes, plan_blocks, read_header
        from include.etl.reader import spark_ddl

        header = read_header(path, dataset)  # names the file when it is unusable
        if header.size - header.data_offset > block_bytes:  # several blocks: as many per task thread
            block_bytes = even_block_bytes(header.size - header.data_offset, block_bytes, local_slots(self.session) or 1)

        def survey(blocks: list[Block]) -> list[BlockLines]:
            func = functools.partial(survey_batches, path=path, blocks=blocks, fmt=dataset.format)
            rows = self._per_block(len(blocks)).mapInArrow(func, SURVEY_DDL).collect()
            by_block = {r["block"]: BlockLines(r["lines"], list(zip(r["line_index"], r["line_offset"], strict=True)),
                                               r["complete"]) for r in rows}
            return [by_block[k] for k in range(len(blocks))]

        blocks = plan_blocks(path, header, dataset, block_bytes, survey)
        log.info("reading %s in %s block(s) of whole records", path, len(blocks))
        func = functools.partial(parse_batches, path=path, blocks=blocks, header=header, dataset=dataset, ds=ds)
        parsed = self._per_block(len(blocks)).mapInArrow(func, spark_ddl(dataset))
        parsed._etl_blocks = functools.partial(split_batches, path=path, blocks=blocks, header=header, dataset=dataset,
                                               ds=ds)  # for write_split: the same parse, written by the tasks
        return parsed

    def write_split(self, parsed: Any, accepted_dir: str, rejects_dir: str,
                    filesystem: Any = None) -> tuple[int, int, int]:
        """A frame of :meth:`read_csv`: one Spark job whose tasks parse their block and write its
        accepted rows and rejects (pyarrow, in the Python workers: the rows never cross into the
        JVM), and report the counts. Any other frame: filtered and written by Spark."""
        import functools

        from pyspark.sql import functions as F

        split = vars(parsed).get("_etl_blocks")  # not getattr: a Spark Connect frame's attributes are columns
        if split is not None:
            for directory in (accepted_dir, rejects_dir):
                (filesystem or _local_fs()).create_dir(directory)
            n = len(split.keywords["blocks"])
            rows = self._per_block(n).mapInArrow(
                functools.partial(split, accepted_dir=accepted_dir, rejects_dir=rejects_dir, filesystem=filesystem),
                SPLIT_DDL).collect()
            assert sorted(r["block"] for r in rows) == list(range(n)), f"blocks missing from the split of {n}"
            return tuple(sum(int(r[c]) for r in rows) for c in ("accepted", "rejected", "dropped"))

        names = [c for c in parsed.columns if c not in REJECT_COLUMNS]
        ok = F.col("_reason").isNull()
        dropped = F.coalesce(F.col("_reason") == F.lit(DROPPED), F.lit(False))
        parsed = parsed.persist()  # parse once, write twice, count
        try:
            self.write_parquet(parsed.filter(ok).select(*names), accepted_dir, filesystem)
            self.write_parquet(parsed.filter(~ok & ~dropped).select(*REJECT_COLUMNS), rejects_dir, filesystem)
            row = parsed.select(
                F.count_if(ok).alias("accepted"), F.count_if(~ok & ~dropped).alias("rejected"),
                F.count_if(dropped).alias("dropped"),
            ).collect()[0]
        finally:
            parsed.unpersist()
        return int(row["accepted"] or 0), int(row["rejected"] or 0), int(row["dropped"] or 0)

    def read_parquet(self, files: Sequence[str], schema: Any, filesystem: Any = None) -> Any:
        # Files given one by one: their ``ds=...`` directory does not become a column.
        if not files:
            return self._empty(schema)
        if filesystem is not None:
            return self._read_remote(files, schema, filesystem)
        return self.session.read.parquet(*files)

    def read_parquets(self, files: Sequence[str], schema: Any, filesystem: Any = None) -> Any:
        """Parquet ``files`` as one frame of exactly ``schema`` (a ``pyarrow.Schema``; a timestamp
        without time zone is Spark's ``timestamp_ntz``)."""
        from pyspark.sql.pandas.types import from_arrow_schema

        if not files:
            return self._empty(schema)
        if filesystem is not None:
            return self._read_remote(files, schema, filesystem)
        return self.session.read.schema(from_arrow_schema(schema, prefer_timestamp_ntz=True)).parquet(*files)

    def _empty(self, schema: Any) -> Any:
        from pyspark.sql.pandas.types import from_arrow_schema

        return self.session.createDataFrame([], from_arrow_schema(schema, prefer_timestamp_ntz=True))

    def _read_remote(self, files: Sequence[str], schema: Any, filesystem: Any) -> Any:
        """Object-store files read by the tasks' Python workers with pyarrow, one task per file."""
        import functools

        from pyspark.sql.pandas.types import from_arrow_schema

        ddl = from_arrow_schema(schema, prefer_timestamp_ntz=True)
        names = self.session.createDataFrame([(f,) for f in files], "path string").repartition(len(files))
        return names.mapInArrow(functools.partial(read_files, filesystem=filesystem, schema=schema), ddl)

    def write_parquet(self, frame: Any, path: str, filesystem: Any = None) -> int:
        if filesystem is None:
            from include.etl.engines import parquet_rows

            frame.write.mode("overwrite").parquet(path)
            return parquet_rows(path)  # the footers, read here: no second Spark job
        import functools

        import pyarrow.parquet as pq
        from pyspark.sql.pandas.types import to_arrow_schema

        filesystem.create_dir(path)
        written = frame.mapInArrow(functools.partial(write_batches, filesystem=filesystem, directory=path),
                                   WRITTEN_DDL).collect()
        if not written:  # no rows at all: one empty file says the columns
            pq.write_table(to_arrow_schema(frame.schema).empty_table(), f"{path}/part-0.parquet", filesystem=filesystem)
        return sum(int(r["rows"]) for r in written)

    def write_parquets(self, frames: dict[str, Any], filesystem: Any = None) -> dict[str, int]:
        """One Spark job per output (a DataFrame write has one sink); Parquet inputs are cheap to re-read."""
        return {path: self.write_parquet(frame, path, filesystem) for path, frame in frames.items()}

    def explode(self, frame: Any, column: str, list_type: Any = None) -> Any:
        """See :meth:`include.etl.engines.Engine.explode` (``list_type`` is not needed: Spark knows it)."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import StructType

        others = [c for c in frame.columns if c != column]
        element = frame.schema[column].dataType.elementType
        exploded = frame.select(*others, F.explode(F.col(column)).alias("_element"))
        if isinstance(element, StructType):
            fields = [F.col("_element").getField(f.name).alias(f"{column}_{f.name}") for f in element.fields]
        else:
            fields = [F.col("_element").alias(column)]
        return exploded.select(*others, *fields)

    def align(self, frames: Sequence[Any]) -> list[Any]:
        return list(frames)

    def run_noop(self) -> None:
        self.session.range(1).count()
