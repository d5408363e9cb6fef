"""Cluster handles and the processes behind locally started clusters.

A :class:`ClusterHandle` is the small, JSON-serialisable description of a cluster that the
start task passes downstream through XCom: where it is, and what (if anything) the platform
started and must therefore stop. Nothing here is a cluster manager: local clusters are the
engines' own launchers (``dask scheduler`` / ``dask worker``, Spark Connect's server), started by
their one owner (:mod:`include.etl.clusters.runtime`, or a one-off run's process).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class ClusterHandle:
    backend: str
    address: str
    owned: bool  # True when the platform started it (and so must stop it)
    dashboard_url: str | None = None
    pids: list[int] = field(default_factory=list)  # process-group leaders started for this cluster
    workdir: str | None = None
    conn_id: str | None = None  # the connection attached to, when not owned
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | ClusterHandle) -> ClusterHandle:
        if isinstance(data, ClusterHandle):
            return data
        if not isinstance(data, dict) or "backend" not in data or "address" not in data:
            raise ValueError(f"not a cluster handle: {data!r} (is the start-cluster task upstream of this task?)")
        return cls(**data)


PR_SET_PDEATHSIG = 1
try:
    _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded now: never between fork and exec
except OSError:
    _LIBC = None


def die_with_parent() -> None:
    """``preexec_fn`` of an engine process: SIGTERM when the thread that started it ends (Linux prctl)."""
    try:
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except AttributeError:
        pass


class ClusterStartError(RuntimeError):
    """A cluster could not be started or reached; the message says which and why."""


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a cluster process's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _process(pid: int):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def is_alive(pid: int, marker: str = "") -> bool:
    """True if ``pid`` runs and (when given) its command line contains ``marker`` (guards pid reuse)."""
    import psutil

    _reap(pid)
    proc = _process(pid)
    try:
        if proc is None or proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return marker in " ".join(proc.cmdline()) if marker else True
    except psutil.AccessDenied:
        return True
    except psutil.Error:
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def group_members(pgids: set[int]) -> list[int]:
    """Live processes (not zombies) whose process group is one of ``pgids``."""
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) in pgids:
                members.append(proc.pid)
        except ProcessLookupError:
            continue
    return members


def kill_groups(pids: list[int], marker: str, grace: float = 10.0) -> list[int]:
    """SIGTERM each process group led by ``pids`` (if still ours), then SIGKILL after ``grace`` s.

    Waits until no process of those groups is left (a leader can exit before its children).
    Returns the pids that were still alive and got signalled.
    """
    alive = [p for p in pids if is_alive(p, marker) and _is_group_leader(p)]
    groups = set(alive)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in groups:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (any(is_alive(p) for p in alive) or group_members(groups)):
            time.sleep(0.1)
        if not any(is_alive(p) for p in alive) and not group_members(groups):
            break
        log.warning("processes of groups %s did not stop on SIGTERM within %.0f s; sending SIGKILL", sorted(groups), grace)
    # Leaders that already exited (a polite shutdown) can leave children of their group
    # behind for a moment: wait for those that are ours, then kill what remains.
    leftovers = set(pids) - groups
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and [m for m in group_members(leftovers) if is_alive(m, marker)]:
        time.sleep(0.1)
    for member in [m for m in group_members(leftovers) if is_alive(m, marker)]:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in alive:
        _reap(pid)
    return alive


