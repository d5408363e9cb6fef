"""What the lake holds: its Delta tables, their partitions and versions, and the reports beside them.

Read-only, through :mod:`include.etl.lake` and the lake's :class:`LakeLocation`, so a ``file://``
and an ``s3://`` lake read the same way. Layout (``include/etl/lake``)::

    {lake}/{pipeline}/{table}/                    a Delta table partitioned by ``ds``
    {lake}/{pipeline}/_rejects/{table}/           its rejected input rows (a Delta table too)
    {lake}/{pipeline}/_reports/{table}/ds={ds}/   HTML reports of a partition

A partition's rows, files and bytes come from the table's log (the ``numRecords`` of each file):
no data file is opened except for a partition's preview. A day published without data is a
partition of zero rows, shown as ``empty`` ("no data that day"); a day the table has no partition
for was not processed. Which run wrote a day, and the list of versions, come from the commits
(:meth:`Lake.history`), read only by the pages that show them. What is derived from one version of
a table never changes, so it is kept per ``(table, version)`` in this process: a new commit is a
new version, read again.

pyarrow and deltalake are imported inside the functions, never when this module is imported.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from include.etl.lake import REJECTS, REPORTS, Lake, LakeLocation, list_tables

PARTITION_KEY = "ds"
REPORT_SUFFIXES = (".html", ".htm")
PREVIEW_ROWS = 50
MAX_PREVIEW_ROWS = 1000
CHUNK = 1 << 20

# Partition states.
DATA = "data"  # published with rows
EMPTY = "empty"  # published without rows: no data that day
REJECTS_ONLY = "rejects only"  # the input had rejected rows, the table has no such partition
NOT_PROCESSED = "not processed"  # no commit names this day

STATE_TEXT = {DATA: "", EMPTY: "no data that day", REJECTS_ONLY: "only rejected rows",
              NOT_PROCESSED: "not processed"}


def visible(name: str) -> bool:
    """A name the lake shows: not hidden (``.x``), not internal (``_rejects``, ``_delta_log``, ``_SUCCESS``)."""
    return bool(name) and not name.startswith((".", "_"))


def partition_ds(name: str) -> str | None:
    """``'2024-07-08'`` for a directory named ``ds=2024-07-08``; None for anything else."""
    key, sep, value = name.partition("=")
    if key != PARTITION_KEY or not sep:
        return None
    return valid_ds(value)


def valid_ds(value: str) -> str | None:
    """``value`` when it is a date ``YYYY-MM-DD``, else None."""
    try:
        return dt.date.fromisoformat(value).isoformat() if len(value) == 10 else None
    except ValueError:
        return None


# -- what the pages show --------------------------------------------------------------------------


@dataclass
class Partition:
    ds: str
    rows: int | None  # None: the table has no such partition (only rejects)
    rejects: int | None  # None: no rejects published for this ds
    files: int = 0
    bytes: int = 0
    reports: list[str] = field(default_factory=list)  # paths relative to the lake root
    error: str | None = None
    rejects_error: str | None = None
    state: str = DATA  # DATA, EMPTY or REJECTS_ONLY
    version: int | None = None  # the table version that last wrote this ds
    time: str | None = None  # when (UTC, ISO)
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TableSummary:
    name: str
    partitions: int  # days published (empty days included)
    latest: str | None
    latest_rows: int | None
    latest_rejects: int | None
    has_rejects: bool
    reports: int
    version: int | None = None  # the table's current version
    updated: str | None = None  # time of that version
    empty_days: int = 0
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Version:
    version: int
    time: str
    operation: str | None
    ds: str | None = None
    rows: int | None = None  # rows the commit published for ds
    rows_removed: int | None = None  # rows of ds it replaced
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Column:
    name: str
    type: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PartitionView:
    """One partition of a table as of a version: its state, columns and first rows."""

    pipeline: str
    table: str
    ds: str
    version: int  # the version shown
    latest_version: int
    state: str  # DATA, EMPTY or NOT_PROCESSED (as of ``version``)
    rows: int
    files: int
    bytes: int
    columns: list[Column]
    preview: list[dict]  # the first rows, values as JSON-safe text/numbers
    rejects: int | None  # rejects of this ds (latest)
    reports: list[str]
    versions: list[Version]  # the commits that wrote this ds, newest first
    of_rejects: bool = False  # the partition of the rejects table
    error: str | None = None  # why the preview could not be read (files vacuumed, unreadable)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["state_text"] = STATE_TEXT[self.state]
        return d


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


@dataclass(frozen=True)
class LakeFile:
    """A report file the browser may serve."""

    relative: str
    path: str  # in the lake's filesystem
    size: int

    @property
    def name(self) -> str:
        return self.relative.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix


class VersionNotFound(LookupError):
    """The table has no such version (never written, or its log entry expired)."""


# -- one version of one table, derived once ---------------------------------------------------------


@dataclass
class _Day:
    rows: int = 0
    files: int = 0
    bytes: int = 0
    rows_known: bool = True


@dataclass
class _Snapshot:
    """What the pages need of one version of one Delta table; its commits are read when first asked for."""

    lake: Lake
    table: str
    version: int
    time: str | None  # of this version's commit
    days: dict[str, _Day]  # ds -> rows, files, bytes in this version (empty days: 0 rows)
    _history: list[Version] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self, ds: str) -> str:
        day = self.days.get(ds)
        if day is None:
            return NOT_PROCESSED
        return DATA if day.rows or not day.rows_known else EMPTY

    @property
    def history(self) -> list[Version]:
        """The table's commits up to this version still in its log, newest first."""
        with self._lock:
            if self._history is None:
                self._history = [v for v in _versions(self.lake.history(self.table)) if v.version <= self.version]
            return self._history

    def last_commit(self, ds: str) -> Version | None:
        return next((v for v in self.history if v.ds == ds), None)


_CACHE: OrderedDict[tuple[str, str, int], _Snapshot] = OrderedDict()
_CACHE_SIZE = 256
_LOCK = threading.Lock()


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _versions(history: list[dict]) -> list[Version]:
    return [Version(version=int(h["version"]), time=h.get("time") or "", operation=h.get("operation"),
                    ds=h.get("ds"), rows=_int(h.get("rows")), rows_removed=_int(h.get("rows_removed")),
                    dag_id=h.get("dag_id"), run_id=h.get("run_id"), task_id=h.get("task_id"),
                    try_number=h.get("try_number"))
            for h in history if h.get("version") is not None]


def _days(delta: Any) -> dict[str, _Day]:
    """``{ds: rows, files, bytes}`` from the table's add actions (the log; no data file is read)."""
    import pyarrow as pa

    # Through the C stream: pa.table() would import pandas (about a second) to check its argument.
    actions = pa.RecordBatchReader.from_stream(delta.get_add_actions(flatten=True)).read_all()
    days: dict[str, _Day] = {}
    if actions.num_rows == 0 or "partition.ds" not in actions.column_names:
        return days
    for ds, rows, size in zip(actions.column("partition.ds").to_pylist(), actions.column("num_records").to_pylist(),
                              actions.column("size_bytes").to_pylist(), strict=True):
        day = days.setdefault(ds, _Day())
        day.files += 1
        day.bytes += int(size or 0)
        if rows is None:
            day.rows_known = False
        else:
            day.rows += int(rows)
    return days


def _snapshot(lake: Lake, table: str, version: int | None = None) -> _Snapshot:
    """The derived view of ``table`` as of ``version`` (latest when None); FileNotFoundError without a table."""
    try:
        delta = lake.delta(table, version)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - delta-rs says "invalid version" in several ways
        if version is not None:
            raise VersionNotFound(f"{table} has no version {version}: {exc}") from exc
        raise
    current = delta.version()
    key = (lake.table_uri(table), delta.metadata().id, current)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    head = delta.history(1)
    stamp = head[0].get("timestamp") if head else None
    snap = _Snapshot(lake=lake, table=table, version=current, days=_days(delta),
                     time=dt.datetime.fromtimestamp(stamp / 1000, dt.UTC).isoformat(timespec="seconds")
                     if stamp else None)
    with _LOCK:
        _CACHE[key] = snap
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return snap


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, bytes):
        return value[:64].hex() + ("…" if len(value) > 64 else "")
    return str(value)


def _missing_days(published: list[str]) -> list[str]:
    """Days inside a daily table's range it has no partition for (not processed); none for coarser tables."""
    dates = sorted(dt.date.fromisoformat(d) for d in published if valid_ds(d))
    if len(dates) < 2 or min(b - a for a, b in zip(dates, dates[1:], strict=False)) != dt.timedelta(days=1):
        return []
    have, out, day = set(dates), [], dates[0]
    while day < dates[-1]:
        if day not in have:
            out.append(day.isoformat())
        day += dt.timedelta(days=1)
    return sorted(out, reverse=True)


# -- the catalog ------------------------------------------------------------------------------------


class Catalog:
    """Read-only view of one lake (``file://`` or ``s3://``); one instance per request."""

    def __init__(self, location: LakeLocation | str | Path):
        self.location = LakeLocation.resolve(location)
        self._tables: list[tuple[str, str]] | None = None
        self._reports: dict[str, list[Report]] = {}

    @property
    def root(self) -> str:
        return self.location.uri

    def lake(self, pipeline: str) -> Lake:
        return Lake(self.location, pipeline)

    # -- names ---------------------------------------------------------------------------------

    def _all_tables(self) -> list[tuple[str, str]]:
        if self._tables is None:
            self._tables = [(p, t) for p, t in list_tables(self.location) if visible(p)]
        return self._tables

    def pipelines(self) -> list[str]:
        return sorted({p for p, _ in self._all_tables()})

    def has_pipeline(self, pipeline: str) -> bool:
        return visible(pipeline) and "/" not in pipeline and pipeline in self.pipelines()

    def _delta_tables(self, pipeline: str) -> set[str]:
        return {t for p, t in self._all_tables() if p == pipeline}

    def tables(self, pipeline: str) -> list[str]:
        """Tables of a pipeline: its Delta tables, plus tables that so far only have rejects."""
        prefix = f"{REJECTS}/"
        return sorted({t.removeprefix(prefix) for t in self._delta_tables(pipeline)})

    def has_table(self, pipeline: str, table: str) -> bool:
        return self.has_pipeline(pipeline) and visible(table) and "/" not in table and table in self.tables(pipeline)

    def _has_data(self, pipeline: str, table: str) -> bool:
        return table in self._delta_tables(pipeline)

    def _has_rejects(self, pipeline: str, table: str) -> bool:
        return Lake.rejects(table) in self._delta_tables(pipeline)

    def _snap(self, pipeline: str, table: str, version: int | None = None) -> _Snapshot | None:
        """``table`` (a name, or ``_rejects/<name>``) as of ``version``; None when the lake has no such table."""
        if table not in self._delta_tables(pipeline):
            return None
        try:
            return _snapshot(self.lake(pipeline), table, version)
        except FileNotFoundError:
            return None

    # -- content -------------------------------------------------------------------------------

    def partitions(self, pipeline: str, table: str) -> list[Partition]:
        """Every published ``ds`` of a table (newest first): rows, rejects, files, reports, who wrote it.

        A table whose log cannot be read raises (the page shows the error: :meth:`table_error`).
        """
        snap = self._snap(pipeline, table)
        rejects, rejects_error = self._rejects_counts(pipeline, table)
        reports: dict[str, list[str]] = {}
        for r in self.reports(pipeline):
            if r.table == table:
                reports.setdefault(r.ds, []).append(r.path)
        days = set(snap.days) if snap else set()
        out = []
        for ds in sorted(days | set(rejects), reverse=True):
            n_rejects = rejects.get(ds)
            if snap is None or ds not in days:
                out.append(Partition(ds=ds, rows=None, rejects=n_rejects, reports=sorted(reports.get(ds, [])),
                                     state=REJECTS_ONLY, rejects_error=rejects_error))
                continue
            day = snap.days.get(ds, _Day())
            last = snap.last_commit(ds)
            out.append(Partition(
                ds=ds, rows=day.rows if day.rows_known else None, rejects=n_rejects, files=day.files,
                bytes=day.bytes, reports=sorted(reports.get(ds, [])), state=snap.state(ds),
                error=None if day.rows_known else "a file of this partition has no row count in the table's log",
                rejects_error=rejects_error, version=last.version if last else None, time=last.time if last else None,
                dag_id=last.dag_id if last else None, run_id=last.run_id if last else None,
                task_id=last.task_id if last else None,
            ))
        return out

    def missing_days(self, partitions: list[Partition]) -> list[str]:
        """Days a daily table skipped between its first and last published day (not processed)."""
        return _missing_days([p.ds for p in partitions if p.state != REJECTS_ONLY])

    def table_version(self, pipeline: str, table: str) -> int | None:
        snap = self._snap(pipeline, table)
        return snap.version if snap else None

    def table_error(self, pipeline: str, table: str) -> str | None:
        """Why a table cannot be read (a damaged log), or None."""
        try:
            self._snap(pipeline, table)
            if self._has_rejects(pipeline, table):
                self._snap(pipeline, Lake.rejects(table))
        except Exception as exc:  # noqa: BLE001 - shown on the page
            return _error(exc)
        return None

    def _rejects_counts(self, pipeline: str, table: str) -> tuple[dict[str, int], str | None]:
        """``{ds: rejected rows}`` of every published rejects partition (0 for a day published without)."""
        try:
            snap = self._snap(pipeline, Lake.rejects(table))
        except Exception as exc:  # noqa: BLE001 - the data is still shown, the rejects say why not
            return {}, _error(exc)
        if snap is None:
            return {}, None
        return {ds: day.rows for ds, day in snap.days.items()}, None

    def latest_ds(self, pipeline: str) -> str | None:
        """The newest published ``ds`` of any table of a pipeline."""
        latest = None
        for table in self.tables(pipeline):
            try:
                snap = self._snap(pipeline, table)
            except Exception:  # noqa: BLE001 - a damaged table is shown on its own page
                continue
            if snap and snap.days:
                latest = max(latest or "", *snap.days)
        return latest

    def table_summaries(self, pipeline: str) -> list[TableSummary]:
        out = []
        n_reports: dict[str, int] = {}
        for r in self.reports(pipeline):
            n_reports[r.table] = n_reports.get(r.table, 0) + 1
        for table in self.tables(pipeline):
            summary = TableSummary(name=table, partitions=0, latest=None, latest_rows=None, latest_rejects=None,
                                   has_rejects=self._has_rejects(pipeline, table), reports=n_reports.get(table, 0))
            try:
                snap = self._snap(pipeline, table)
                rejects, _ = self._rejects_counts(pipeline, table)
            except Exception as exc:  # noqa: BLE001 - one damaged table does not fail the page
                summary.error = _error(exc)
                out.append(summary)
                continue
            if snap is not None:
                days = set(snap.days)
                summary.partitions = len(days)
                summary.latest = max(days) if days else None
                summary.version, summary.updated = snap.version, snap.time
                summary.empty_days = sum(1 for d in days if snap.state(d) == EMPTY)
                if summary.latest:
                    day = snap.days.get(summary.latest, _Day())
                    summary.latest_rows = day.rows if day.rows_known else None
                    summary.latest_rejects = rejects.get(summary.latest)
            out.append(summary)
        return out

    def versions(self, pipeline: str, table: str, *, rejects: bool = False, limit: int | None = None) -> list[Version]:
        """The table's commits, newest first: time, operation, ds, rows added and removed, DAG, run, task, try."""
        snap = self._snap(pipeline, Lake.rejects(table) if rejects else table)
        if snap is None:
            return []
        return snap.history[:limit] if limit else list(snap.history)

    def partition(self, pipeline: str, table: str, ds: str, *, version: int | None = None, rejects: bool = False,
                  limit: int = PREVIEW_ROWS) -> PartitionView | None:
        """``ds`` of ``table`` (or of its rejects) as of ``version``: state, columns, first ``limit`` rows.

        None when the table does not exist; :class:`VersionNotFound` for a version the log does not have.
        """
        name = Lake.rejects(table) if rejects else table
        latest = self._snap(pipeline, name)
        if latest is None:
            return None
        if version is not None and version > latest.version:
            raise VersionNotFound(f"{name} has no version {version} (its latest is {latest.version})")
        snap = latest if version is None else _snapshot(self.lake(pipeline), name, version)
        delta = self.lake(pipeline).delta(name, snap.version)
        day = snap.days.get(ds, _Day())
        state = snap.state(ds)
        view = PartitionView(
            pipeline=pipeline, table=table, ds=ds, version=snap.version, latest_version=latest.version, state=state,
            rows=day.rows, files=day.files, bytes=day.bytes, columns=[], preview=[],
            rejects=None if rejects else self._rejects_counts(pipeline, table)[0].get(ds),
            reports=sorted(r.path for r in self.reports(pipeline) if r.table == table and r.ds == ds),
            versions=[v for v in latest.history if v.ds == ds], of_rejects=rejects,
        )
        import pyarrow as pa

        schema = pa.schema(delta.schema().to_arrow())
        view.columns = [Column(f.name, str(f.type)) for f in schema if f.name != PARTITION_KEY]
        if state == DATA and limit > 0:
            try:
                dataset = delta.to_pyarrow_dataset(file_pruning_predicate=[(PARTITION_KEY, "=", ds)])
                head = dataset.head(min(limit, MAX_PREVIEW_ROWS), columns=[c.name for c in view.columns])
                view.preview = [{k: _json_value(v) for k, v in row.items()} for row in head.to_pylist()]
            except Exception as exc:  # noqa: BLE001 - e.g. an old version whose files vacuum removed
                view.error = (f"the files of version {snap.version} cannot be read (files of replaced versions "
                              f"are removed once older than the lake's retention): {_error(exc)}")
        return view

    # -- reports ---------------------------------------------------------------------------------

    def _pipeline_reports(self, pipeline: str) -> list[Report]:
        if pipeline in self._reports:
            return self._reports[pipeline]
        import pyarrow.fs as pafs

        fs = self.location.filesystem()
        base = self.location.fs_path(self.location.join(pipeline, REPORTS))
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except (FileNotFoundError, OSError):
            infos = []
        out = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.startswith(base + "/"):
                continue
            relative = f"{pipeline}/{REPORTS}/{info.path[len(base) + 1:]}"
            if self._report_parts(relative) is None:
                continue
            parts = relative.split("/")
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            out.append(Report(pipeline=pipeline, table=parts[2], ds=partition_ds(parts[3]) or "", name=parts[-1],
                              path=relative, modified=mtime))
        self._reports[pipeline] = out
        return out

    def reports(self, pipeline: str | None = None, limit: int | None = None) -> list[Report]:
        """Reports of the whole lake (or one pipeline), newest ``ds`` first."""
        out = [r for p in ([pipeline] if pipeline else self.pipelines()) for r in self._pipeline_reports(p)]
        out.sort(key=lambda r: (r.ds, r.modified, r.path), reverse=True)
        return out[:limit] if limit else out

    # -- files ---------------------------------------------------------------------------------

    @staticmethod
    def _report_parts(relative: str) -> list[str] | None:
        """The segments of ``{pipeline}/_reports/{table}/ds={ds}/…/{name}.html``, or None for any other path."""
        if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
            return None
        parts = relative.split("/")
        if len(parts) < 5 or parts[1] != REPORTS or partition_ds(parts[3]) is None:
            return None
        if any(p in ("", ".", "..") for p in parts):
            return None
        if any(not visible(p) for i, p in enumerate(parts) if i != 1):
            return None
        if not parts[-1].lower().endswith(REPORT_SUFFIXES):
            return None
        return parts

    def resolve_file(self, relative: str) -> LakeFile | None:
        """The report file at ``relative`` (``{pipeline}/_reports/{table}/ds={ds}/…``), or None.

        Only reports are served: data files are read through their table, never by path. Refused:
        absolute paths, ``..`` or empty segments, hidden or internal segments, backslashes and NULs,
        anything but an HTML file under a ``ds=`` directory of ``_reports``, and on a local lake
        anything whose real path (symlinks followed) is outside the real lake root.
        """
        import pyarrow.fs as pafs

        parts = self._report_parts(relative)
        if parts is None:
            return None
        path = self.location.fs_path(self.location.join(*parts))
        if self.location.is_local:
            root = self.location.local_path.resolve()
            try:
                real = Path(path).resolve(strict=True)
            except (OSError, RuntimeError):
                return None
            if not real.is_relative_to(root) or not real.is_file():
                return None
            path = str(real)
        try:
            info = self.location.filesystem().get_file_info(path)
        except OSError:
            return None
        if info.type != pafs.FileType.File:
            return None
        return LakeFile(relative="/".join(parts), path=path, size=int(info.size or 0))

    def read_chunks(self, file: LakeFile) -> Iterator[bytes]:
        """The bytes of ``file``, in chunks."""
        with self.location.filesystem().open_input_stream(file.path) as stream:
            while chunk := stream.read(CHUNK):
                yield chunk
