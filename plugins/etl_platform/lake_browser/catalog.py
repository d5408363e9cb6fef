"""What the lake holds, read from the filesystem only (read-only; no Airflow, no pipeline names).

Layout (``include/etl/lake.py``)::

    {root}/{pipeline}/{table}/ds=YYYY-MM-DD/*.parquet       a table's partition
    {root}/{pipeline}/_rejects/{table}/ds=YYYY-MM-DD/       the rejected input rows of that partition
    {root}/{pipeline}/{table}/ds=YYYY-MM-DD/**/*.html       a report of that partition

Names starting with ``.`` or ``_`` are not pipelines or tables (staging directories, ``_rejects``,
Spark's ``_SUCCESS``, checksums). Row counts come from the Parquet footers
(``pyarrow.dataset.count_rows``): no data page is read. pyarrow is imported inside the functions
that count, never when this module is imported.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

PARTITION_KEY = "ds"
REJECTS_DIR = "_rejects"
REPORT_SUFFIXES = (".html", ".htm")
PARQUET_SUFFIX = ".parquet"


def visible(name: str) -> bool:
    """A name the lake shows: not hidden (``.staging-*``), not internal (``_rejects``, ``_SUCCESS``)."""
    return bool(name) and not name.startswith((".", "_"))


def partition_ds(name: str) -> str | None:
    """``'2024-07-08'`` for a directory named ``ds=2024-07-08``; None for anything else."""
    key, sep, value = name.partition("=")
    if key != PARTITION_KEY or not sep:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat() if len(value) == 10 else None
    except ValueError:
        return None


def _subdirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return sorted(e.name for e in entries if visible(e.name) and e.is_dir())
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _partition_dirs(table_dir: Path) -> dict[str, Path]:
    """``{ds: path}`` of the ``ds=`` partitions directly under a table directory."""
    found = {}
    try:
        with os.scandir(table_dir) as entries:
            for e in entries:
                ds = partition_ds(e.name)
                if ds and e.is_dir():
                    found[ds] = Path(e.path)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        pass
    return found


def _files(partition: Path) -> list[Path]:
    """Every visible regular file under a partition (nested directories included), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(partition):
        dirnames[:] = sorted(d for d in dirnames if visible(d))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if visible(f))
    return out


def count_rows(partition: Path) -> int:
    """Rows of the Parquet files of one partition, from their footers. An empty partition has 0."""
    files = [str(f) for f in _files(partition) if f.suffix == PARQUET_SUFFIX]
    if not files:
        return 0
    import pyarrow.dataset as pads

    return int(pads.dataset(files, format="parquet", partitioning=None).count_rows())


def _count(partition: Path | None) -> tuple[int | None, str | None]:
    if partition is None:
        return None, None
    try:
        return count_rows(partition), None
    except Exception as exc:  # noqa: BLE001 - an unreadable partition is shown, not a failed page
        return None, f"{type(exc).__name__}: {exc}"


@dataclass
class Partition:
    ds: str
    rows: int | None  # None: no such partition of the table (only rejects), or unreadable
    rejects: int | None  # None: no rejects partition for this ds
    files: int = 0
    bytes: int = 0
    reports: list[str] = field(default_factory=list)  # paths relative to the lake root
    error: str | None = None
    rejects_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TableSummary:
    name: str
    partitions: int
    latest: str | None
    latest_rows: int | None
    latest_rejects: int | None
    has_rejects: bool
    reports: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    pipeline: str
    table: str
    ds: str
    name: str
    path: str  # relative to the lake root
    modified: float

    def to_dict(self) -> dict:
        return asdict(self)


class Catalog:
    """Read-only view of one lake root."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- names ---------------------------------------------------------------------------------

    def pipelines(self) -> list[str]:
        return _subdirs(self.root)

    def has_pipeline(self, pipeline: str) -> bool:
        return visible(pipeline) and "/" not in pipeline and pipeline in self.pipelines()

    def tables(self, pipeline: str) -> list[str]:
        """Tables of a pipeline: its visible directories, plus tables that so far only have rejects."""
        base = self.root / pipeline
        return sorted(set(_subdirs(base)) | set(_subdirs(base / REJECTS_DIR)))

    def has_table(self, pipeline: str, table: str) -> bool:
        return self.has_pipeline(pipeline) and visible(table) and table in self.tables(pipeline)

    def _table_dir(self, pipeline: str, table: str) -> Path:
        return self.root / pipeline / table

    def _rejects_dir(self, pipeline: str, table: str) -> Path:
        return self.root / pipeline / REJECTS_DIR / table

    # -- content -------------------------------------------------------------------------------

    def _reports_of(self, partition: Path) -> list[str]:
        return [f.relative_to(self.root).as_posix() for f in _files(partition) if f.suffix.lower() in REPORT_SUFFIXES]

    def partitions(self, pipeline: str, table: str) -> list[Partition]:
        """Every ``ds`` of a table (newest first) with its row, reject and file counts and reports."""
        data = _partition_dirs(self._table_dir(pipeline, table))
        rejects = _partition_dirs(self._rejects_dir(pipeline, table))
        out = []
        for ds in sorted(set(data) | set(rejects), reverse=True):
            rows, error = _count(data.get(ds))
            n_rejects, rejects_error = _count(rejects.get(ds))
            files = _files(data[ds]) if ds in data else []
            out.append(Partition(
                ds=ds, rows=rows, rejects=n_rejects,
                files=sum(1 for f in files if f.suffix == PARQUET_SUFFIX),
                bytes=sum(f.stat().st_size for f in files if f.suffix == PARQUET_SUFFIX),
                reports=self._reports_of(data[ds]) if ds in data else [],
                error=error, rejects_error=rejects_error,
            ))
        return out

    def latest_ds(self, pipeline: str) -> str | None:
        """The newest ``ds`` of any table of a pipeline (directory names only, nothing is read)."""
        return max((ds for t in _subdirs(self.root / pipeline) for ds in _partition_dirs(self._table_dir(pipeline, t))),
                   default=None)

    def table_summaries(self, pipeline: str) -> list[TableSummary]:
        out = []
        for table in self.tables(pipeline):
            data = _partition_dirs(self._table_dir(pipeline, table))
            rejects = _partition_dirs(self._rejects_dir(pipeline, table))
            latest = max(data) if data else None
            out.append(TableSummary(
                name=table, partitions=len(data), latest=latest,
                latest_rows=_count(data[latest])[0] if latest else None,
                latest_rejects=_count(rejects.get(latest))[0] if latest else None,
                has_rejects=bool(rejects),
                reports=sum(len(self._reports_of(p)) for p in data.values()),
            ))
        return out

    def reports(self, pipeline: str | None = None, limit: int | None = None) -> list[Report]:
        """Report files of the whole lake (or one pipeline), newest ``ds`` first."""
        out = []
        for p in [pipeline] if pipeline else self.pipelines():
            for table in _subdirs(self.root / p):
                for ds, path in _partition_dirs(self._table_dir(p, table)).items():
                    for rel in self._reports_of(path):
                        f = self.root / rel
                        out.append(Report(pipeline=p, table=table, ds=ds, name=f.name, path=rel,
                                          modified=f.stat().st_mtime))
        out.sort(key=lambda r: (r.ds, r.modified, r.path), reverse=True)
        return out[:limit] if limit else out

    # -- files ---------------------------------------------------------------------------------

    def resolve_file(self, relative: str) -> Path | None:
        """The regular file at ``relative`` under the lake root, or None when it is not one.

        Refused: absolute paths, ``..`` or empty segments, hidden or internal segments other than
        ``_rejects`` (staging directories), backslashes and NULs, and anything whose real path (symlinks
        followed) is outside the real lake root.
        """
        if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
            return None
        parts = relative.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return None
        if any(not visible(p) and p != REJECTS_DIR for p in parts):
            return None
        root = self.root.resolve()
        try:
            target = (root / Path(*parts)).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not target.is_relative_to(root) or not target.is_file():
            return None
        return target
