"""Lake layout and atomic publishing of partitions.

Every table is a directory of Parquet files at ``{lake}/{pipeline}/{table}/ds={ds}/``; rejected
input rows go to ``{lake}/{pipeline}/_rejects/{table}/ds={ds}/`` (the domain of a :class:`Lake`
is its pipeline's name). A job never writes into the
published path: it writes into a staging directory beside it (same filesystem) and
:func:`publish` swaps the staging directory in, so readers see either the old partition or
the new one, never a half-written one, and a rerun for the same ``ds`` replaces its partition.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
_RENAME_EXCHANGE = 2  # linux/fs.h


def check_ds(ds: str) -> str:
    """Validate a logical date string (``YYYY-MM-DD``) used as a partition key."""
    try:
        dt.date.fromisoformat(ds)
    except (TypeError, ValueError):
        raise ValueError(f"ds={ds!r} is not a date of the form YYYY-MM-DD") from None
    return ds


@dataclass(frozen=True)
class Lake:
    """The lake of one pipeline: ``root`` is ``ETL_LAKE_ROOT``, ``domain`` the pipeline's name."""

    root: Path
    domain: str

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str) or not self.domain.isidentifier():
            raise ValueError(f"lake domain {self.domain!r} must be a pipeline name (an identifier)")
        object.__setattr__(self, "root", Path(self.root))

    def partition(self, table: str, ds: str) -> Path:
        return self.root / self.domain / table / f"ds={check_ds(ds)}"

    def rejects(self, table: str, ds: str) -> Path:
        return self.partition(f"_rejects/{table}", ds)

    def staging(self, target: Path) -> Path:
        """A fresh, unique staging directory next to ``target`` (same filesystem, so renames are atomic)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.parent / f"{STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:12]}"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories with renameat2(RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def publish(staging: Path, target: Path) -> Path:
    """Make ``staging`` the content of ``target`` atomically, replacing any previous content.

    On Linux the two directories are exchanged in one system call; elsewhere the old partition
    is renamed aside first, which leaves an instant where the partition is absent (never partial).
    """
    staging, target = Path(staging), Path(target)
    if not staging.is_dir():
        raise FileNotFoundError(f"cannot publish {target}: staging directory {staging} does not exist")
    if not target.exists():
        try:
            staging.rename(target)
            return _clean_stale(target)
        except OSError:
            if not target.exists():
                raise
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the previous partition
        return _clean_stale(target)
    aside = target.parent / f"{STAGING_PREFIX}old-{target.name}-{uuid.uuid4().hex[:12]}"
    target.rename(aside)
    staging.rename(target)
    shutil.rmtree(aside, ignore_errors=True)
    return _clean_stale(target)


def _clean_stale(target: Path) -> Path:
    """Remove staging directories of ``target`` left by earlier tries that were killed mid-write.

    Only one task writes a given partition at a time (tasks are keyed by table and ``ds``), so
    once a try has published, every other staging directory of that partition is garbage.
    """
    for pattern in (f"{STAGING_PREFIX}{target.name}-*", f"{STAGING_PREFIX}old-{target.name}-*"):
        for stale in target.parent.glob(pattern):
            log.info("removing %s, left by an earlier try of %s that did not finish", stale, target)
            shutil.rmtree(stale, ignore_errors=True)
    return target


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def row_count(path: Path) -> int:
    """Rows of a published Parquet partition, from the files' footers (no data is read)."""
    import pyarrow.dataset as pads

    return int(pads.dataset(str(path), format="parquet", partitioning=None).count_rows())
