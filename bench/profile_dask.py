"""Where a Dask run of the chain spends its time: cluster starts, then each job's task stream.

    .venv/bin/python bench/profile_dask.py /tmp/bench-data/rows5000000-seed0 [--starts 5] [--reps 2]

1. ``--starts`` local cluster starts (``start_local_dask``, what the runtime's owner runs; then
   ``stop_local_dask``), with their median.
2. On the runtime's Dask engine (its owner, ``python -m include.etl.clusters.runtime dask``, started
   here as ``make run`` starts it: ``bench/engines.py``), ``--reps`` runs of the chain through
   the Dask hook's ``run_job``, attached as a run attaches (as the operator runs it). For each job: its wall time, how long the first task waited after the
   job started (the driver's imports are done beforehand, so a cold scheduler or worker shows here), each worker's busy seconds, and the
   worker seconds per task prefix and action (compute, transfer) from ``get_task_stream``.

The figures in docs/benchmarks/README.md ("Why the 2x target is still missed", History 7 and 9)
come from this script. It prints only; it is not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # bench/ (engines) is sys.path[0]: run as a script
DS = "2024-07-07"


def _prefix(key) -> str:
    name = key[0] if isinstance(key, tuple) else str(key)
    return name.split("-")[0]


def starts(settings, work: Path, n: int) -> None:
    from include.etl.clusters.dask_local import start_local_dask, stop_local_dask

    times = []
    for i in range(n):
        t0 = time.perf_counter()
        handle = start_local_dask(settings, work / f"start-{i}")
        times.append(time.perf_counter() - t0)
        stop_local_dask(handle)
    print(f"cluster start (s): {', '.join(f'{t:.2f}' for t in times)}; median {statistics.median(times):.2f}", flush=True)


def chain(work: Path, data: Path, reps: int) -> None:
    from engines import runtime_engines

    with runtime_engines(work / "runtime", ("dask",)) as engines:
        print(f"the runtime's Dask engine ready in {engines.ready_s['dask']:.2f} s (owner spawn -> ready)", flush=True)
        settings = engines.settings({"ETL_LAKE_ROOT": str(work / "lake")})
        _chain(settings, work, data, reps)
    print(f"owner and engine stopped in {engines.stop_s:.2f} s", flush=True)


def _chain(settings, work: Path, data: Path, reps: int) -> None:
    from distributed import Client

    from etl_platform.hooks import get_cluster_hook

    hook = get_cluster_hook("dask", settings=settings)
    handle = hook.start_or_attach(work / "cluster")  # attaches to the runtime's engine
    monitor = Client(handle.address, set_as_default=False)
    monitor.get_task_stream()  # registers the task stream plugin before the first job
    # The driver's own imports first, so "first task after" shows the cluster's coldness only.
    import dask.dataframe  # noqa: F401
    import narwhals  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    sources = {"athletes": "athlete_events.csv", "regions": "noc_regions.csv", "venues": "host_city_locations.csv"}
    steps = [(f"ingest_{t}", "olympics.ingest", {"table": t, "source": str(data / f)}) for t, f in sources.items()]
    steps += [("enrich", "olympics.enrich", {}), ("aggregate", "olympics.aggregate", {})]
    try:
        for rep in range(reps):
            for name, job, kwargs in steps:
                t0 = time.time()
                hook.run_job(handle, job, kwargs, DS)
                hook.close()
                t1 = time.time()
                stream = monitor.get_task_stream(start=t0, stop=t1)
                per, busy, first = collections.defaultdict(float), collections.defaultdict(float), None
                for task in stream:
                    for s in task["startstops"]:
                        per[f"{_prefix(task['key'])}:{s['action']}"] += s["stop"] - s["start"]
                        if s["action"] == "compute":
                            busy[task["worker"]] += s["stop"] - s["start"]
                        first = s["start"] if first is None else min(first, s["start"])
                wait = f"{first - t0:.2f}" if first is not None else "-"
                print(f"run {rep} {name}: wall {t1 - t0:.2f} s, first task after {wait} s, worker busy s "
                      f"{', '.join(f'{v:.2f}' for v in busy.values())}", flush=True)
                for key, seconds in sorted(per.items(), key=lambda kv: -kv[1])[:6]:
                    print(f"    {key:40s} {seconds:7.2f}")
    finally:
        monitor.close()
        hook.stop(handle)  # leaves the runtime's engine running: its owner stops it
        hook.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("data", help="a folder from bench/run.py's --data-dir, e.g. /tmp/bench-data/rows5000000-seed0")
    p.add_argument("--starts", type=int, default=5)
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    from include.etl.settings import Settings

    with tempfile.TemporaryDirectory(prefix="etl-profile-dask-") as tmp:
        work = Path(tmp)
        settings = Settings.from_env({**os.environ, "ETL_LAKE_ROOT": str(work / "lake")})
        if args.starts:
            starts(settings, work, args.starts)
        if args.reps:
            chain(work, Path(args.data), args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
