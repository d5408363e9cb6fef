"""Test helpers to read what the platform published in a local lake (Delta tables, :mod:`include.etl.lake`).

Tests name a published partition by its place in the layout, ``{lake}/{pipeline}/{table}/ds={ds}``
(:func:`part`), and read it through the table's latest Delta version (:func:`read_partition`):
the directory itself also holds the files of older versions and of staged writes, which a
reader must never see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def part(lake_root: str | Path, pipeline: str, table: str, ds: str) -> Path:
    """Where ``table``'s ``ds`` partition lives (``table`` may be ``_rejects/<name>``)."""
    return Path(lake_root) / pipeline / table / f"ds={ds}"


def rejects(lake_root: str | Path, pipeline: str, table: str, ds: str) -> Path:
    return part(lake_root, pipeline, f"_rejects/{table}", ds)


def _split(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    if not path.name.startswith("ds="):
        raise ValueError(f"{path} is not a partition path ({{lake}}/{{pipeline}}/{{table}}/ds=YYYY-MM-DD)")
    return path.parent, path.name[len("ds="):]


def lake_of(path: str | Path) -> tuple[Any, str, str]:
    """``(Lake, table, ds)`` of a partition path."""
    from include.etl.lake import Lake

    table_dir, ds = _split(path)
    if table_dir.parent.name == "_rejects":
        return Lake(table_dir.parent.parent.parent, table_dir.parent.parent.name), f"_rejects/{table_dir.name}", ds
    return Lake(table_dir.parent.parent, table_dir.parent.name), table_dir.name, ds


def published(path: str | Path) -> bool:
    """True once a commit published this partition (an empty day included)."""
    lake, table, ds = lake_of(path)
    return lake.has_partition(table, ds)


def read_partition(path: str | Path, columns: list[str] | None = None, version: int | None = None) -> Any:
    """The published partition at ``path`` as a pyarrow table (without the ``ds`` column)."""
    lake, table, ds = lake_of(path)
    if not lake.has_partition(table, ds):
        raise FileNotFoundError(f"{path}: nothing published for this partition")
    return lake.read_arrow(table, ds, version=version, columns=columns)


def stage_files(lake: Any, table: str, ds: str, *tables: Any) -> str:
    """Staged Parquet files of ``table``'s ``ds`` partition (one file per pyarrow table), not committed:
    what a job writes before its commit, and what a failed run leaves behind."""
    import pyarrow.parquet as pq

    staged = lake.stage(table, ds)
    fs, path = lake.root.filesystem(), lake.engine_path(staged)
    fs.create_dir(path)
    for i, t in enumerate(tables):
        pq.write_table(t, f"{path}/part-{i}.parquet", filesystem=fs)
    return staged
