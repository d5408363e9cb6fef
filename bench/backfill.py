"""Time a backfill of retail_daily through the real scheduler, and say what the time is spent on.

The embedded default, as ``make run`` starts it: ``bin/run`` (api-server, scheduler with
LocalExecutor, dag-processor, triggerer; SQLite; the embedded defaults of ``bin/env.sh``; and the
owner of the runtime's engine of the backend, ``ETL_RUNTIME_ENGINES=<backend>``, which every run's
``start_cluster`` attaches to) on a temporary ``AIRFLOW_HOME``, lake and free port, with only
``dags/retail_daily.py``, over the real landing files in ``$ETL_DATA_DIR/retail/by-day``. Once
the DAG is parsed and the engine is ready (the setup time), ``POST /api/v2/backfills`` for
``--from`` .. ``--to`` on one backend, waits until every run has ended, and reads the task
instances from the metadata DB:

* the wall time of the backfill, per run with a file (a trading day) and per empty day, and
  runs per minute;
* per task: mean duration and its share of the summed task time (``start_cluster`` = the attach
  to the runtime's engine, the jobs, ``stop_cluster``, the sensor);
* scheduling: the gaps between a run's tasks (the scheduler's loop, task process start-up);
* how many engines the runtime started (its owner's ``<backend> engine ready in`` lines in
  ``bin/run``'s output: 1 unless an engine died and was started again) and how many runs attached
  to one (``Attaching to the runtime's <backend> engine`` in the ``start_cluster`` logs).

The whole year (2010-12-01 .. 2011-11-30: 297 trading days, 68 without a file) is
extrapolated from the range measured as ``wall / trading days measured x 297`` (empty days
cost a few seconds and overlap the others) unless the range is the year itself.

    .venv/bin/python bench/backfill.py --backend dask                      # the whole year
    .venv/bin/python bench/backfill.py --backend spark --from 2011-03-01 --to 2011-03-31

``--set KEY=VALUE`` adds to ``bin/run``'s environment (for example
``AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.1``); ``--out DIR`` writes the result file elsewhere.

Results: ``bench/results/backfill-<backend>-runtime-<from>-<to>.json`` and a Markdown table on
stdout (the ``-shared-`` and ``-per_run-`` files there were measured before the runtime owned the
engines, with the reuse modes since removed). ``bin/run`` is stopped with SIGTERM at the end (it
stops its tasks and the engine), and the script checks, with psutil, that no process of the
deployment is left.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from engines import pids_with_env

ROOT = Path(__file__).resolve().parents[1]
YEAR_TRADING_DAYS = 297
YEAR_DAYS = 365


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_data_dir() -> Path:
    shared = ROOT.parent / "shared" / "data"
    return Path(os.environ.get("ETL_DATA_DIR") or (shared if shared.is_dir() else ROOT / "data"))


class Deployment:
    def __init__(self, base: Path, backend: str, data_dir: Path, extra: dict[str, str] | None = None):
        self.base, self.home = base, base / "airflow"
        dags = base / "dags"
        dags.mkdir(parents=True)
        (dags / "retail_daily.py").symlink_to(ROOT / "dags" / "retail_daily.py")
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AIRFLOW", "ETL_")) and k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
        self.env.update(
            AIRFLOW_HOME=str(self.home), ETL_LAKE_ROOT=str(base / "lake"), ETL_DATA_DIR=str(data_dir),
            ETL_DEFAULT_BACKEND=backend, AIRFLOW__CORE__DAGS_FOLDER=str(dags), AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5", AIRFLOW__CORE__LOAD_EXAMPLES="False",
            ETL_RUNTIME_ENGINES=backend,  # bin/run's runtime ($AIRFLOW_HOME/runtime) owns this backend's engine only
        )
        self.env.update(extra or {})
        self.backend = backend
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.base / "run.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([str(ROOT / "bin" / "run")], env=self.env, cwd=ROOT, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def engine_ready(self) -> bool:
        """Is the runtime's engine of the backend ready (its owner's file under ``$AIRFLOW_HOME/runtime``)?"""
        sys.path.insert(0, str(ROOT))
        from include.etl.clusters.runtime import current

        return current(self.backend, self.home / "runtime") is not None

    def stop(self) -> float:
        """SIGTERM to bin/run (it stops its components, tasks and the engine); seconds it took."""
        t0 = time.monotonic()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return time.monotonic() - t0

    def leftovers(self) -> list[int]:
        """Pids of processes still running with this deployment's AIRFLOW_HOME or an engine's workdir under it."""
        return pids_with_env(self.home, ("AIRFLOW_HOME", "ETL_CLUSTER_WORKDIR"))

    def api(self, method: str, path: str, body: dict | None = None):
        password = json.loads((self.home / "simple_auth_manager_passwords.json").read_text())["admin"]
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/auth/token", method="POST",
                                     data=json.dumps({"username": "admin", "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            token = json.load(resp)["access_token"]
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v2/{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    def query(self, sql: str, *args):
        with sqlite3.connect(self.home / "airflow.db", timeout=30) as db:
            return db.execute(sql, args).fetchall()

    def wait(self, what: str, predicate, timeout: float, interval: float = 2.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except (OSError, urllib.error.URLError, ValueError, sqlite3.OperationalError, KeyError):
                value = None
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"bin/run exited ({self.proc.returncode}) while waiting for {what}; "
                                 f"logs in {self.base}")
            time.sleep(interval)
        raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}; logs in {self.base}")


def _seconds(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return (dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds()


def analyse(dep: Deployment, days: list[str]) -> dict:
    runs = dep.query("SELECT run_id, partition_key, state, start_date, end_date FROM dag_run "
                     "WHERE dag_id = 'retail_daily' AND run_type = 'backfill'")
    tis = dep.query("SELECT run_id, task_id, state, start_date, end_date FROM task_instance WHERE dag_id = 'retail_daily'")
    by_run: dict[str, list] = {}
    for run_id, task_id, state, start, end in tis:
        by_run.setdefault(run_id, []).append((task_id, state, start, end))
    trading, empty = [], []
    per_task: dict[str, list[float]] = {}
    gaps = []
    for run_id, _key, _state, start, end in runs:
        tasks = sorted((t for t in by_run.get(run_id, []) if t[1] == "success" and t[2]), key=lambda t: t[2])
        kind = "empty" if any(t[0] == "publish_empty_day" for t in tasks) else "trading"
        (empty if kind == "empty" else trading).append(_seconds(start, end))
        for task_id, _, t_start, t_end in tasks:
            per_task.setdefault(task_id, []).append(_seconds(t_start, t_end))
        busy = sum(_seconds(t[2], t[3]) for t in tasks)
        gaps.append((_seconds(start, end) or 0) - busy)
    summed = sum(sum(v) for v in per_task.values())
    start_logs = list((dep.home / "logs" / "dag_id=retail_daily").glob("run_id=*/task_id=start_cluster/attempt=*.log"))
    attached = sum(f"Attaching to the runtime's {dep.backend} engine" in f.read_text(errors="replace")
                   for f in start_logs)
    started = re.findall(rf"{dep.backend} engine ready in ([0-9.]+) s",
                         (dep.base / "run.log").read_text(errors="replace"))
    return {
        "engine_starts": len(started), "engine_ready_seconds": [float(x) for x in started],
        "runs_attached": attached, "start_cluster_logs": len(start_logs),
        "runs": len(runs), "trading_days": len(trading), "empty_days": len(empty),
        "states": sorted({r[2] for r in runs}),
        "run_seconds_trading_mean": round(statistics.mean(trading), 1) if trading else None,
        "run_seconds_empty_mean": round(statistics.mean(empty), 1) if empty else None,
        "scheduling_gap_seconds_mean": round(statistics.mean(gaps), 1) if gaps else None,
        "tasks": {t: {"n": len(v), "mean_s": round(statistics.mean(v), 2), "median_s": round(statistics.median(v), 2),
                      "share_of_task_time": round(sum(v) / summed, 3)}
                  for t, v in sorted(per_task.items(), key=lambda kv: -sum(kv[1]))},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("dask", "spark"), required=True)
    parser.add_argument("--from", dest="start", default="2010-12-01")
    parser.add_argument("--to", dest="end", default="2011-11-30")
    parser.add_argument("--max-active-runs", type=int, default=2, help="backfill runs at a time (2 cores here)")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--keep", action="store_true", help="keep the deployment's directory (logs, lake, DB)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra environment for bin/run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="directory of the result file")
    args = parser.parse_args(argv)
    landing = args.data_dir / "retail" / "by-day"
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    days = [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    files = [d for d in days if (landing / f"{d}.csv").exists()]
    if not files:
        raise SystemExit(f"no landing file in {landing} between {args.start} and {args.end}")
    base = Path(tempfile.mkdtemp(prefix=f"bench-backfill-{args.backend}-"))
    dep = Deployment(base, args.backend, args.data_dir, dict(item.partition("=")[::2] for item in args.set))
    load0 = os.getloadavg()[0]
    t_setup = time.monotonic()
    try:
        dep.start()
        dep.wait("retail_daily to be parsed", lambda: dep.api("GET", "dags/retail_daily")["dag_id"], 300)
        dep.api("PATCH", "dags/retail_daily", {"is_paused": False})
        dep.wait(f"the runtime's {args.backend} engine", dep.engine_ready, 600, interval=0.5)
        setup_s = time.monotonic() - t_setup
        t0 = time.monotonic()
        dep.api("POST", "backfills", {"dag_id": "retail_daily", "from_date": f"{args.start}T00:00:00Z",
                                      "to_date": f"{args.end}T00:00:00Z", "max_active_runs": args.max_active_runs,
                                      "run_backwards": False, "reprocess_behavior": "none"})

        def finished():
            rows = dep.query("SELECT state FROM dag_run WHERE dag_id = 'retail_daily' AND run_type = 'backfill'")
            done = [s for (s,) in rows if s in ("success", "failed")]
            if len(rows) == len(days) and len(done) == len(days):
                return True
            print(f"\r{len(done)}/{len(days)} runs ended after {time.monotonic() - t0:.0f} s", end="", file=sys.stderr)
            return False

        dep.wait("the backfill", finished, 24 * 3600, interval=5)
        wall = time.monotonic() - t0
        print(file=sys.stderr)
        result = analyse(dep, days)
    finally:
        stop_s = dep.stop()
    left = dep.leftovers()
    result.update({
        "runtime_engines": args.backend, "stop_seconds": round(stop_s, 1), "processes_left": left,
        "runs_per_minute": round(len(days) / wall * 60, 2), "load_at_start": round(load0, 2),
        "load_at_end": round(os.getloadavg()[0], 2),
        "backend": args.backend, "from": args.start, "to": args.end, "days": len(days), "files": len(files),
        "max_active_runs": args.max_active_runs, "wall_seconds": round(wall, 1), "setup_seconds": round(setup_s, 1),
        "seconds_per_trading_day": round(wall / len(files), 1),
        "year_estimate_seconds": round(wall if len(files) == YEAR_TRADING_DAYS else wall / len(files) * YEAR_TRADING_DAYS),
        "year_measured": len(files) == YEAR_TRADING_DAYS,
        "cpus": os.cpu_count(), "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    })
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"backfill-{args.backend}-runtime-{args.start}-{args.end}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| backend | days (files) | wall | per trading day | year (297 days) | run, trading | run, empty |\n"
          f"| --- | --- | --- | --- | --- | --- | --- |\n"
          f"| {args.backend} | {len(days)} ({len(files)}) | {wall:.0f} s | {result['seconds_per_trading_day']} s | "
          f"{result['year_estimate_seconds'] / 3600:.2f} h{'' if result['year_measured'] else ' (extrapolated)'} | "
          f"{result['run_seconds_trading_mean']} s | {result['run_seconds_empty_mean']} s |")
    print("\n| task | n | mean | median | share of task time |\n| --- | --- | --- | --- | --- |")
    for task, t in result["tasks"].items():
        print(f"| {task} | {t['n']} | {t['mean_s']} s | {t['median_s']} s | {t['share_of_task_time']:.0%} |")
    print(f"\n{result['runs_per_minute']} runs per minute; the runtime started {result['engine_starts']} "
          f"{args.backend} engine(s) (ready in {result['engine_ready_seconds']} s), {result['runs_attached']} of "
          f"{result['start_cluster_logs']} start_cluster log(s) attached to it; load {load0:.2f} at start, {result['load_at_end']:.2f} at end; bin/run stopped in {stop_s:.1f} s, processes left: {left or 'none'}")
    print(f"states {result['states']}; mean gap between a run's tasks (scheduling, process start) per run: "
          f"{result['scheduling_gap_seconds_mean']} s; results in {out}")
    if args.keep:
        print(f"deployment kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if result["states"] == ["success"] and not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
