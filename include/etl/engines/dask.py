"""Dask engine: reads and writes through the Dask cluster the job is connected to."""

from __future__ import annotations

import logging
import os
from typing import Any

from include.etl.parse import empty_parsed, parse_block
from include.etl.schemas import REJECT_COLUMNS, TableSchema

log = logging.getLogger(__name__)

# Files up to this size are read as one partition; larger ones in blocks of this size.
BLOCK_BYTES = 64 * 2**20


def _count_newlines(block: bytes) -> int:
    return block.count(b"\n")


def ingest_block(block: bytes, schema: TableSchema, source: str, header: list[str], first_line: int) -> Any:
    """One block of the file (whole lines) -> :func:`include.etl.parse.parse_frame` output.

    Block 0 holds the header. :func:`include.etl.parse.parse_block` reads well-formed blocks
    with pyarrow and any other through the careful per-line path, with the same result.
    """
    return parse_block(block, schema, source, header, first_line, skip_header=first_line == 1)


class DaskEngine:
    """Every computation runs on this engine's client's cluster (never on dask's global default scheduler)."""

    name = "dask"

    def __init__(self, client: Any) -> None:
        self.client = client

    def read_csv(self, path: str, schema: TableSchema) -> Any:
        import dask
        import dask.dataframe as dd
        from dask.bytes import read_bytes

        from include.etl.parse import check_header

        header = check_header(path, schema)
        whole = schema.reference or os.path.getsize(path) <= BLOCK_BYTES
        _, (blocks,) = read_bytes(path, delimiter=b"\n", blocksize=None if whole else BLOCK_BYTES, sample=False)
        if len(blocks) == 1:
            first_lines = [1]
        else:  # exact line numbers: count the newlines before each block (a fast pass over the bytes)
            counts = dask.compute(*[dask.delayed(_count_newlines)(b) for b in blocks], scheduler=self.client)
            first_lines = [1 + sum(counts[:i]) for i in range(len(blocks))]
        parts = [
            dask.delayed(ingest_block)(b, schema, path, header, first)
            for b, first in zip(blocks, first_lines, strict=True)
        ]
        return dd.from_delayed(parts, meta=empty_parsed(schema), verify_meta=False)

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
            scheduler=self.client,
        )
        return int(n_ok), int(n_bad)

    def read_parquet(self, path: str) -> Any:
        import dask.dataframe as dd

        # No hive partitioning: the ``ds=...`` directory name must not become a column.
        return dd.read_parquet(path, dataset={"partitioning": None})

    def write_parquet(self, frame: Any, path: str) -> int:
        import dask

        _, n = dask.compute(frame.to_parquet(path, write_index=False, compute=False), frame.shape[0], scheduler=self.client)
        return int(n)

    def write_parquets(self, frames: dict[str, Any]) -> dict[str, int]:
        """One ``compute`` for all frames: graphs built from the same input read it once."""
        import dask

        paths = list(frames)
        writes = [frames[p].to_parquet(p, write_index=False, compute=False) for p in paths]
        counts = dask.compute(*writes, *[frames[p].shape[0] for p in paths], scheduler=self.client)[len(paths):]
        return {p: int(n) for p, n in zip(paths, counts, strict=True)}

    def run_noop(self) -> None:
        self.client.submit(int, 0, pure=False).result()
