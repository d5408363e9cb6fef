"""Find (and stop) the processes a test started, through the environment they inherited. psutil only."""

from __future__ import annotations

import os

import psutil


def _matching(prefixes: tuple[str, ...], variables: tuple[str, ...], dirs: bool = True) -> list[psutil.Process]:
    """Processes whose ``variables`` start with one of ``prefixes`` (``dirs``: as a whole path component)."""
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.pid in me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            env = proc.environ()  # readable for this user's processes only
        except psutil.Error:
            continue
        if any(_under(env.get(var, ""), prefixes) if dirs else env.get(var, "").startswith(prefixes)
               for var in variables):
            found.append(proc)
    return found


def _under(value: str, prefixes: tuple[str, ...]) -> bool:
    return any(value == p or value.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)


def processes_with_env(prefix: str, var: str = "ETL_CLUSTER_WORKDIR") -> list[int]:
    """Pids of live (non-zombie) processes whose ``var`` starts with ``prefix``."""
    return [p.pid for p in _matching((prefix,), (var,), dirs=False)]


def kill_started_under(*prefixes: str, grace: float = 10.0) -> list[str]:
    """Stop, by pid, every process whose AIRFLOW_HOME or cluster workdir lies under ``prefixes``
    (SIGTERM, SIGKILL after ``grace`` s). Returns a description of each one found."""
    found = _matching(tuple(prefixes), ("AIRFLOW_HOME", "ETL_CLUSTER_WORKDIR"))
    described = []
    for proc in found:
        try:
            described.append(f"{proc.pid} {' '.join(proc.cmdline()[:4])}")
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(found, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return described


def alive(pid: int) -> bool:
    """``pid`` runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
