"""The real `make run` entry point (`bin/run`) on a fresh AIRFLOW_HOME and a free port.

One start of `bin/run` (Airflow's components and the runtime's two engines) serves both checks:

* while a Spark run of the fixture DAG `long_job` keeps the runtime's Spark engine busy, every
  listening TCP socket of every process of bin/run's tree (supervisor, api-server, scheduler,
  dag-processor, triggerer, LocalExecutor workers, task processes, the engines' owners, the Dask
  scheduler and workers, the Spark Connect JVM and its Python workers) is bound to loopback;
* then SIGINT (what Ctrl-C sends) to bin/run: within the limit no process of the tree, no task
  process and no engine process is left; both engines' owners said they stopped them and removed
  their handle files (a run would otherwise attach to an engine that is gone).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT
from tests.e2e.airflow_env import project_env
from tests.e2e.stack import Api, Stack, free_port, wait
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow

STOP_WITHIN = 30  # seconds from SIGINT to nothing left


def _ti(home: Path, dag_id: str, run_id: str, task_id: str) -> tuple | None:
    try:
        with sqlite3.connect(home / "airflow.db", timeout=30) as db:
            return db.execute("select state, pid from task_instance where dag_id=? and run_id=? and task_id=?",
                              (dag_id, run_id, task_id)).fetchone()
    except sqlite3.OperationalError:
        return None


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _listening(pids) -> list[tuple[int, str, str, int]]:
    """(pid, name, ip, port) of every listening TCP socket of ``pids``."""
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((pid, proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            pass
    return found


def test_bin_run_listens_on_loopback_only_and_ctrl_c_stops_everything(tmp_path):
    home = tmp_path / "airflow"  # fresh: bin/run initialises it (secrets, migrated DB)
    port = free_port()
    env = project_env(
        home,
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "tests" / "fixtures" / "dags"),
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",  # only the run this test triggers
    )
    stack = Stack(tmp_path)
    run = stack.start("run", [str(ROOT / "bin" / "run")], env)
    api = Api(port, home)
    try:
        wait("bin/run's API and the long_job DAG", lambda: api("GET", "dags/long_job")["dag_id"], 300, stack, interval=2)
        assert api("PATCH", "dags/long_job", {"is_paused": False})["is_paused"] is False
        dag_run = api("POST", "dags/long_job/dagRuns", {"logical_date": "2024-07-01T00:00:00Z", "conf": {"backend": "spark"}})
        run_id = dag_run["dag_run_id"]
        # make run owns one engine per backend; runs attach to it (docs/runtime.md)
        workdir = home / "runtime" / "spark"

        def job_on_cluster():
            ti = _ti(home, "long_job", run_id, "long_job")
            assert ti is None or ti[0] not in ("failed", "success", "upstream_failed"), (ti, stack.log("run"))
            cluster = processes_with_env(str(workdir))
            # the JVM and the job's Python worker(s) (pyspark.daemon)
            workers = [p for p in cluster if "pyspark" in " ".join(_cmdline(p))]
            return ti and ti[0] == "running" and ti[1] and len(cluster) >= 2 and workers and (ti[1], cluster)

        task_pid, cluster = wait("the Spark job of long_job to run on its cluster", job_on_cluster, 300, stack)
        time.sleep(2)

        # (a) every listening socket of the platform's processes and its cluster's is on loopback
        tree = {p.pid for p in _tree(run.pid)}
        cluster = set(processes_with_env(str(home)))
        assert task_pid in tree, (task_pid, sorted(tree))
        sockets = _listening(tree | cluster)
        assert any(s[3] == port for s in sockets), f"the api-server's socket was not seen: {sockets}"
        assert any(s[0] in cluster for s in sockets), f"no socket of the engines was seen: {sockets}"
        assert cluster <= tree, f"engine processes outside bin/run's tree: {sorted(cluster - tree)}"
        exposed = [s for s in sockets if not _loopback(s[2])]
        assert not exposed, f"listening on a non-loopback address: {exposed}"

        # (b) Ctrl-C: nothing of the platform, its tasks or its cluster is left
        everything = tree | cluster | {p.pid for p in _tree(run.pid)} | set(processes_with_env(str(home)))
        t0 = time.monotonic()
        os.kill(run.pid, signal.SIGINT)
        run.wait(STOP_WITHIN + 10)
        while time.monotonic() - t0 < STOP_WITHIN and (_alive(everything) or processes_with_env(str(home))):
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        left = sorted(set(_alive(everything)) | set(processes_with_env(str(home))))
        assert not left, f"still running {elapsed:.0f} s after SIGINT: {[(p, _cmdline(p)) for p in left]}\n{stack.log('run')}"
        assert elapsed < STOP_WITHIN, elapsed
        assert run.returncode == 0, stack.log("run")
        assert "platform stopped" in stack.log("run", 20000), stack.log("run")
        for backend in ("dask", "spark"):
            assert f"stopped {backend}" in stack.log("run", 10**6), stack.log("run")
            assert not (home / "runtime" / f"{backend}.json").exists(), f"the {backend} engine's handle file outlived it"
        summary = [line for line in stack.log("run", 200000).splitlines() if line.startswith("run ")]
        print(f"bin/run tree {len(tree)} processes, cluster {len(cluster)}, sockets {sockets}; "
              f"all stopped {elapsed:.1f} s after SIGINT", *summary, sep="\n")
    finally:
        stack.stop_all()
        for pid in processes_with_env(str(home)):  # never leave a JVM behind, whatever failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # a JVM's 127.0.0.1 socket shows as ::ffff:127.0.0.1
    return (mapped or addr).is_loopback


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []
