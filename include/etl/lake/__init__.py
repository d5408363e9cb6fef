"""The lake: one Delta table per table of a pipeline, partitioned by ``ds``, on local disk or S3.

Layout under ``ETL_LAKE_URI`` (:mod:`.location`)::

    {lake}/{pipeline}/{table}/            a Delta table (``_delta_log/``), partition column ``ds``
    {lake}/{pipeline}/_rejects/{table}/   the rejected input rows of ``table``, a Delta table too
    {lake}/{pipeline}/_reports/{table}/ds={ds}/   files a job renders beside its table (HTML reports)

Write, audit, publish: an engine writes a table's new partition as Parquet files into a fresh
directory inside the table (:meth:`Lake.stage`); nothing references those files yet, so no
reader sees them. Once the job's checks have passed, :meth:`Lake.commit` makes them the
partition in one Delta commit (``overwrite`` of ``ds = …``), which records the DAG, run, task
and try. A failed or killed job commits nothing: the table keeps its version and rows, and the
files it staged are garbage that ``lake_maintenance``'s vacuum removes. A retry or a re-run
replaces the partition (one new version), never appends to it. Nothing heavy is imported at
module level (DAG files import this module through the pipelines).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from include.etl.lake.location import LakeConfigError, LakeLocation

log = logging.getLogger(__name__)

REJECTS = "_rejects"
REPORTS = "_reports"
RUNS = "_runs"  # {lake}/{pipeline}/_runs/{run}/: what a run staged, until its publish step commits it
STAGE_PREFIX = "w-"  # staged directories: not "_" or "." (delta-rs's vacuum skips hidden paths)

# The Arrow types a published table's columns may have, on every engine (docs/lake.md, "Types"),
# besides decimal128(p, s) and lists and structs of them (:func:`is_lake_type`).
TYPES = frozenset({"string", "int64", "double", "bool", "date32[day]", "timestamp[us]", "timestamp[us, tz=UTC]"})

__all__ = ["TYPES", "Lake", "LakeConfigError", "LakeLocation", "check_ds", "is_lake_type", "lake_schema"]


def is_lake_type(arrow_type: Any) -> bool:
    """True for a type of :data:`TYPES`, a ``decimal128``, or a list or struct of such types."""
    import pyarrow as pa

    if pa.types.is_decimal128(arrow_type):
        return True
    if pa.types.is_list(arrow_type):
        return is_lake_type(arrow_type.value_type)
    if pa.types.is_struct(arrow_type):
        return all(is_lake_type(f.type) for f in arrow_type)
    return str(arrow_type) in TYPES


def lake_schema(schema: Any) -> Any:
    """``schema`` as the lake publishes it: every column nullable, no metadata.

    The engines disagree on nullability (Spark marks counts and sums of non-null columns
    ``not null``, Dask marks nothing), so the same job would give a table two schemas; every
    table's schema is taken through here when it is staged and committed.
    """
    import pyarrow as pa

    return pa.schema([f.with_nullable(True) for f in schema])


def check_ds(ds: str) -> str:
    """Validate a logical date string (``YYYY-MM-DD``) used as a partition key."""
    try:
        dt.date.fromisoformat(ds)
    except (TypeError, ValueError):
        raise ValueError(f"ds={ds!r} is not a date of the form YYYY-MM-DD") from None
    return ds


@dataclass(frozen=True)
class Lake:
    """The lake of one pipeline: ``root`` is ``ETL_LAKE_URI`` (or a path), ``domain`` the pipeline's name.

    ``run`` is what every commit records about who wrote it (``dag_id``, ``run_id``, ``task_id``,
    ``try_number``), empty outside Airflow. With ``run["publish"] == "run"`` (a DAG with a publish
    step, :meth:`publish_run`), :meth:`commit` only records the staged partition under the run,
    and this run's reads (:meth:`files`, :meth:`row_count`, :meth:`read_arrow`, :meth:`schema`)
    see what the run staged before what is published.
    """

    root: Any
    domain: str
    run: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str) or not self.domain.isidentifier():
            raise ValueError(f"lake domain {self.domain!r} must be a pipeline name (an identifier)")
        object.__setattr__(self, "root", LakeLocation.resolve(self.root))

    @property
    def location(self) -> LakeLocation:
        return self.root

    # -- names -------------------------------------------------------------------------------
    def table_uri(self, table: str) -> str:
        """``{lake}/{pipeline}/{table}``; ``table`` may be ``_rejects/<name>``."""
        return self.root.join(self.domain, table)

    @staticmethod
    def rejects(table: str) -> str:
        """The name of ``table``'s rejects table (``_rejects/<table>``)."""
        return f"{REJECTS}/{table}"

    def report_uri(self, table: str, ds: str, name: str) -> str:
        return self.root.join(self.domain, REPORTS, table, f"ds={check_ds(ds)}", name)

    def write_report(self, table: str, ds: str, name: str, text: str) -> str:
        """Write a rendered file (an HTML report) beside ``table``'s ``ds`` partition; returns its URI.

        Written to a temporary name first then moved (local disk), or in one PUT (S3): a reader
        sees the previous report or this one, never a part.
        """
        fs, uri = self.root.filesystem(), self.report_uri(table, ds, name)
        path = self.root.fs_path(uri)
        fs.create_dir(path.rsplit("/", 1)[0])
        tmp = path if not self.root.is_local else f"{path}.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(tmp) as out:
            out.write(text.encode("utf-8"))
        if tmp != path:
            fs.move(tmp, path)
        return uri

    # -- write, audit, publish ---------------------------------------------------------------
    def stage(self, table: str, ds: str) -> str:
        """A new directory inside ``table`` for the Parquet files of its next ``ds`` partition (a URI)."""
        return self.root.join(self.domain, table, f"ds={check_ds(ds)}", f"{STAGE_PREFIX}{uuid.uuid4().hex}")

    def engine_path(self, uri: str) -> str:
        """``uri`` as the engines take it: a local path, or ``bucket/key`` with :meth:`filesystem`."""
        return self.root.fs_path(uri)

    def filesystem(self) -> Any:
        """None for a local lake (engines use their own), else a pyarrow S3 filesystem."""
        return None if self.root.is_local else self.root.filesystem()

    def discard(self, staged: str) -> None:
        """Delete a staged directory that will not be committed (best effort: vacuum removes what stays)."""
        try:
            self.root.filesystem().delete_dir(self.root.fs_path(staged))
        except (FileNotFoundError, OSError) as exc:
            log.debug("could not remove %s: %s", staged, exc)

    @property
    def deferred(self) -> bool:
        """True when this run's commits wait for its publish step."""
        return self.run.get("publish") == "run" and bool(self.run.get("run_id"))

    @property
    def run_key(self) -> str:
        """The run's directory name under ``_runs``: ``<dag_id>__<run_id>`` with unsafe characters as ``_``."""
        import re

        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.run.get('dag_id', '')}__{self.run.get('run_id', '')}")

    def commit(self, table: str, ds: str, staged: str | None, *, schema: Any = None,
               metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Make the Parquet files under ``staged`` the ``ds`` partition of ``table``, in one Delta commit.

        ``staged=None`` (or a directory without files) publishes an empty partition: one Parquet
        file of zero rows, so the ``ds`` stays visible as published ("no data that day", not "not
        processed yet") to every reader, whatever happens to the commit log later. ``schema``
        (pyarrow, without ``ds``) gives its columns when the table does not exist yet.
        Returns ``{"table", "uri", "version", "rows", "files"}``.
        """
        check_ds(ds)
        files = self._staged_files(staged) if staged else []
        if not files:  # the table's own columns when it has some: an empty day never changes them
            if schema is None or self.exists(table):
                schema = self.schema(table)  # FileNotFoundError: a new table, and nothing says its columns
            staged = self._stage_empty(table, ds, schema)
            files = self._staged_files(staged)
        info = {**{k: str(v) for k, v in self.run.items() if k != "publish"},
                **{k: str(v) for k, v in (metadata or {}).items()}, "staged": staged}
        if self.deferred:
            self._record_staged(table, ds, staged, files, info)
            rows = sum(n for _, _, n in files)
            log.info("staged %s ds=%s: %s rows in %s file(s), published by the run's publish step",
                     self.table_uri(table), ds, rows, len(files))
            return {"table": table, "uri": self.table_uri(table), "version": None, "rows": rows, "files": len(files),
                    "staged": staged}
        return self._commit_files(table, ds, files, info)

    def _commit_files(self, table: str, ds: str, files: list, info: Mapping[str, str]) -> dict[str, Any]:
        """One Delta commit: ``files`` (relative path, size, rows) become ``table``'s ``ds`` partition."""
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import AddAction

        uri = self.table_uri(table)
        adds = [AddAction(rel, size, {"ds": ds}, int(time.time() * 1000), True, json.dumps({"numRecords": rows}))
                for rel, size, rows in files]
        rows = sum(n for _, _, n in files)
        file_schema = self._file_schema(uri, files[0][0])
        for attempt in range(1, 4):  # another writer's commit in between (the table's creation): read it again
            table_obj = self._open_or_create(uri, file_schema)
            replaced = _row_counts(table_obj).get(ds, 0)
            meta = {"ds": ds, "rows": str(rows), "rows_removed": str(replaced), "files": str(len(adds)), **info}
            try:
                table_obj.create_write_transaction(adds, "overwrite", _with_ds(file_schema), partition_by=["ds"],
                                                   partition_filters=[("ds", "=", ds)],
                                                   commit_properties=CommitProperties(custom_metadata=meta))
                break
            except CommitFailedError as exc:
                if attempt == 3:
                    raise
                log.info("commit to %s ds=%s conflicted with another writer (%s): trying again", uri, ds, exc)
        table_obj.update_incremental()  # to the commit just made (and any later one): no second load of the log
        version = self._landed(table, info["staged"], table_obj) if info.get("staged") else None
        if version is None:
            version = table_obj.version()
        log.info("committed %s ds=%s: %s rows in %s file(s), replacing %s rows (version %s)", uri, ds, rows, len(adds),
                 replaced, version)
        return {"table": table, "uri": uri, "version": version, "rows": rows, "files": len(adds)}

    # -- a run's staged partitions and its publish step ----------------------------------------
    def _runs_path(self) -> str:
        return self.root.fs_path(self.root.join(self.domain, RUNS, self.run_key))

    def _entry_path(self, table: str, ds: str) -> str:
        return f"{self._runs_path()}/{table.replace('/', '~')}@{ds}.json"

    def _record_staged(self, table: str, ds: str, staged: str, files: list, info: Mapping[str, str]) -> None:
        entry = {"table": table, "ds": ds, "staged": staged, "files": files, "info": dict(info), "time": time.time()}
        fs = self.root.filesystem()
        fs.create_dir(self._runs_path())
        path = self._entry_path(table, ds)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp" if self.root.is_local else path
        with fs.open_output_stream(tmp) as out:
            out.write(json.dumps(entry).encode("utf-8"))
        if tmp != path:
            fs.move(tmp, path)

    def _staged_entry(self, table: str, ds: str) -> dict[str, Any] | None:
        """What this run staged for ``table``'s ``ds`` partition and has not published yet, or None."""
        if not self.run.get("run_id"):
            return None
        try:
            with self.root.filesystem().open_input_stream(self._entry_path(table, ds)) as f:
                return json.loads(f.read())
        except (FileNotFoundError, OSError):
            return None

    def staged_entries(self) -> list[dict[str, Any]]:
        """Every partition this run staged and has not published yet, in the order they were staged."""
        import pyarrow.fs as pafs

        fs = self.root.filesystem()
        infos = fs.get_file_info(pafs.FileSelector(self._runs_path(), allow_not_found=True))
        entries = []
        for info in infos:
            if info.type == pafs.FileType.File and info.base_name.endswith(".json"):
                with fs.open_input_stream(info.path) as f:
                    entries.append(json.loads(f.read()))
        return sorted(entries, key=lambda e: e["time"])

    def publish_run(self, publisher: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Commit every partition this run staged, one Delta commit per table, then forget them.

        Each commit replaces its ``ds`` partition and records who staged it and who published
        it. A retry converges: a partition whose commit already landed (same staged files) is
        not committed again. Returns one summary per partition, in staging order.
        """
        done = []
        for entry in self.staged_entries():
            table, ds = entry["table"], entry["ds"]
            landed = self._landed(table, entry["staged"])
            if landed is not None:
                log.info("%s ds=%s was published by an earlier try of this step (version %s)", table, ds, landed)
                done.append({"table": table, "ds": ds, "version": landed, "rows": sum(f[2] for f in entry["files"])})
                continue
            info = {**entry["info"], **{f"published_{k}": str(v) for k, v in (publisher or {}).items()}}
            result = self._commit_files(table, ds, [tuple(f) for f in entry["files"]], info)
            done.append({"table": table, "ds": ds, "version": result["version"], "rows": result["rows"]})
        try:
            self.root.filesystem().delete_dir(self._runs_path())
        except (FileNotFoundError, OSError):
            pass
        return done

    def _landed(self, table: str, staged: str, table_obj: Any = None) -> int | None:
        """The version of the commit of ``staged`` into ``table`` among its latest commits, or None.
        ``table_obj``: the table's ``DeltaTable``, already at its latest version."""
        try:
            history = (table_obj or self.delta(table)).history(limit=50)
        except FileNotFoundError:
            return None
        return next((h.get("version") for h in history if h.get("staged") == staged), None)

    # -- read --------------------------------------------------------------------------------
    def delta(self, table: str, version: int | None = None) -> Any:
        """The ``deltalake.DeltaTable`` of ``table`` (optionally as of ``version``); FileNotFoundError if absent."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.table_uri(table), version=version, storage_options=self._options())
        except TableNotFoundError:
            raise FileNotFoundError(f"no Delta table at {self.table_uri(table)}") from None

    def exists(self, table: str) -> bool:
        try:
            self.delta(table)
        except FileNotFoundError:
            return False
        return True

    def has_partition(self, table: str, ds: str) -> bool:
        """True once a commit has published ``ds`` (an empty day included), false before."""
        try:
            return ds in self.published_days(table)
        except FileNotFoundError:
            return False

    def published_days(self, table: str) -> set[str]:
        """Every ``ds`` published in ``table``'s latest version, empty days included; none if no table."""
        try:
            return set(self.row_counts(table))
        except FileNotFoundError:
            return set()

    def files(self, table: str, ds: str | list[str], version: int | None = None) -> list[str]:
        """The data files of ``table``'s ``ds`` partition(s) as of ``version`` (default: latest): paths on a local
        lake, ``s3://`` URIs on S3 (:meth:`engine_path` turns either into what the engines take)."""
        days = [check_ds(d) for d in ([ds] if isinstance(ds, str) else ds)]
        if not days:
            return []
        entry = self._staged_entry(table, ds) if isinstance(ds, str) and version is None else None
        if entry is not None:
            return [f"{self.table_uri(table)}/{rel}" for rel, _, _ in entry["files"]]
        return [str(u) for u in self.delta(table, version).file_uris(file_pruning_predicate=[("ds", "in", days)])]

    def row_count(self, table: str, ds: str, version: int | None = None) -> int:
        """Rows of a published partition, from the commit log (no data is read); 0 for none."""
        entry = self._staged_entry(table, ds) if version is None else None
        if entry is not None:
            return sum(n for _, _, n in entry["files"])
        try:
            return self.row_counts(table, version).get(ds, 0)
        except FileNotFoundError:
            return 0

    def row_counts(self, table: str, version: int | None = None) -> dict[str, int]:
        """``{ds: rows}`` of every published partition of ``table`` (from the log, one read)."""
        return _row_counts(self.delta(table, version))

    def schema(self, table: str, ds: str | None = None) -> Any:
        """The table's pyarrow schema without ``ds`` (of what this run staged for ``ds``, if it did)."""
        import pyarrow as pa

        entry = self._staged_entry(table, ds) if ds else None
        if entry is not None:
            return self._file_schema(self.table_uri(table), entry["files"][0][0])

        schema = pa.schema(self.delta(table).schema().to_arrow())
        return schema.remove(schema.get_field_index("ds"))

    def read_arrow(self, table: str, ds: str, *, version: int | None = None, columns: list[str] | None = None) -> Any:
        """``table``'s ``ds`` partition as a pyarrow table, in this process (small tables, tests, the Lake view).

        The files the Delta log lists, read with pyarrow on the lake's own filesystem, as the table's
        schema: not through delta-rs's ``to_pyarrow_dataset``, whose filesystem's threads made a
        process that had read through it abort at its exit now and then ("terminate called without an
        active exception", SIGABRT after the work was done: delta-io/delta-rs#2184, pola-rs/polars#24169).
        """
        import pyarrow as pa
        import pyarrow.dataset as pads

        entry = self._staged_entry(table, ds) if version is None else None
        if entry is not None:
            files = [self.root.fs_path(f"{self.table_uri(table)}/{rel}") for rel, _, _ in entry["files"]]
            staged = pads.dataset(files, format="parquet", filesystem=self.root.filesystem())
            return staged.to_table(columns=columns)
        delta = self.delta(table, version)
        schema = pa.schema(delta.schema().to_arrow())
        schema = schema.remove(schema.get_field_index("ds"))
        files = [self.engine_path(str(u)) for u in delta.file_uris(file_pruning_predicate=[("ds", "=", check_ds(ds))])]
        try:
            dataset = pads.dataset(files, schema=schema, format="parquet", partitioning=None,
                                   filesystem=self.root.filesystem())
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{table} ds={ds}" + (f" version {version}" if version is not None else "")
                                    + f": a data file its log lists does not exist (removed by a vacuum?): {exc}") from None
        return dataset.to_table(columns=columns or schema.names)

    def history(self, table: str) -> list[dict[str, Any]]:
        """The table's commits, newest first: version, time, ds, rows added and removed, who wrote it, and
        an ingest's counts (rows in, accepted, rejected, exact copies dropped) when it recorded them."""
        out = []
        for entry in self.delta(table).history():
            out.append({
                "version": entry.get("version"),
                "time": dt.datetime.fromtimestamp(entry.get("timestamp", 0) / 1000, dt.UTC).isoformat(timespec="seconds"),
                "operation": entry.get("operation"),
                **{k: entry[k] for k in ("ds", "rows", "rows_removed", "dag_id", "run_id", "task_id", "try_number",
                                         "rows_in", "rows_accepted", "rows_rejected", "duplicates_dropped")
                   if k in entry},
            })
        return out

    # -- internals -----------------------------------------------------------------------------
    def _options(self) -> dict[str, str]:
        return dict(self.root.storage_options)

    def _staged_files(self, staged: str) -> list[tuple[str, int, int]]:
        """``(path relative to the table, size, rows)`` of every Parquet file under ``staged``."""
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        fs = self.root.filesystem()
        base = self.root.fs_path(staged)
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except FileNotFoundError:
            infos = []
        table_base = self.root.fs_path(self.table_uri(staged_table(self, staged)))
        out = []
        for info in sorted(infos, key=lambda i: i.path):
            name = info.base_name
            if info.type != pafs.FileType.File or not name.endswith(".parquet") or name[0] in "._":
                continue
            rows = pq.read_metadata(info.path, filesystem=fs).num_rows
            out.append((info.path[len(table_base) + 1:], info.size, rows))
        return out

    def _stage_empty(self, table: str, ds: str, schema: Any) -> str:
        """A staged directory holding one Parquet file of zero rows with ``schema``'s columns."""
        import pyarrow.parquet as pq

        staged = self.stage(table, ds)
        fs = self.root.filesystem()
        fs.create_dir(self.root.fs_path(staged))
        pq.write_table(schema.empty_table(), f"{self.root.fs_path(staged)}/part-0.parquet", filesystem=fs)
        return staged

    def _file_schema(self, uri: str, rel: str) -> Any:
        import pyarrow.parquet as pq

        fs = self.root.filesystem()
        return lake_schema(pq.read_schema(self.root.fs_path(f"{uri}/{rel}"), filesystem=fs))

    def _open_or_create(self, uri: str, schema: Any) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        try:
            return DeltaTable(uri, storage_options=self._options())
        except TableNotFoundError:
            if schema is None:
                raise ValueError(f"{uri} does not exist yet and nothing says its columns: "
                                 "stage at least one file or give its schema") from None
        try:
            DeltaTable.create(uri, _with_ds(schema), partition_by=["ds"], mode="ignore",
                              storage_options=self._options())
        except DeltaError as exc:  # another writer created it at the same moment
            log.info("creating %s: %s (created by another writer)", uri, exc)
        return DeltaTable(uri, storage_options=self._options())



def _row_counts(table_obj: Any) -> dict[str, int]:
    import pyarrow as pa

    actions = pa.RecordBatchReader.from_stream(table_obj.get_add_actions(flatten=True)).read_all()
    counts: dict[str, int] = {}
    if actions.num_rows and "partition.ds" in actions.column_names:
        for d, n in zip(actions.column("partition.ds").to_pylist(), actions.column("num_records").to_pylist(),
                        strict=True):
            counts[d] = counts.get(d, 0) + int(n or 0)
    return counts


def staged_table(lake: Lake, staged: str) -> str:
    """The table a staged directory URI belongs to (``…/{table}/ds=…/w-…``)."""
    prefix = lake.root.join(lake.domain) + "/"
    if not staged.startswith(prefix) or "/ds=" not in staged:
        raise ValueError(f"{staged} is not a staged directory of the lake {prefix}")
    return staged[len(prefix):].split("/ds=", 1)[0]


def _with_ds(schema: Any) -> Any:
    import pyarrow as pa

    schema = pa.schema(schema)
    if "ds" in schema.names:
        return schema
    return schema.append(pa.field("ds", pa.string()))


def list_tables(location: Any) -> list[tuple[str, str]]:
    """Every Delta table of the lake as ``(pipeline, table)``, rejects tables as ``_rejects/<name>``, sorted."""
    import pyarrow.fs as pafs

    location = LakeLocation.resolve(location)
    fs, base = location.filesystem(), location.fs_path(location.uri)

    def dirs(path: str) -> list[str]:
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except (FileNotFoundError, OSError):
            return []
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def is_table(path: str) -> bool:
        return fs.get_file_info(f"{path}/_delta_log").type == pafs.FileType.Directory

    found = []
    for pipeline in dirs(base):
        if not pipeline.isidentifier() or pipeline.startswith("_"):
            continue
        for name in dirs(f"{base}/{pipeline}"):
            if name == REJECTS:
                found += [(pipeline, f"{REJECTS}/{t}") for t in dirs(f"{base}/{pipeline}/{REJECTS}")
                          if is_table(f"{base}/{pipeline}/{REJECTS}/{t}")]
            elif not name.startswith(("_", ".")) and is_table(f"{base}/{pipeline}/{name}"):
                found.append((pipeline, name))
    return found
