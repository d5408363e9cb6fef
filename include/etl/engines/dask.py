"""Dask engine: reads and writes through the Dask cluster the job is connected to."""

from __future__ import annotations

import logging
import os
from typing import Any

from include.etl.parse import empty_parsed, parse_frame
from include.etl.schemas import REJECT_COLUMNS, TableSchema

log = logging.getLogger(__name__)

# Files up to this size are read as one partition, which lets rejects carry line numbers.
SINGLE_PARTITION_BYTES = 64 * 2**20


def _parse_partition(raw, schema: TableSchema, source: str, whole_file: bool):
    if whole_file:
        raw = raw.assign(_line=raw.index + 2)  # header is line 1; no quoted newlines in these inputs
    return parse_frame(raw, schema, source)


class DaskEngine:
    name = "dask"

    def __init__(self, client: Any) -> None:
        self.client = client

    def read_csv(self, path: str, schema: TableSchema) -> Any:
        import dask.dataframe as dd

        whole = schema.reference or os.path.getsize(path) <= SINGLE_PARTITION_BYTES
        raw = dd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            usecols=list(schema.names),
            blocksize=None if whole else "64MB",
            encoding="utf-8",
        )
        return raw.map_partitions(_parse_partition, schema, path, whole, meta=empty_parsed(schema))

    def write_split(self, parsed: Any, accepted_dir: str, rejects_dir: str) -> tuple[int, int]:
        import dask

        names = [c for c in parsed.columns if c not in REJECT_COLUMNS]
        ok = parsed["_reason"].isna()
        accepted = parsed[ok][names]
        rejects = parsed[~ok][list(REJECT_COLUMNS)]
        _, _, n_ok, n_bad = dask.compute(
            accepted.to_parquet(accepted_dir, write_index=False, compute=False),
            rejects.to_parquet(rejects_dir, write_index=False, compute=False),
            ok.sum(),
            (~ok).sum(),
        )
        return int(n_ok), int(n_bad)

    def read_parquet(self, path: str) -> Any:
        import dask.dataframe as dd

        # No hive partitioning: the ``ds=...`` directory name must not become a column.
        return dd.read_parquet(path, dataset={"partitioning": None})

    def write_parquet(self, frame: Any, path: str) -> int:
        import dask

        _, n = dask.compute(frame.to_parquet(path, write_index=False, compute=False), frame.shape[0])
        return int(n)

    def run_noop(self) -> None:
        self.client.submit(int, 0, pure=False).result()
