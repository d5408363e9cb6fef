"""Engine adapters: the only code that knows how a backend reads and writes data.

An engine turns files into native lazy frames and back. Job logic stays engine-agnostic:
a CSV input is split into blocks of whole records and each block parsed by the same function
on every engine (:mod:`include.etl.reader`); joins and aggregations are narwhals expressions
written by the pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from include.etl.contract import Dataset


class Engine(Protocol):
    name: str

    def read_csv(self, path: str, dataset: Dataset, *, ds: str | None = None, block_bytes: int = ...) -> Any:
        """Read a CSV input as its contract declares: typed columns plus the reject bookkeeping columns."""

    # Paths are local paths, or ``bucket/key`` paths of ``filesystem`` (a pyarrow filesystem: an
    # S3 lake, :meth:`include.etl.lake.Lake.filesystem`); ``filesystem=None`` is the local disk.

    def write_split(self, parsed: Any, accepted_dir: str, rejects_dir: str,
                    filesystem: Any = None) -> tuple[int, int, int]:
        """Write accepted rows and rejects as Parquet in one pass; return their counts and the count
        of rows dropped as exact copies (``_reason`` :data:`include.etl.reader.DROPPED`, written nowhere)."""

    def explode(self, frame: Any, column: str, list_type: Any = None) -> Any:
        """``frame`` (native) with one row per element of its list ``column`` (rows with an empty or
        null list have none); a struct element's fields become columns ``<column>_<field>``, any other
        element stays ``column``. ``list_type``: the column's Arrow type, when the frame does not
        carry it (:func:`include.etl.jobs.steps.read_exploded` gives it from the table's schema)."""

    def read_parquet(self, files: Sequence[str], schema: Any, filesystem: Any = None) -> Any:
        """A native lazy frame over Parquet ``files`` (a table's partition), typed as the files say;
        no file at all (an empty partition) is an empty frame of ``schema`` (a ``pyarrow.Schema``)."""

    def read_parquets(self, files: Sequence[str], schema: Any, filesystem: Any = None) -> Any:
        """One native lazy frame over Parquet ``files`` (e.g. a period's daily partitions) with exactly
        ``schema`` (its columns, in its order, of its types, whatever each file's own types or metadata)."""

    def write_parquet(self, frame: Any, path: str, filesystem: Any = None) -> int:
        """Write a native frame as Parquet into ``path`` (a new directory); return the row count."""

    def write_parquets(self, frames: dict[str, Any], filesystem: Any = None) -> dict[str, int]:
        """Write several frames (path -> frame), sharing their common inputs where the engine can; row counts per path."""

    def align(self, frames: Sequence[Any]) -> list[Any]:
        """Native frames read in one job, on one backend, to be combined (joined)."""

    def run_noop(self) -> None:
        """Run the smallest possible unit of work on the cluster (for overhead measurements)."""


def parquet_rows(directory: str, filesystem: Any = None) -> int:
    """The rows of the Parquet files in ``directory`` (a local path, or ``bucket/key`` on ``filesystem``), from their footers."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs = filesystem or pafs.LocalFileSystem()
    files = [f.path for f in fs.get_file_info(pafs.FileSelector(directory))
             if f.type == pafs.FileType.File and f.path.endswith(".parquet")]
    return sum(pq.read_metadata(f, filesystem=fs).num_rows for f in files)
