"""CPU of a local Spark Connect server with and without extra JVM options (ETL_SPARK_JAVA_OPTIONS).

    .venv/bin/python bench/spark_jvm_options.py --options "" "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

For each option string: start a server as the runtime's owner does (``start_local_spark_connect``),
run the olympics jobs on the shipped head of the athletes file ``--runs`` times in a row
(``run_jobs`` of tests/e2e/test_spark_backend.py), and print the CPU seconds of the server's JVM
and its Python workers (robust to the machine's load, unlike wall times) for the start and
each run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def cpu_of(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def measure(options: str, runs: int, work: Path) -> dict:
    from etl_platform.hooks.spark import SparkClusterHook
    from include.etl.clusters.spark_local import start_local_spark_connect, stop_local_spark_connect
    from include.etl.settings import Settings
    from tests.e2e.test_spark_backend import SHIPPED, run_jobs

    settings = Settings.from_env({"ETL_LAKE_ROOT": str(work / "lake"), "ETL_SPARK_JAVA_OPTIONS": options})
    t0 = time.monotonic()
    handle = start_local_spark_connect(settings, work / "spark")
    jvm = psutil.Process(handle.pids[0])
    out = {"options": options, "start": (round(cpu_of(jvm), 1), round(time.monotonic() - t0, 1)), "runs": []}
    hook = SparkClusterHook(settings=settings)
    try:
        engine = hook.engine(handle)
        for i in range(runs):
            c0, t1 = cpu_of(jvm), time.monotonic()
            run_jobs(engine, work / f"lake{i}", SHIPPED)
            out["runs"].append((round(cpu_of(jvm) - c0, 1), round(time.monotonic() - t1, 1)))
    finally:
        hook.close()
        stop_local_spark_connect(handle)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", nargs="+", default=["", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"load: {psutil.getloadavg()}")
    for options in args.options:
        work = Path(tempfile.mkdtemp(prefix="etl-jvm-"))
        try:
            r = measure(options, args.runs, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        runs = ", ".join(f"{c} s CPU ({w} s)" for c, w in r["runs"])
        print(f"{options or '(JVM defaults)'}: start {r['start'][0]} s CPU ({r['start'][1]} s); runs: {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
