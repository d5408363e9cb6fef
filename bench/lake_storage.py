"""The olympics chain's time with the lake on local disk and on a local S3 server (SeaweedFS).

    .venv/bin/python bench/lake_storage.py --rows 2000000 [--repeat 2] [--data-dir /tmp/bench-data]

One local Dask cluster (``ETL_LOCAL_WORKERS`` x ``ETL_LOCAL_THREADS``) runs the olympics jobs
(three ingests, enrich, aggregate: the DAG's jobs, committed per job) on a generated input set,
into a ``file://`` lake and into an ``s3://`` lake on ``weed mini`` (loopback), alternately, and
prints the seconds of each run, their medians and the ratio S3 / local disk, with the load.
Issue 21's target: S3 within 1.5x of local disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_chain(engine, location, inputs: dict[str, str], ds: str) -> float:
    from include.etl.jobs import get_job

    def job(name: str, **kwargs) -> None:
        registered = get_job(name)
        registered(registered.context(engine=engine, lake_root=location, ds=ds), **kwargs)

    t0 = time.perf_counter()
    for table in ("athletes", "regions", "venues"):
        job("olympics.ingest", table=table, source=inputs["sources"][table])
    job("olympics.enrich")
    job("olympics.aggregate")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--data-dir", default="/tmp/bench-data")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from distributed import Client, LocalCluster

    sys.path.insert(0, str(ROOT / "bench"))
    from run import input_set  # the generated inputs, cached by rows and seed

    from include.etl.engines.dask import DaskEngine
    from include.etl.lake import LakeLocation
    from tests.s3 import start_seaweedfs

    inputs = input_set(Path(args.data_dir), args.rows, args.seed)
    workers, threads = int(os.environ.get("ETL_LOCAL_WORKERS", 2)), int(os.environ.get("ETL_LOCAL_THREADS", 1))
    times: dict[str, list[float]] = {"file": [], "s3": []}
    with tempfile.TemporaryDirectory(prefix="lake-bench-") as tmp, start_seaweedfs(Path(tmp) / "s3") as s3, \
            LocalCluster(n_workers=workers, threads_per_worker=threads, host="127.0.0.1", dashboard_address=None) \
            as cluster, Client(cluster) as client:
        engine = DaskEngine(client)
        for i in range(args.repeat):
            for kind in ("file", "s3"):
                location = (LakeLocation.resolve(Path(tmp) / f"lake-{i}") if kind == "file"
                            else s3.location(prefix=f"bench-{i}"))
                seconds = run_chain(engine, location, inputs, "2024-07-07")
                times[kind].append(seconds)
                print(f"{kind:>4} run {i + 1}: {seconds:6.2f} s  (load {os.getloadavg()[0]:.1f})", flush=True)
    local, remote = statistics.median(times["file"]), statistics.median(times["s3"])
    print(f"{args.rows:,} rows, Dask {workers}x{threads}: local disk {local:.2f} s, SeaweedFS {remote:.2f} s, "
          f"S3 / local = {remote / local:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
