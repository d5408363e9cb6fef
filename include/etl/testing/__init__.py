"""Helpers for testing a pipeline (``docs/pipelines.md``, "Testing a pipeline").

* :func:`read_file`: read a small file through its dataset contract in this process, exactly as
  an engine's ingest does (the same header check, blocks, parsing and checks), without a cluster.
  :func:`accepted` and :func:`rejected` split the result.
* :mod:`include.etl.testing.pytest_plugin`: the fixtures ``real_engines`` (a real local Dask
  cluster and Spark Connect server), ``migrated_home_template`` and ``airflow_home`` (an isolated,
  migrated ``AIRFLOW_HOME`` for ``bin/airflow``), loaded with ``-p include.etl.testing.pytest_plugin``
  or ``pytest_plugins = ["include.etl.testing.pytest_plugin"]``.

Nothing heavy is imported until a helper is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.etl.contract import Dataset

__all__ = ["accepted", "read_file", "rejected"]


def read_file(path: str | Path, dataset: Dataset, block_bytes: int = 1 << 26, ds: str | None = None) -> Any:
    """``path`` read through ``dataset`` in this process: a ``pyarrow.Table`` of the declared columns
    followed by ``_source``, ``_line``, ``_raw`` and ``_reason`` (null for an accepted row).

    ``block_bytes`` splits the file into blocks as ``ETL_INGEST_BLOCK_BYTES`` does on a cluster
    (small values exercise records across block boundaries); ``ds`` is the run's day, for
    ``on_partition_day`` rules. Raises what an ingest raises on an unusable file
    (:class:`include.etl.errors.InputFileError`: missing, empty, header without required columns).
    """
    import pyarrow as pa

    from include.etl.csvfile import plan_blocks, read_header, survey_block
    from include.etl.reader import parse_block

    path = str(path)
    header = read_header(path, dataset)
    blocks = plan_blocks(path, header, dataset, block_bytes,
                         lambda naive: [survey_block(path, b, dataset.format) for b in naive])
    return pa.concat_tables([parse_block(path, b, header, dataset, ds) for b in blocks])


def accepted(table: Any) -> Any:
    """The accepted rows of :func:`read_file`'s table, with the dataset's columns only."""
    import pyarrow.compute as pc

    from include.etl.reader import REJECT_COLUMNS

    good = table.filter(pc.is_null(table["_reason"]))
    return good.select([n for n in good.column_names if n not in REJECT_COLUMNS])


def rejected(table: Any) -> list[tuple[int, str, str]]:
    """``(line, reason, raw text)`` of every rejected row of :func:`read_file`'s table, in file order."""
    import pyarrow.compute as pc

    bad = table.filter(pc.is_valid(table["_reason"]))
    return [(r["_line"], r["_reason"], r["_raw"]) for r in bad.select(["_line", "_reason", "_raw"]).to_pylist()]
