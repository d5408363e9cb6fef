"""Engine adapters: the only code that knows how a backend reads and writes data.

An engine turns files into native lazy frames and back. Job logic stays engine-agnostic:
row-level parsing is a pandas function applied per partition (:mod:`include.etl.parse`),
joins and aggregations are narwhals expressions (:mod:`include.etl.transforms`).
"""

from __future__ import annotations

from typing import Any, Protocol

from include.etl.schemas import TableSchema


class Engine(Protocol):
    name: str

    def read_csv(self, path: str, schema: TableSchema) -> Any:
        """Read a CSV file as raw strings and parse it with :func:`include.etl.parse.parse_frame`."""

    def write_split(self, parsed: Any, accepted_dir: str, rejects_dir: str) -> tuple[int, int]:
        """Write accepted rows and rejects as Parquet in one pass; return their counts."""

    def read_parquet(self, path: str) -> Any:
        """A native lazy frame over a Parquet dataset directory."""

    def write_parquet(self, frame: Any, path: str) -> int:
        """Write a native frame as Parquet into ``path`` (a new directory); return the row count."""

    def write_parquets(self, frames: dict[str, Any]) -> dict[str, int]:
        """Write several frames (path -> frame), sharing their common inputs where the engine can; row counts per path."""

    def run_noop(self) -> None:
        """Run the smallest possible unit of work on the cluster (for overhead measurements)."""
