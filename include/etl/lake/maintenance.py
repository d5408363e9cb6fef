"""Lake maintenance: compact, checkpoint and vacuum every Delta table of the lake.

For each table (rejects tables included) of a pipeline, :func:`maintain_table`:

1. **compacts** the partitions that hold more than one file (``optimize.compact``: one commit for
   the table; the rows, their order and every partition's row count stay the same);
2. writes a **checkpoint** of the latest version, so readers open the table from one Parquet file
   instead of replaying every commit;
3. **vacuums** (``full``) the files that no version inside the retention references: the files of
   versions replaced longer ago than ``ETL_LAKE_RETENTION_DAYS``, and files no commit ever
   referenced (the ``ds=…/w-…/`` directories a failed run staged) once they are older than the
   retention. delta-rs's vacuum leaves ``_delta_log`` and every ``_``/``.`` name alone; on a local
   lake the staged directories it emptied are removed too.

:func:`maintain_pipeline` does that for every table of a pipeline, then removes the records of
runs that staged partitions and never published them (``{pipeline}/_runs/<run>/``), once older
than the retention. A table that fails does not stop the others; the pipeline's step then fails
naming it (its retry starts over: every step is idempotent). Time travel keeps working for the
versions inside the retention; older versions' files are gone.

Plain functions over a :class:`LakeLocation`; ``dags/lake_maintenance.py`` only wires them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from include.etl.lake import RUNS, STAGE_PREFIX, Lake, LakeLocation, list_tables

log = logging.getLogger(__name__)


class MaintenanceError(RuntimeError):
    """One or more tables of a pipeline could not be maintained (the others were)."""


@dataclass
class TableMaintenance:
    """What :func:`maintain_table` did to one table."""

    pipeline: str
    table: str
    version_before: int
    version_after: int
    files_before: int  # data files of the latest version
    files_after: int
    files_compacted: int = 0  # files rewritten into fewer
    files_written: int = 0  # the files they became
    partitions_compacted: int = 0
    checkpoint: int | None = None  # the version checkpointed
    files_vacuumed: int = 0  # Parquet files deleted (of replaced versions, or staged and never committed)
    other_vacuumed: int = 0  # other objects vacuum deleted (on S3: pyarrow's empty "directory" markers)
    dirs_removed: int = 0  # emptied staged directories (local lakes)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PipelineMaintenance:
    pipeline: str
    tables: list[TableMaintenance] = field(default_factory=list)
    stale_runs_removed: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # table -> error

    def summary(self) -> dict[str, Any]:
        """A small JSON-able summary (the task's return value)."""
        return {
            "pipeline": self.pipeline,
            "tables": len(self.tables),
            "files_compacted": sum(t.files_compacted for t in self.tables),
            "files_written": sum(t.files_written for t in self.tables),
            "files_vacuumed": sum(t.files_vacuumed for t in self.tables),
            "stale_runs_removed": self.stale_runs_removed,
            "errors": dict(self.errors),
            "per_table": {t.table: {k: v for k, v in t.to_dict().items() if k not in ("pipeline", "table")}
                          for t in self.tables},
        }


def retention_hours(days: float) -> int:
    """``days`` of retention as whole hours for delta-rs's vacuum (rounded up: never keeps less)."""
    if days < 0:
        raise ValueError(f"a retention of {days} days is negative")
    return math.ceil(days * 24)


def pipelines(location: Any) -> list[str]:
    """The pipelines of the lake that have at least one Delta table."""
    return sorted({p for p, _ in list_tables(location)})


def _file_count(delta: Any) -> int:
    return len(delta.file_uris())


def _partitions_to_compact(delta: Any) -> int:
    """How many partitions hold more than one file."""
    import pyarrow as pa

    actions = pa.RecordBatchReader.from_stream(delta.get_add_actions(flatten=True)).read_all()
    if actions.num_rows == 0 or "partition.ds" not in actions.column_names:
        return 0
    counts: dict[str, int] = {}
    for ds in actions.column("partition.ds").to_pylist():
        counts[ds] = counts.get(ds, 0) + 1
    return sum(1 for n in counts.values() if n > 1)


def maintain_table(lake: Lake, table: str, *, retention_hours: int, target_size: int | None = None,
                   compact: bool = True, checkpoint: bool = True, vacuum: bool = True) -> TableMaintenance:
    """Compact, checkpoint and vacuum one table of ``lake`` (``table`` may be ``_rejects/<name>``)."""
    started = time.monotonic()
    delta = lake.delta(table)
    result = TableMaintenance(pipeline=lake.domain, table=table, version_before=delta.version(),
                              version_after=delta.version(), files_before=_file_count(delta), files_after=0)
    uri = lake.table_uri(table)
    if compact and _partitions_to_compact(delta):
        metrics = delta.optimize.compact(target_size=target_size)
        result.files_compacted = int(metrics.get("numFilesRemoved", 0))
        result.files_written = int(metrics.get("numFilesAdded", 0))
        result.partitions_compacted = int(metrics.get("partitionsOptimized", 0))
        log.info("%s: compacted %s file(s) into %s in %s partition(s)", uri, result.files_compacted,
                 result.files_written, result.partitions_compacted)
        delta = lake.delta(table)
    if checkpoint:
        delta.create_checkpoint()
        result.checkpoint = delta.version()
        log.info("%s: checkpoint at version %s", uri, result.checkpoint)
    if vacuum:
        removed = delta.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False,
                               full=True)
        result.files_vacuumed = sum(1 for p in removed if p.endswith(".parquet"))
        result.other_vacuumed = len(removed) - result.files_vacuumed
        result.dirs_removed = _remove_emptied_stage_dirs(lake, table, removed)
        log.info("%s: vacuum (retention %s h) removed %s Parquet file(s)%s%s", uri, retention_hours,
                 result.files_vacuumed, f", {result.other_vacuumed} other object(s)" if result.other_vacuumed else "",
                 f" and {result.dirs_removed} emptied staged directories" if result.dirs_removed else "")
        for path in sorted(removed)[:20]:
            log.debug("%s: removed %s", uri, path)
    delta = lake.delta(table)
    result.version_after, result.files_after = delta.version(), _file_count(delta)
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _remove_emptied_stage_dirs(lake: Lake, table: str, removed: list[str]) -> int:
    """On a local lake, the ``ds=…/w-…`` directories (and their subdirectories) vacuum left empty.

    Only directories that held a file vacuum just removed (so older than the retention); only if
    empty (``os.rmdir``): a directory a running job is writing into is never touched. Object
    stores have no directories.
    """
    if not lake.root.is_local:
        return 0
    base = lake.root.fs_path(lake.table_uri(table))
    candidates: set[str] = set()
    for rel in removed:
        parts = rel.split("/")
        stage = next((i for i, p in enumerate(parts) if p.startswith(STAGE_PREFIX)), None)
        if stage is None or stage == len(parts) - 1:
            continue
        for end in range(stage + 1, len(parts)):  # the staged directory and its subdirectories
            candidates.add("/".join(parts[:end]))
    count = 0
    for rel in sorted(candidates, key=lambda r: r.count("/"), reverse=True):  # deepest first
        try:
            os.rmdir(os.path.join(base, rel))
            count += 1
        except OSError:  # not empty, or gone already
            continue
    return count


def remove_stale_runs(location: Any, pipeline: str, *, retention_hours: int) -> int:
    """Remove ``{pipeline}/_runs/<run>/`` records of runs that never published, older than the retention.

    Their staged files are older than the retention too, so vacuum removes them: the record
    could not be published any more.
    """
    import pyarrow.fs as pafs

    location = LakeLocation.resolve(location)
    fs = location.filesystem()
    base = location.fs_path(location.join(pipeline, RUNS))
    try:
        runs = [i for i in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
                if i.type == pafs.FileType.Directory]
    except (FileNotFoundError, OSError):
        return 0
    cutoff = time.time() - retention_hours * 3600
    removed = 0
    for run in runs:
        files = [i for i in fs.get_file_info(pafs.FileSelector(run.path, recursive=True))
                 if i.type == pafs.FileType.File]
        newest = max((i.mtime.timestamp() for i in files if i.mtime is not None), default=None)
        if newest is None and run.mtime is not None:
            newest = run.mtime.timestamp()
        if newest is not None and newest < cutoff:
            fs.delete_dir(run.path)
            removed += 1
            log.info("%s: removed the record of run %s, staged and never published (%s file(s))",
                     location.join(pipeline, RUNS), run.base_name, len(files))
    return removed


def maintain_pipeline(location: Any, pipeline: str, *, retention_hours: int, target_size: int | None = None,
                      raise_on_error: bool = True) -> dict[str, Any]:
    """:func:`maintain_table` for every table of ``pipeline``, then :func:`remove_stale_runs`; a summary.

    Every table is attempted; with ``raise_on_error``, :class:`MaintenanceError` names those that failed.
    """
    location = LakeLocation.resolve(location)
    lake = Lake(location, pipeline)
    done = PipelineMaintenance(pipeline=pipeline)
    tables = [t for p, t in list_tables(location) if p == pipeline]
    log.info("maintaining %s table(s) of %s (retention %s h): %s", len(tables), location.join(pipeline),
             retention_hours, ", ".join(tables) or "none")
    for table in tables:
        try:
            done.tables.append(maintain_table(lake, table, retention_hours=retention_hours, target_size=target_size))
        except Exception as exc:  # noqa: BLE001 - the other tables are still maintained; raised below
            log.exception("%s: maintenance failed", lake.table_uri(table))
            done.errors[table] = f"{type(exc).__name__}: {exc}"
    try:
        done.stale_runs_removed = remove_stale_runs(location, pipeline, retention_hours=retention_hours)
    except OSError as exc:
        log.exception("%s: could not clean the records of unpublished runs", location.join(pipeline, RUNS))
        done.errors[RUNS] = f"{type(exc).__name__}: {exc}"
    summary = done.summary()
    log.info("%s: %s table(s), %s file(s) compacted into %s, %s file(s) vacuumed, %s stale run record(s) removed%s",
             pipeline, summary["tables"], summary["files_compacted"], summary["files_written"],
             summary["files_vacuumed"], summary["stale_runs_removed"],
             f"; FAILED: {', '.join(done.errors)}" if done.errors else "")
    if done.errors and raise_on_error:
        raise MaintenanceError(f"maintenance of {pipeline} failed for " +
                               "; ".join(f"{t}: {e}" for t, e in done.errors.items()))
    return summary
