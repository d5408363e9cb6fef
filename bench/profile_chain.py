"""CPU seconds per process and per job of the Olympics chain on the runtime's Dask or Spark engine.

    nice -n 19 .venv/bin/python bench/profile_chain.py dask  /tmp/bench-data/rows5000000-seed0 [--reps 1]
    nice -n 19 .venv/bin/python bench/profile_chain.py spark /tmp/bench-data/rows5000000-seed0 [--reps 1]

Starts the backend's engine owner as ``make run`` does (``bench/engines.py``), attaches through the
hook, and runs ``olympics.ingest`` x3, ``olympics.enrich``, ``olympics.aggregate`` through
``hook.run_job`` (as ``bench/run.py``'s dask/spark configs do). Around each job it reads the
user+system CPU seconds of every process of the engine (those whose ``ETL_CLUSTER_WORKDIR`` or
``ETL_RUNTIME_DIR`` lies under the work directory, plus this process and its children), grouped
by role (scheduler, worker, nanny, JVM, Python worker, driver), and the 1-minute load. On Spark it
also reads the stages of the job from the Spark UI's REST API (executor run and CPU time, GC,
shuffle bytes, input/output bytes). Writes ``--json`` if given. Run it under ``py-spy record
--subprocesses`` to see inside the Python processes (``bench/pyspy_breakdown.py``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "bench")]
DS = "2024-07-07"


def role(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline())
        name = proc.name()
    except psutil.Error:
        return "gone"
    if proc.pid == os.getpid():
        return "driver (this process: hook, planner)"
    if "java" in name or "spark-class" in cmd:
        return "JVM (Spark Connect server)"
    if "pyspark.daemon" in cmd or "pyspark/daemon" in cmd or "pyspark.worker" in cmd:
        return "Spark Python workers"
    if name.startswith("dask worker") or "spawn_main" in cmd or "multiprocessing" in cmd:
        return "Dask workers (task threads)"
    if "distributed.cli.dask_worker" in cmd:
        return "Dask nanny"
    if name.startswith("dask scheduler"):
        return "Dask scheduler"
    if "include.etl.clusters.runtime" in cmd:
        return "engine owner (runtime; Dask: scheduler in it)"
    return f"other: {name}"


def procs(work: Path) -> list[psutil.Process]:
    from engines import processes_with_env

    me = psutil.Process()
    found = {p.pid: p for p in processes_with_env(work, ("ETL_CLUSTER_WORKDIR", "ETL_RUNTIME_DIR"))}
    found[me.pid] = me
    for child in me.children(recursive=True):
        found[child.pid] = child
    for p in list(found.values()):
        try:
            for child in p.children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            pass
    return list(found.values())


def cpu(work: Path) -> dict[int, tuple[str, float]]:
    out = {}
    for p in procs(work):
        try:
            t = p.cpu_times()
            out[p.pid] = (role(p), t.user + t.system)
        except psutil.Error:
            pass
    return out


def diff(before: dict, after: dict) -> dict[str, float]:
    per = collections.defaultdict(float)
    for pid, (r, c) in after.items():
        per[r] += c - (before[pid][1] if pid in before else 0.0)  # a process started during the job counts whole
    return dict(per)


def pyspy_start(work: Path, out: Path, name: str) -> list:
    """``py-spy record`` of every worker process (Dask workers, Spark's Python daemon and its forks)."""
    import subprocess

    spy = Path(sys.executable).with_name("py-spy")
    started = []
    for p in procs(work):
        r = role(p)
        if r not in ("Dask workers (task threads)", "Spark Python workers", "engine owner (runtime; Dask: scheduler in it)"):
            continue
        try:
            if r == "Spark Python workers" and "pyspark.daemon" not in " ".join(p.cmdline()):
                continue  # forks of the daemon: followed with --subprocesses
        except psutil.Error:
            continue
        f = out / f"{name}-{p.pid}.raw"
        cmd = [str(spy), "record", "--pid", str(p.pid), "--rate", "50", "--format", "raw", "-o", str(f), "--nonblocking"]
        if r == "Spark Python workers":
            cmd.append("--subprocesses")
        started.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    return started


def pyspy_stop(started: list) -> None:
    import signal

    for proc in started:
        proc.send_signal(signal.SIGINT)
    for proc in started:
        try:
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.wait()


def spark_stages(ui: str, t0: float, t1: float) -> list[dict]:
    try:
        apps = json.load(urllib.request.urlopen(f"{ui}/api/v1/applications", timeout=5))
        app = apps[0]["id"]
        stages = json.load(urllib.request.urlopen(f"{ui}/api/v1/applications/{app}/stages?status=complete", timeout=10))
    except Exception as exc:  # noqa: BLE001 - a profile: report and go on
        return [{"error": repr(exc)}]

    def ts(s: str) -> float:
        import datetime as dt

        return dt.datetime.strptime(s.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()

    out = []
    for s in stages:
        if "submissionTime" not in s or not (t0 - 0.5 <= ts(s["submissionTime"]) <= t1 + 0.5):
            continue
        out.append({
            "stage": s["stageId"], "name": s["name"][:60], "tasks": s["numTasks"],
            "wall_s": (ts(s["completionTime"]) - ts(s["submissionTime"])),
            "run_s": s["executorRunTime"] / 1e3, "cpu_s": s["executorCpuTime"] / 1e9,
            "deser_s": s.get("executorDeserializeTime", 0) / 1e3, "gc_s": s.get("jvmGcTime", 0) / 1e3,
            "in_MB": s.get("inputBytes", 0) / 1e6, "out_MB": s.get("outputBytes", 0) / 1e6,
            "shuffle_w_MB": s.get("shuffleWriteBytes", 0) / 1e6, "shuffle_r_MB": s.get("shuffleReadBytes", 0) / 1e6,
            "spill_MB": s.get("diskBytesSpilled", 0) / 1e6,
        })
    return sorted(out, key=lambda s: s["stage"])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("backend", choices=("dask", "spark"))
    p.add_argument("data")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--json")
    p.add_argument("--pyspy", help="a folder: py-spy record of each worker process during each job (raw stacks)")
    args = p.parse_args()
    data = Path(args.data)
    from engines import runtime_engines

    from etl_platform.hooks import get_cluster_hook

    results = {"backend": args.backend, "load_start": os.getloadavg(), "jobs": []}
    with tempfile.TemporaryDirectory(prefix=f"etl-profile-{args.backend}-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        with runtime_engines(work / "runtime", (args.backend,)) as engines:
            results["engine_ready_s"] = engines.ready_s[args.backend]
            print(f"engine ready in {engines.ready_s[args.backend]:.2f} s, load {os.getloadavg()}", flush=True)
            settings = engines.settings({"ETL_LAKE_ROOT": str(work / "lake")})
            hook = get_cluster_hook(args.backend, settings=settings)
            t0 = time.perf_counter()
            handle = hook.start_or_attach(work / "cluster")
            results["attach_s"] = time.perf_counter() - t0
            ui = handle.dashboard_url
            print(f"attached in {results['attach_s']:.2f} s; dashboard {ui}", flush=True)
            import dask.dataframe  # noqa: F401 - the driver's imports before timing, as profile_dask.py
            import narwhals  # noqa: F401
            import pyarrow.parquet  # noqa: F401
            sources = {"athletes": "athlete_events.csv", "regions": "noc_regions.csv", "venues": "host_city_locations.csv"}
            steps = [(f"ingest_{k}", "olympics.ingest", {"table": k, "source": str(data / f)}) for k, f in sources.items()]
            steps += [("enrich", "olympics.enrich", {}), ("aggregate", "olympics.aggregate", {})]
            try:
                for rep in range(args.reps):
                    for name, job, kwargs in steps:
                        spies = pyspy_start(work, Path(args.pyspy), f"{rep}-{name}") if args.pyspy else []
                        before, l0, w0 = cpu(work), os.getloadavg()[0], time.time()
                        summary = hook.run_job(handle, job, kwargs, DS)
                        hook.close()
                        w1 = time.time()
                        pyspy_stop(spies)
                        per = diff(before, cpu(work))
                        row = {"rep": rep, "job": name, "wall_s": w1 - w0, "load1": [l0, os.getloadavg()[0]],
                               "cpu_s": per, "rows": {k: summary.get(k) for k in ("rows_in", "rows_accepted",
                                                                                  "rows_rejected", "rows_out")
                                                     if isinstance(summary, dict) and k in summary}}
                        if args.backend == "spark" and ui:
                            row["stages"] = spark_stages(ui, w0, w1)
                        results["jobs"].append(row)
                        print(f"run {rep} {name}: wall {row['wall_s']:.2f} s, load {l0:.2f}->{row['load1'][1]:.2f}, "
                              f"CPU s total {sum(per.values()):.2f}", flush=True)
                        for r, c in sorted(per.items(), key=lambda kv: -kv[1]):
                            if c >= 0.05:
                                print(f"    {r:50s} {c:7.2f}", flush=True)
                        for s in row.get("stages", []):
                            print(f"    stage {s}", flush=True)
            finally:
                hook.stop(handle)
                hook.close()
        results["total_s"] = time.perf_counter() - t
    results["load_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
