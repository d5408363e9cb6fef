"""Per-task overhead through the real scheduler and LocalExecutor (a benchmark, not a test).

    .venv/bin/python bench/overhead.py [--backend dask|spark] [--runs 3]
                                       [--concurrent] [--keep] [--dag-file PATH] [--set KEY=VALUE ...]

Starts the embedded runtime (``bin/run``: api-server, scheduler + LocalExecutor, dag-processor,
triggerer, with the embedded defaults, and the owner of the runtime's engine of ``--backend``:
``ETL_RUNTIME_ENGINES=<backend>``, override with ``--set``) on a fresh ``AIRFLOW_HOME`` and a free
port, with only the fixture DAG ``small_jobs`` (``tests/fixtures/dags/small_jobs.py``: start_cluster
-> noop x3 -> ingest regions (230 rows) -> ingest venues (52 rows) -> stop_cluster). Once the DAG
is parsed and the engine is ready it triggers ``--runs`` runs through the REST API (one after the
other, or all at once with ``--concurrent``); each run's ``start_cluster`` attaches to the
runtime's engine. Then it reads what the scheduler recorded (``task_instance`` / ``dag_run`` in
SQLite) and the task logs.

Per job task it prints

* ``dur``: the task instance's duration as Airflow recorded it (start_date -> end_date);
* ``engine``: the job's own time (``SparkJobOperator`` logs ``Job ... done in X s``: the call of
  the job on the cluster, without the task process's start, imports and connection);
* ``over``: ``dur - engine``, the per-task overhead of the task process (issue 14's target is
  about 1 s at the median);
* ``q->start``: queued_dttm -> start_date (the executor's hand-off and the task process's start);
* ``gap``: the previous task's end_date -> this task's start_date (the scheduler's loop between
  dependent tasks plus ``q->start``).

and, per run, the wall time (queued_at -> end_date) and the start_cluster task's duration (the
attach to the runtime's engine; the engine's own start, as its owner logged it, is ``engine_ready_s``).

Before ``bin/run`` starts, ``engine`` (each job's own time on a warm engine, the floor) is measured
in a separate process that starts the runtime's engine of ``--backend`` the same way
(``bench/engines.py``) and runs each job through the hook, attached to it. At the end the script
checks, with psutil, that no process of the deployment (its ``AIRFLOW_HOME`` or an engine's
``ETL_CLUSTER_WORKDIR`` under the work directory) is left.
Medians are over every job task of every run but the first (the first task of a LocalExecutor
worker pays the worker's own warm-up) unless ``--all``.
"""

from __future__ import annotations

import argparse
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
from datetime import UTC, datetime
from pathlib import Path

from engines import pids_with_env

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "small_jobs"
CHAIN = ["start_cluster", "noop_1", "noop_2", "noop_3", "ingest_regions", "ingest_venues", "stop_cluster"]
JOBS = CHAIN[1:-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, port: int, home: Path) -> None:
        self.base, self.home, self._token = f"http://127.0.0.1:{port}", home, None

    def token(self) -> str:
        if self._token is None:
            password = json.loads((self.home / "simple_auth_manager_passwords.json").read_text())["admin"]
            req = urllib.request.Request(f"{self.base}/auth/token", method="POST",
                                         data=json.dumps({"username": "admin", "password": password}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                self._token = json.load(resp)["access_token"]
        return self._token

    def __call__(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"{self.base}/api/v2/{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token()}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)


def query(home: Path, sql: str, *args) -> list:
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        return db.execute(sql, args).fetchall()


def ts(text: str | None) -> datetime | None:
    """A timestamp as Airflow stores it in SQLite (UTC, with or without an offset)."""
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def secs(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds()


def task_log(home: Path, run_id: str, task_id: str) -> list[dict]:
    """The events of the task's log (last attempt), each with ``t`` (epoch seconds) added."""
    logs = sorted((home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}").glob("attempt=*.log"))
    events = []
    for line in logs[-1].read_text(errors="replace").splitlines() if logs else []:
        try:
            event = json.loads(line)
            event["t"] = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        events.append(event)
    return events


def log_span(events: list[dict], first: str, last: str) -> float | None:
    """Seconds from the first event containing ``first`` to the last containing ``last``."""
    a = [e["t"] for e in events if first in str(e.get("event", ""))]
    b = [e["t"] for e in events if last in str(e.get("event", ""))]
    return round(b[-1] - a[0], 3) if a and b else None


ENGINE_JOBS = {"noop": ("noop", {}), "ingest_regions": ("olympics.ingest", {"table": "regions"}),
               "ingest_venues": ("olympics.ingest", {"table": "venues"})}


def measure_engine(backend: str, sources: dict[str, str], root: Path, repeat: int = 3) -> dict[str, float]:
    """Each job's own time on a warm engine, through the hook in one warm process (the floor).

    The engine is the runtime's, started here under ``root`` as ``bin/run`` starts it; the hook
    attaches to it as a run's ``start_cluster`` does and sends the jobs the way job tasks do.
    """
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from engines import runtime_engines

    from etl_platform.hooks import get_cluster_hook

    times: dict[str, float] = {}
    with runtime_engines(root, (backend,)) as engines:
        hook = get_cluster_hook(backend, settings=engines.settings())
        handle = hook.start_or_attach(root / "run")
        try:
            for name, (job, kwargs) in ENGINE_JOBS.items():
                if "table" in kwargs:
                    kwargs = {**kwargs, "source": sources[kwargs["table"]]}
                runs = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    hook.run_job(handle, job, kwargs, "2024-07-01")
                    runs.append(time.perf_counter() - t0)
                    hook.close()
                times[name] = round(statistics.median(runs[1:]), 3)  # warm: not the first call
        finally:
            hook.stop(handle)  # the runtime's engine stays (Spark: the session is released); the owner stops it
            hook.close()
    return times


def engine_child(backend: str, env: dict[str, str], work: Path) -> dict[str, float]:
    sources = {t: os.path.join(env.get("ETL_DATA_DIR") or str(default_data_dir()), "olympics", f)
               for t, f in (("regions", "noc_regions.csv"), ("venues", "host_city_locations.csv"))}
    out = subprocess.run([sys.executable, __file__, "--engine-child", backend, json.dumps(sources),
                          str(work / "engine-runtime")],
                         env={**env, "AIRFLOW_HOME": str(work / "engine-home"), "ETL_LAKE_ROOT": str(work / "engine-lake")},
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"measuring the engine time failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def default_data_dir() -> Path:
    shared = ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else ROOT / "data"


def wait(what: str, predicate, timeout: float, proc: subprocess.Popen, log: Path, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, urllib.error.URLError, ValueError, KeyError, sqlite3.OperationalError):
            value = None
        if value:
            return value
        if proc.poll() is not None:
            raise SystemExit(f"bin/run exited ({proc.returncode}) while waiting for {what}; see {log}")
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}; see {log}")


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - one flat script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="dask", choices=["dask", "spark"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrent", action="store_true", help="trigger every run at once")
    parser.add_argument("--all", action="store_true", help="medians over every run (default: all but the first)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (AIRFLOW_HOME, logs)")
    parser.add_argument("--dag-file", default=str(ROOT / "tests" / "fixtures" / "dags" / "small_jobs.py"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra environment")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--engine-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine_child:
        backend, sources, root = args.engine_child
        print(json.dumps(measure_engine(backend, json.loads(sources), Path(root))))
        return 0

    work = Path(tempfile.mkdtemp(prefix="etl-overhead-"))
    home, dags = work / "airflow", work / "dags"
    dags.mkdir()
    shutil.copy(args.dag_file, dags / "small_jobs.py")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "ETL_")) and k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
    env.update(AIRFLOW_HOME=str(home), ETL_LAKE_ROOT=str(work / "lake"), AIRFLOW__API__PORT=str(port),
               AIRFLOW__CORE__DAGS_FOLDER=str(dags), AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
               AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5", ETL_RUNTIME_ENGINES=args.backend)
    if os.environ.get("ETL_DATA_DIR"):
        env["ETL_DATA_DIR"] = os.environ["ETL_DATA_DIR"]
    for item in args.set:
        key, _, value = item.partition("=")
        env[key] = value
    bin_env = subprocess.run(["bash", "-c", f". {ROOT}/bin/env.sh && env -0"], env=env, capture_output=True)
    engine = engine_child(args.backend, dict(e.split("=", 1) for e in bin_env.stdout.decode().split("\0") if "=" in e),
                          work)
    log = work / "run.log"
    load0 = os.getloadavg()
    t_start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ROOT / "bin" / "run")], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    api = Api(port, home)
    try:
        wait("the DAG to be parsed", lambda: api("GET", f"dags/{DAG_ID}")["dag_id"], args.timeout, proc, log, 1)
        sys.path.insert(0, str(ROOT))
        from include.etl.clusters.runtime import current  # bin/run's runtime: $AIRFLOW_HOME/runtime

        wait(f"the runtime's {args.backend} engine", lambda: current(args.backend, home / "runtime"), args.timeout,
             proc, log)
        up_s = time.monotonic() - t_start
        api("PATCH", f"dags/{DAG_ID}", {"is_paused": False})
        conf = {"backend": args.backend}
        run_ids: list[str] = []

        def ended(run_id: str) -> str | None:
            state = query(home, "select state from dag_run where dag_id=? and run_id=?", DAG_ID, run_id)[0][0]
            return state if state in ("success", "failed") else None

        for i in range(args.runs):
            run = api("POST", f"dags/{DAG_ID}/dagRuns", {"logical_date": f"2024-07-{i + 1:02d}T00:00:00Z", "conf": conf})
            run_ids.append(run["dag_run_id"])
            if not args.concurrent:
                wait(f"run {run['dag_run_id']}", lambda r=run["dag_run_id"]: ended(r), args.timeout, proc, log)
        states = [wait(f"run {r}", lambda r=r: ended(r), args.timeout, proc, log) for r in run_ids]
    finally:
        t_stop = time.monotonic()
        stop(proc)
        stop_s = time.monotonic() - t_stop
    # Every process of the deployment and of the engine measurement is gone (psutil, by the environment
    # they inherited: an AIRFLOW_HOME or an engine's ETL_CLUSTER_WORKDIR under the work directory).
    left = pids_with_env(work, ("AIRFLOW_HOME", "ETL_CLUSTER_WORKDIR"))
    ready = re.findall(rf"{args.backend} engine ready in ([0-9.]+) s", log.read_text(errors="replace"))

    rows, overhead, gaps, qstarts, engines, durs = [], [], [], [], [], []
    spans: dict[str, list] = {}
    for index, run_id in enumerate(run_ids):
        (queued_at, r_start, r_end), = query(home, "select queued_at, start_date, end_date from dag_run "
                                             "where dag_id=? and run_id=?", DAG_ID, run_id)
        tis = {t[0]: t[1:] for t in query(home, "select task_id, state, queued_dttm, start_date, end_date, duration "
                                          "from task_instance where dag_id=? and run_id=?", DAG_ID, run_id)}
        prev_end = None
        counted = args.all or index > 0 or args.runs == 1
        for task in CHAIN:
            state, q, s, e, dur = tis.get(task, (None,) * 5)
            q, s, e = ts(q), ts(s), ts(e)
            eng = engine.get(task if task.startswith("ingest") else "noop") if task in JOBS else None
            if task in JOBS:
                events = task_log(home, run_id, task)
                spans.setdefault(task, []).append(
                    (log_span(events, "", "Running job"), log_span(events, "Running job", "done"),
                     secs(s, datetime.fromtimestamp(events[0]["t"], tz=UTC)) if events and s else None))
            over = None if dur is None or eng is None else dur - eng
            gap = secs(prev_end, s)
            rows.append((run_id, task, state, dur, eng, over, secs(q, s), gap))
            if task in JOBS and counted:
                overhead.append(over)
                engines.append(eng)
                durs.append(dur)
                qstarts.append(secs(q, s))
                if task != "noop_1":
                    gaps.append(gap)
            prev_end = e
        rows.append((run_id, "(run)", ended(run_id), secs(ts(queued_at), ts(r_end)), None, None,
                     secs(ts(queued_at), ts(r_start)), None))

    def f(v):
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    print(f"backend {args.backend}, the runtime's engines {env['ETL_RUNTIME_ENGINES']} (runs attach), "
          f"{args.runs} run(s){' at once' if args.concurrent else ' one after the other'}; load "
          f"{load0[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end; bin/run up in {up_s:.1f} s, stopped in {stop_s:.1f} s")
    print(f"{'run':38} {'task':15} {'state':8} {'dur':>6} {'engine':>6} {'over':>6} {'q->start':>8} {'gap':>6}")
    for r in rows:
        print(f"{r[0]:38} {r[1]:15} {f(r[2]):8} {f(r[3]):>6} {f(r[4]):>6} {f(r[5]):>6} {f(r[6]):>8} {f(r[7]):>6}")
    print("task log spans (median over runs): start->first log line, first log line->'Running job', "
          "'Running job'->'done'")
    for task, values in spans.items():
        print(f"  {task:15} {median([v[2] for v in values])!s:>6} {median([v[0] for v in values])!s:>6} "
              f"{median([v[1] for v in values])!s:>6}")
    summary = {
        "engine_warm_s": engine,
        "per_task_overhead_median_s": median(overhead), "task_duration_median_s": median(durs),
        "engine_median_s": median(engines), "queued_to_start_median_s": median(qstarts),
        "end_to_next_start_median_s": median(gaps),
        "start_cluster_s": [r[3] for r in rows if r[1] == "start_cluster"],
        "engine_ready_s": [float(x) for x in ready],
        "run_wall_s": [r[3] for r in rows if r[1] == "(run)"], "states": states, "cluster_processes_left": left,
    }
    print(json.dumps(summary, indent=1, default=str))
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(s == "success" for s in states) and not left else 1


if __name__ == "__main__":
    sys.exit(main())
