"""Benchmark: the Olympics chain on the platform's Dask and Spark backends beside Polars and DuckDB.

    .venv/bin/python bench/run.py --rows 1000000 5000000 [--configs dask,spark,polars,duckdb,dag[,dagtest]]
                                  [--large-rows 20000000 [--large-configs dask,duckdb]]
                                  [--out docs/benchmarks] [--data-dir /tmp/bench-data]

``dask`` and ``spark`` run the chain's jobs through the backend's hook on the runtime's engine, as a
run under ``make run`` does: the child starts the engine's owner (``python -m
include.etl.clusters.runtime <backend>``, see ``bench/engines.py``), attaches to it and stops it at the
end. ``dag`` is a whole olympics_etl run (on Dask) through the real scheduler and executor (``bin/run``,
the embedded runtime of ``make run``, with ``ETL_RUNTIME_ENGINES=dask``); ``dagtest`` the same DAG under
``airflow dags test`` (one process, no scheduler; its Dask cluster lives in that process).

``--large-rows``: then one more, larger row count on ``--large-configs`` only (the distributed
engine against the best single-process tool, where the curve of time against rows may cross).

For each row count the input set is generated once (cached in ``--data-dir`` by rows and seed).
Each configuration then runs in its own child process (so memory figures do not mix), while
this process samples the RSS of the child, all its descendants and every engine process (one that
inherited an ``ETL_CLUSTER_WORKDIR`` under the run's work directory; found with psutil), every 0.2 s. Results are
checked equal across configurations before any time is written. See docs/benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
DS = "2024-07-07"
DEFAULT_CONFIGS = ("dask", "spark", "polars", "duckdb", "dag")
ALL_CONFIGS = (*DEFAULT_CONFIGS, "dagtest")
MARTS = {"avg_age_by_year": ("year", "season", "region"), "medals_by_region": ("year", "season", "region")}
MART_KEYS = {"avg_age_by_year": ["year", "season"], "medals_by_region": ["year", "season", "region"]}
NOOP_RUNS = 5
DAG_BACKEND = "dask"  # the backend of the dag and dagtest configs


# ---------------------------------------------------------------- input data


def input_set(data_dir: Path, rows: int, seed: int) -> dict:
    """The generated inputs for (rows, seed), generated on first use and cached."""
    folder = data_dir / f"rows{rows}-seed{seed}"
    done = folder / "DONE.json"
    if not done.exists():
        sys.path.insert(0, str(ROOT))
        from include.pipelines.olympics.generate import generate_athletes

        print(f"generating {rows:,} rows (seed {seed}) into {folder} ...", flush=True)
        summary = generate_athletes(str(folder), rows, seed=seed)
        done.write_text(json.dumps(summary))
    summary = json.loads(done.read_text())
    sources = {
        "athletes": str(folder / "athlete_events.csv"),
        "regions": str(folder / "noc_regions.csv"),
        "venues": str(folder / "host_city_locations.csv"),
    }
    nbytes = sum(os.path.getsize(p) for p in sources.values())
    return {"sources": sources, "bytes": nbytes, "rows": rows, "seed": seed, "generate_s": summary.get("seconds")}


# ---------------------------------------------------------------- memory sampling


def _env_pids(prefix: str) -> set[int]:
    """Pids of the engine processes under ``prefix``: those that inherited an ``ETL_CLUSTER_WORKDIR`` below it."""
    from engines import pids_with_env

    return set(pids_with_env(prefix))


class RssMonitor(threading.Thread):
    """Samples the RSS of ``root_pid`` + descendants + cluster processes under ``prefix``."""

    def __init__(self, root_pid: int, prefix: str, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.prefix, self.interval = root_pid, prefix, interval
        self.stop_event = threading.Event()
        self.peak_total = 0
        self.peak_by_pid: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.samples = 0

    def run(self) -> None:
        import psutil

        env_pids: set[int] = set()
        last_scan = 0.0
        procs: dict[int, psutil.Process] = {}
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now - last_scan > 1.0:
                env_pids, last_scan = _env_pids(self.prefix), now
            pids = set(env_pids)
            try:
                root = psutil.Process(self.root_pid)
                pids.add(self.root_pid)
                pids.update(c.pid for c in root.children(recursive=True))
            except psutil.Error:
                pass
            total = 0
            for pid in pids:
                try:
                    p = procs.get(pid) or procs.setdefault(pid, psutil.Process(pid))
                    rss = p.memory_info().rss
                except psutil.Error:
                    procs.pop(pid, None)
                    continue
                total += rss
                if rss > self.peak_by_pid.get(pid, 0):
                    grew = rss > 1.25 * self.peak_by_pid.get(pid, 0)
                    self.peak_by_pid[pid] = rss
                    if pid not in self.names or grew:  # a pid may exec (bash spark-class -> java)
                        try:
                            self.names[pid] = " ".join(p.cmdline())[:160] or p.name()
                        except psutil.Error:
                            self.names[pid] = "?"
            self.peak_total = max(self.peak_total, total)
            self.samples += 1
            self.stop_event.wait(self.interval)

    def finish(self) -> dict:
        self.stop_event.set()
        self.join()
        workers = {p: r for p, r in self.peak_by_pid.items() if p != self.root_pid}
        driver = self.peak_by_pid.get(self.root_pid, 0)
        if workers:
            wpid = max(workers, key=workers.get)
            worker_peak, worker_name = workers[wpid], self.names.get(wpid, "?")
        else:  # a single-process tool: the process itself is the worker
            worker_peak, worker_name = driver, "(the process itself)"
        return {
            "peak_rss_total_mb": round(self.peak_total / 2**20, 1),
            "peak_rss_driver_mb": round(driver / 2**20, 1),
            "peak_rss_worker_mb": round(worker_peak / 2**20, 1),
            "peak_worker_cmd": worker_name,
            "processes_seen": len(self.peak_by_pid),
            "rss_samples": self.samples,
        }


# ---------------------------------------------------------------- one configuration (child process)


def child_platform(backend: str, sources: dict[str, str], work: Path) -> dict:
    """The chain on the runtime's engine of ``backend``, as a run under ``make run`` gets it.

    The engine's owner (``python -m include.etl.clusters.runtime``, :mod:`engines`) is started
    here, with ``ETL_RUNTIME_DIR`` = ``work/runtime``; the hook attaches to it through its file
    (``start_or_attach``), each job goes the way a job task sends it (the scheduler's job endpoint
    for Dask, the owner's job endpoint for Spark), and the owner is stopped at the end.
    """
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(BENCH)]
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    from engines import runtime_engines

    from etl_platform.hooks import get_cluster_hook

    result: dict = {}
    with runtime_engines(work / "runtime", (backend,)) as engines:
        result["cluster_start_s"] = engines.ready_s[backend]  # the owner's spawn -> its engine ready
        settings = engines.settings({"ETL_LAKE_ROOT": str(work / "lake")})
        result.update(local_workers=settings.local_workers, local_threads=settings.local_threads)
        hook = get_cluster_hook(backend, settings=settings)
        t0 = time.perf_counter()
        handle = hook.start_or_attach(work / "cluster")  # attaches (Spark: opens the run's session)
        result["attach_s"] = time.perf_counter() - t0
        try:
            steps = [(f"ingest_{t}", "olympics.ingest", {"table": t, "source": s}) for t, s in sources.items()]
            steps += [("enrich", "olympics.enrich", {}), ("aggregate", "olympics.aggregate", {})]
            jobs, summaries = {}, {}
            chain0 = time.perf_counter()
            for name, job, kwargs in steps:
                t = time.perf_counter()
                summaries[name] = hook.run_job(handle, job, kwargs, DS)
                hook.close()  # as SparkJobOperator does after each task
                jobs[name] = time.perf_counter() - t
            result["wall_s"] = time.perf_counter() - chain0
            result["jobs_s"] = jobs
            result["summaries"] = summaries
            noops = []
            for _ in range(NOOP_RUNS):
                t = time.perf_counter()
                hook.run_job(handle, "noop", {}, DS)
                hook.close()
                noops.append(time.perf_counter() - t)
            result["noop_s"] = noops
            result["overhead_s"] = statistics.median(noops)
        finally:
            hook.stop(handle)  # the run's teardown: the runtime's engine stays (Spark: its session is released)
            hook.close()
    result["cluster_stop_s"] = engines.stop_s  # SIGTERM to the owner -> the owner (and its engine) gone
    return result


def child_single(tool: str, sources: dict[str, str], work: Path) -> dict:
    sys.path.insert(0, str(BENCH))
    import single

    __import__(tool)  # import the library before timing (the platform's clients are imported at cluster start)
    t0 = time.perf_counter()
    jobs = (single.run_polars if tool == "polars" else single.run_duckdb)(sources, work / "lake", DS)
    return {"wall_s": time.perf_counter() - t0, "jobs_s": jobs}


def child_main(args: argparse.Namespace) -> int:
    sources = json.loads(args.sources)
    work = Path(args.work)
    if args.child in ("dask", "spark"):
        result = child_platform(args.child, sources, work)
    else:
        result = child_single(args.child, sources, work)
    Path(args.result).write_text(json.dumps(result, indent=1, default=str))
    return 0


# ---------------------------------------------------------------- parent: run, verify, report


def run_child(config: str, data: dict, work: Path, timeout: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    result_file = work / "result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
           "AIRFLOW_HOME": str(work.parent / "airflow_home")}
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW_CONN_")}  # always local clusters
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", config, "--sources", json.dumps(data["sources"]),
           "--work", str(work), "--result", str(result_file)]
    with open(work / "child.log", "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        mon = RssMonitor(proc.pid, str(work))
        mon.start()
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            mem = mon.finish()
        total = time.perf_counter() - t0
    if rc != 0 or not result_file.exists():
        raise SystemExit(f"{config} at {data['rows']:,} rows failed (exit {rc}); see {work / 'child.log'}")
    result = json.loads(result_file.read_text())
    result.update(mem)
    result["process_s"] = total
    result["lake"] = str(work / "lake")
    return result


def _dag_conf(data: dict) -> str:
    return json.dumps({"backend": DAG_BACKEND, "athletes_path": data["sources"]["athletes"],
                       "regions_path": data["sources"]["regions"], "venues_path": data["sources"]["venues"]})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(home: Path, sql: str, *args) -> list:
    import sqlite3

    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        return db.execute(sql, args).fetchall()


def _seconds(a: str | None, b: str | None) -> float | None:
    """Seconds between two timestamps as Airflow stores them in SQLite."""
    from datetime import datetime

    if not a or not b:
        return None
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def _stop_group(pgid: int, grace: float) -> None:
    """SIGTERM a process group, then SIGKILL what is left of it after ``grace`` s (not only its leader)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_dag(data: dict, work: Path, timeout: float) -> dict:
    """A whole olympics_etl run through the real scheduler and executor: ``bin/run``, as ``make run``.

    The embedded runtime (api-server, scheduler + LocalExecutor, dag-processor, triggerer, with
    the embedded defaults of ``bin/env.sh``, and the owner of the runtime's Dask engine, which the
    run's ``start_cluster`` attaches to; the run is triggered once that engine is ready). Own
    AIRFLOW_HOME (SQLite) and lake. The scheduler's own cron runs are off
    (``[scheduler] use_job_schedule = False``), so the one run is the triggered run (no
    concurrent @daily run competing for ``max_active_runs=1``). Time: from the trigger (the
    run's ``queued_at``) to the run's ``end_date``, as the scheduler recorded them; per task:
    ``task_instance.duration`` plus the wait between the run's start and each task's start.
    """
    work.mkdir(parents=True, exist_ok=True)
    home = work / "airflow_home"
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "ETL_RUNTIME_"))
           and k not in ("ETL_LAKE_ROOT", "SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
    # bin/run's runtime: ETL_RUNTIME_DIR=$AIRFLOW_HOME/runtime; only the engine the run uses (a Spark JVM
    # idling beside it would only add to the memory figures).
    env.update(AIRFLOW_HOME=str(home), ETL_LAKE_ROOT=str(work / "lake"), ETL_RUNTIME_ENGINES=DAG_BACKEND,
               AIRFLOW__API__PORT=str(port), AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
               AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5")
    airflow = str(ROOT / "bin" / "airflow")

    def cli(*args: str) -> None:
        with open(work / "cli.log", "ab") as log:
            subprocess.run([airflow, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT), check=True,
                           timeout=600)

    cli("version")  # initialise AIRFLOW_HOME (secrets, DB): not timed
    with open(work / "child.log", "wb") as log:
        proc = subprocess.Popen([str(ROOT / "bin" / "run")], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
                                start_new_session=True)
    mon = RssMonitor(proc.pid, str(work))
    mon.start()
    deadline = time.monotonic() + timeout

    def wait(what: str, predicate, poll: float = 0.5):
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if proc.poll() is not None:
                raise SystemExit(f"dag: bin/run exited ({proc.returncode}) waiting for {what}; "
                                 f"see {work / 'child.log'}")
            time.sleep(poll)
        raise SystemExit(f"dag: timed out waiting for {what}; see {work / 'child.log'}")

    try:
        t_up = time.perf_counter()
        wait("the DAG to be parsed", lambda: (home / "airflow.db").exists() and _query(
            home, "select 1 from dag where dag_id='olympics_etl'"))
        sys.path.insert(0, str(ROOT))
        from include.etl.clusters.runtime import current

        wait(f"the runtime's {DAG_BACKEND} engine", lambda: current(DAG_BACKEND, home / "runtime"))
        up_s = time.perf_counter() - t_up
        cli("dags", "unpause", "olympics_etl")
        t0 = time.perf_counter()
        cli("dags", "trigger", "olympics_etl", "--logical-date", f"{DS}T00:00:00+00:00", "-c", _dag_conf(data))
        trigger_cli_s = time.perf_counter() - t0

        def finished():
            runs = _query(home, "select run_id, run_type, state, queued_at, start_date, end_date from dag_run "
                                "where dag_id='olympics_etl'")
            done = [r for r in runs if r[2] in ("success", "failed")]
            return (runs, done[0]) if done else None

        runs, run = wait("the triggered run to finish", finished)
        observed_s = time.perf_counter() - t0
        tasks = _query(home, "select task_id, state, start_date, end_date, duration, queued_dttm from task_instance "
                             "where dag_id='olympics_etl' and run_id=?", run[0])
    finally:
        proc.send_signal(signal.SIGTERM)  # bin/run stops its components, tasks and clusters
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            _stop_group(proc.pid, 10)
            proc.wait()
        mem = mon.finish()
    if run[2] != "success" or len(runs) != 1:
        raise SystemExit(f"dag at {data['rows']:,} rows: runs {runs}, tasks {tasks}; see {work / 'child.log'}")
    import re

    ready = re.findall(rf"{DAG_BACKEND} engine ready in ([0-9.]+) s", (work / "child.log").read_text(errors="replace"))
    _, _, _, queued_at, started, ended = run
    ingests = [(_seconds(started, t[2]), _seconds(started, t[3])) for t in tasks if t[0].startswith("ingest_")]
    return {
        "ingest_span_s": max(e for _, e in ingests) - min(b for b, _ in ingests),  # the three run in parallel
        "wall_s": _seconds(queued_at, ended), "process_s": observed_s, **mem, "lake": str(work / "lake"),
        "jobs_s": {t[0]: t[4] for t in sorted(tasks, key=lambda t: t[2] or "")},
        "task_start_after_run_start_s": {t[0]: _seconds(started, t[2]) for t in tasks},
        "queued_to_running_s": _seconds(queued_at, started), "trigger_cli_s": trigger_cli_s,
        "runtime_up_s": up_s, "run_id": run[0], **({"cluster_start_s": float(ready[0])} if ready else {}),
        "engine_starts": len(ready),
        "note": "bin/run (scheduler + LocalExecutor, one process per task, embedded defaults); wall: trigger (queued_at) "
                "to run end_date; includes the start/stop cluster tasks (an attach to the runtime's Dask engine, ready before "
                "the trigger, and its release); @daily runs off (use_job_schedule=False)",
    }


def run_dagtest(data: dict, work: Path, timeout: float) -> dict:
    """A whole olympics_etl run with `airflow dags test` (all tasks in one process, no scheduler)."""
    work.mkdir(parents=True, exist_ok=True)
    home = work / "airflow_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(AIRFLOW_HOME=str(home), ETL_LAKE_ROOT=str(work / "lake"))  # a one-off run: its engine in its process
    airflow = str(ROOT / "bin" / "airflow")
    with open(work / "init.log", "wb") as log:  # initialise AIRFLOW_HOME (secrets, DB): not timed
        subprocess.run([airflow, "dags", "list"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT), check=True)
    cmd = [airflow, "dags", "test", "olympics_etl", DS, "-c", _dag_conf(data)]
    with open(work / "child.log", "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        mon = RssMonitor(proc.pid, str(work))
        mon.start()
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            mem = mon.finish()
        wall = time.perf_counter() - t0
    text = (work / "child.log").read_text(errors="replace")
    finished = [line for line in text.splitlines() if "DagRun Finished" in line]
    if rc != 0 or not finished or "state=success" not in finished[-1]:
        raise SystemExit(f"dag at {data['rows']:,} rows failed (exit {rc}); see {work / 'child.log'}")
    return {"wall_s": wall, "process_s": wall, **mem, "lake": str(work / "lake"), "jobs_s": dag_task_times(text),
            "note": "airflow dags test: all tasks in one process; wall includes Airflow start, DAG parse, and the start/stop "
                    "of the run's own Dask cluster (in that process)"}


def dag_task_times(text: str) -> dict[str, float]:
    """Per-task wall time from the `[DAG TEST] starting task_id=X` / `end task task_id=X` log lines."""
    import re
    from datetime import datetime

    starts, out = {}, {}
    for line in text.splitlines():
        m = re.match(r"(\S+Z) .*\[DAG TEST\] (starting|end task) task_id=(\S+)", line)
        if not m:
            continue
        ts = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        if m.group(2) == "starting":
            starts[m.group(3)] = ts
        elif m.group(3) in starts:
            out[m.group(3)] = (ts - starts[m.group(3)]).total_seconds()
    return out


def read_table(lake: str, table: str):
    """A table's ``ds`` partition as a pyarrow dataset: through Delta for the platform's lake (its
    directories also hold staged files), as a Parquet folder for Polars' and DuckDB's outputs."""
    import pyarrow.dataset as pads

    path = Path(lake) / "olympics" / table
    if (path / "_delta_log").is_dir():
        from deltalake import DeltaTable

        dataset = DeltaTable(str(path)).to_pyarrow_dataset(file_pruning_predicate=[("ds", "=", DS)])
        # The files of the partition, as plain Parquet (no partition column), on the Delta dataset's filesystem
        # (its file paths are relative to the table).
        return pads.dataset(dataset.files, format="parquet", partitioning=None, filesystem=dataset.filesystem)
    return pads.dataset(str(path / f"ds={DS}"), format="parquet", partitioning=None)


def verify(results: dict[str, dict], rows: int) -> dict:  # noqa: C901 - one flat list of equality checks
    """Marts equal across configs (sorted; avg_age within 1e-9 relative; nulls equal); enriched counts equal."""
    import math

    import polars as pl

    problems, facts = [], {}
    ref_name = next(iter(results))
    ref = {}
    for config, res in results.items():
        if "summaries" in res:
            for name, s in res["summaries"].items():
                if name.startswith("ingest_") and s.get("rows_rejected"):
                    problems.append(f"{config}: {name} rejected {s['rows_rejected']} rows (the generated data has none)")
        ds = read_table(res["lake"], "enriched")
        n = ds.count_rows()
        athletes_n = read_table(res["lake"], "athletes").count_rows()
        schema_names = sorted(ds.schema.names)
        tbl = ds.to_table()
        nulls = {c: tbl.column(c).null_count for c in tbl.column_names}
        del tbl
        marts = {}
        for mart, keys in MART_KEYS.items():
            df = pl.from_arrow(read_table(res["lake"], mart).to_table())
            cols = ["year", "season", "avg_age", "n"] if mart == "avg_age_by_year" else \
                ["year", "season", "region", "gold", "silver", "bronze", "total"]
            df = df.select(cols).with_columns(pl.col("year").cast(pl.Int64), pl.col("season").cast(pl.String))
            marts[mart] = df.sort(keys, nulls_last=True)
        facts[config] = {"enriched_rows": n, "athletes_rows": athletes_n,
                         "mart_rows": {m: d.height for m, d in marts.items()}}
        if config == ref_name:
            ref = {"n": n, "athletes": athletes_n, "nulls": nulls, "cols": schema_names, "marts": marts}
            if n != rows or athletes_n != rows:
                problems.append(f"{config}: enriched has {n} rows, athletes {athletes_n}; expected {rows}")
            continue
        if n != ref["n"] or athletes_n != ref["athletes"]:
            problems.append(f"{config}: enriched rows {n} / athletes {athletes_n} != {ref_name}: {ref['n']} / {ref['athletes']}")
        if schema_names != ref["cols"]:
            problems.append(f"{config}: enriched columns {schema_names} != {ref_name}: {ref['cols']}")
        diff_nulls = {c: (nulls.get(c), ref["nulls"].get(c)) for c in ref["nulls"] if nulls.get(c) != ref["nulls"].get(c)}
        if diff_nulls:
            problems.append(f"{config}: enriched null counts differ from {ref_name} (config, ref): {diff_nulls}")
        for mart, df in marts.items():
            other = ref["marts"][mart]
            if df.height != other.height:
                problems.append(f"{config}: {mart} has {df.height} rows, {ref_name} {other.height}")
                continue
            for col in df.columns:
                a, b = df[col].to_list(), other[col].to_list()
                for i, (x, y) in enumerate(zip(a, b, strict=True)):
                    if (x is None) != (y is None):
                        problems.append(f"{config}: {mart}.{col} row {i}: {x!r} vs {ref_name} {y!r} (null mismatch)")
                        break
                    if x is None:
                        continue
                    if col == "avg_age":
                        if not math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0):
                            problems.append(f"{config}: {mart}.avg_age row {i}: {x!r} vs {ref_name} {y!r}")
                            break
                    elif x != y:
                        problems.append(f"{config}: {mart}.{col} row {i}: {x!r} vs {ref_name} {y!r}")
                        break
    if problems:
        msg = "\n  ".join(problems)
        raise SystemExit(f"RESULTS DIFFER at {rows:,} rows; no times reported:\n  {msg}")
    return facts


def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def cpu_model() -> str:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
        return platform.processor() or "?"

    import psutil

    mem_bytes = psutil.virtual_memory().total
    versions = {}
    for pkg in ("polars", "duckdb", "dask", "distributed", "pyspark", "pyarrow", "pandas", "narwhals", "apache-airflow",
                "psutil", "matplotlib"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "-"
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    except (OSError, IndexError):
        java = "-"
    return {"nproc": os.cpu_count(), "sched_cpus": len(os.sched_getaffinity(0)), "mem_gib": round(mem_bytes / 2**30, 1),
            "cpu": cpu_model(), "python": platform.python_version(), "kernel": platform.release(), "java": java,
            "versions": versions}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


FIELDS = ["config", "rows", "wall_s", "rows_per_s", "csv_mb_per_s", "peak_rss_total_mb", "peak_rss_worker_mb",
          "peak_rss_driver_mb", "cluster_start_s", "overhead_s", "ingest_s", "enrich_s", "aggregate_s",
          "process_s", "csv_mb", "load_before", "load_after"]


def row_of(config: str, rows: int, data: dict, res: dict) -> dict:
    jobs = res.get("jobs_s", {})
    wall = res["wall_s"]
    ingest = sum(v for k, v in jobs.items() if k.startswith("ingest_")) if jobs else None
    ingest = res.get("ingest_span_s", ingest)  # dag: first ingest start to last ingest end (they overlap)
    r = {
        "config": config, "rows": rows, "wall_s": round(wall, 3), "rows_per_s": round(rows / wall),
        "csv_mb_per_s": round(data["bytes"] / 1e6 / wall, 1), "peak_rss_total_mb": res["peak_rss_total_mb"],
        "peak_rss_worker_mb": res["peak_rss_worker_mb"], "peak_rss_driver_mb": res["peak_rss_driver_mb"],
        "cluster_start_s": round(res["cluster_start_s"], 2) if "cluster_start_s" in res else
        (round(jobs["start_cluster"], 2) if "start_cluster" in jobs else ""),
        "overhead_s": round(res["overhead_s"], 3) if "overhead_s" in res else "",
        "ingest_s": round(ingest, 2) if ingest is not None else "",
        "enrich_s": round(jobs.get("enrich", jobs.get("enrich_athletes")), 2) if jobs else "",
        "aggregate_s": round(jobs["aggregate"], 2) if "aggregate" in jobs else "",
        "process_s": round(res["process_s"], 1), "csv_mb": round(data["bytes"] / 1e6, 1),
        "load_before": res.get("load_before", ""), "load_after": res.get("load_after", ""),
    }
    return r


def write_reports(out: Path, rows_out: list[dict], meta: dict, extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows_out)

    def fmt(v, spec=""):
        return "–" if v in ("", None) else format(v, spec)

    lines = [
        "# Benchmark results (generated by `bench/run.py`)", "",
        f"Run started {meta['started']}, finished {meta['finished']}. Every figure below comes from that run.", "",
        "| config | rows | wall s | rows/s | MB/s of CSV | peak RSS total MB | peak RSS per worker MB | cluster start s | per-task overhead s | ingest s | enrich s | aggregate s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows_out:
        lines.append(
            f"| {r['config']} | {r['rows']:,} | {r['wall_s']:.2f} | {r['rows_per_s']:,} | {r['csv_mb_per_s']} | "
            f"{r['peak_rss_total_mb']:,.0f} | {r['peak_rss_worker_mb']:,.0f} | {fmt(r['cluster_start_s'])} | "
            f"{fmt(r['overhead_s'])} | {fmt(r['ingest_s'])} | {fmt(r['enrich_s'])} | {fmt(r['aggregate_s'])} |"
        )
    m = meta["machine"]
    lines += [
        "", "* wall s: the chain ingest x3 -> enrich -> aggregate on the runtime's engine, excluding the engine's "
        "start/stop. For `dag`: a whole olympics_etl run on Dask under `bin/run` (scheduler + LocalExecutor, a "
        "process per task, the runtime's Dask engine ready before the trigger), from the trigger (the run's "
        "queued_at) to the run's end_date, including the start/stop cluster tasks (attach, release) and the "
        "scheduler's hand-offs between tasks; for `dagtest`: the whole `airflow dags test` command, including "
        "Airflow start-up, DAG parsing and the start/stop of the run's own in-process Dask cluster.",
        "* cluster start s: the runtime's engine, from its owner's spawn (`python -m include.etl.clusters.runtime`) "
        "to its state `ready`; for `dag` as the owner logged it under `bin/run`.",
        "* MB/s of CSV: size of the three input CSVs / wall s.",
        "* peak RSS total: peak over 0.2 s samples of the summed RSS of the benchmark child, its descendants and every "
        "engine process (found by the `ETL_CLUSTER_WORKDIR` it inherited). RSS double-counts shared pages (forked workers).",
        "* peak RSS per worker: the largest single process other than the driver (Dask worker, Spark JVM or Python "
        "worker); for Polars/DuckDB the process itself.",
        "* per-task overhead: median of 5 `noop` jobs through `hook.run_job` (new client per job, as the operator does).",
        "", "## Machine", "",
        f"* nproc: {m['nproc']} (usable: {m['sched_cpus']}); memory: {m['mem_gib']} GiB; CPU: {m['cpu']}",
        f"* kernel {m['kernel']}; Python {m['python']}; {m['java']}",
        "* " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"* load at start: `{meta['load_start']}`",
        f"* load at end: `{meta['load_end']}`",
        "* One run per figure (no repetitions); the load averages per configuration are below. A load near or above "
        "the core count means something else competed for the CPUs.",
        "", "## Load and per-config detail", "",
        "| config | rows | load avg before | load avg after | peak RSS driver MB | biggest worker process |",
        "| --- | ---: | --- | --- | ---: | --- |",
    ]
    for r in rows_out:
        d = extra[(r["config"], r["rows"])]
        lines.append(f"| {r['config']} | {r['rows']:,} | {r['load_before']} | {r['load_after']} | "
                     f"{r['peak_rss_driver_mb']:,.0f} | `{_label(d.get('peak_worker_cmd', ''))[:90]}` |")
    lines += ["", "## Per-job times (s)", "", "| config | rows | jobs | noop runs |", "| --- | ---: | --- | --- |"]
    for r in rows_out:
        d = extra[(r["config"], r["rows"])]
        jobs = ", ".join(f"{k} {v:.2f}" for k, v in d.get("jobs_s", {}).items()) or "–"
        noops = ", ".join(f"{v:.3f}" for v in d.get("noop_s", [])) or "–"
        lines.append(f"| {r['config']} | {r['rows']:,} | {jobs} | {noops} |")
    lines += ["", "## Equality checks", ""]
    for rows, facts in meta["checks"].items():
        lines.append(f"* {int(rows):,} rows: all configurations agree ({json.dumps(facts)})")
    (out / "results.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for config in dict.fromkeys(r["config"] for r in rows_out):
        pts = sorted((r["rows"], r["wall_s"]) for r in rows_out if r["config"] == config)
        ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], marker="o", label=config)
    ax.set_xlabel("rows (millions)")
    ax.set_ylabel("wall time of the chain (s)")
    ax.set_title("Olympics chain: time vs rows")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "time_vs_rows.png", dpi=110)


def _label(cmd: str) -> str:
    cmd = " ".join(cmd.split())
    if cmd.startswith("bash ") and "spark-class" in cmd:
        return "java: the Spark Connect server JVM (started as bash spark-class, same pid)"
    if "multiprocessing.spawn" in cmd:
        return "dask worker (spawned by its nanny)"
    return cmd


def report_from(raw_file: Path, out: Path, data_dir: Path) -> int:
    raw = json.loads(raw_file.read_text())
    meta, rows_out, extra = raw["meta"], [], {}
    for key, res in raw["results"].items():
        config, rows = key.rsplit("@", 1)
        rows = int(rows)
        data = input_set(data_dir, rows, int(res.get("seed", 0)))
        res["peak_worker_cmd"] = _label(res.get("peak_worker_cmd", ""))
        rows_out.append(row_of(config, rows, data, res))
        extra[(config, rows)] = res
    write_reports(out, rows_out, meta, extra)
    print(f"rebuilt {out}/results.csv, results.md, time_vs_rows.png from {raw_file}")
    return 0


def leftovers(prefix: str) -> list[int]:
    return sorted(_env_pids(prefix))


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - option handling
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"any of {', '.join(ALL_CONFIGS)}")
    p.add_argument("--large-rows", type=int, default=0,
                   help="then this many rows on --large-configs only: the far end of the time-against-rows curve")
    p.add_argument("--large-configs", default="dask,duckdb")
    p.add_argument("--data-dir", default="/tmp/bench-data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="work directory (default: a new temp dir, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (outputs, logs)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--report-from", metavar="RAW_JSON",
                   help="only rebuild results.csv/.md/.png in --out from a raw.json of an earlier run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--sources", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)

    if args.report_from:
        return report_from(Path(args.report_from), Path(args.out), Path(args.data_dir))

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = (set(configs) | set(args.large_configs.split(","))) - set(ALL_CONFIGS)
    if unknown:
        p.error(f"unknown configs {sorted(unknown)}; choose from {', '.join(ALL_CONFIGS)}")
    work_root = Path(args.work or tempfile.mkdtemp(prefix="etl-bench-"))
    work_root.mkdir(parents=True, exist_ok=True)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_start": uptime(), "machine": machine(), "checks": {}}
    print(f"machine: {meta['machine']}\nload: {meta['load_start']}\nwork dir: {work_root}", flush=True)
    rows_out, extra = [], {}
    plan = [(rows, configs) for rows in args.rows]
    if args.large_rows:
        plan.append((args.large_rows, [c.strip() for c in args.large_configs.split(",") if c.strip()]))
    try:
        for rows, row_configs in plan:
            data = input_set(Path(args.data_dir), rows, args.seed)
            print(f"== {rows:,} rows: {data['bytes'] / 1e6:.1f} MB of CSV", flush=True)
            results = {}
            for config in row_configs:
                work = work_root / f"r{rows}" / config
                if work.exists():
                    shutil.rmtree(work)
                load_before = os.getloadavg()
                runner = {"dag": run_dag, "dagtest": run_dagtest}.get(config)
                res = runner(data, work, args.timeout) if runner else run_child(config, data, work, args.timeout)
                res["load_before"] = " ".join(f"{x:.2f}" for x in load_before)
                res["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
                left = leftovers(str(work))
                if left:
                    raise SystemExit(f"{config}: cluster processes still running after the stop: {left}")
                results[config] = res
                print(f"   {config}: wall {res['wall_s']:.2f} s, start {res.get('cluster_start_s', '-')}, "
                      f"overhead {res.get('overhead_s', '-')}, peak RSS {res['peak_rss_total_mb']} MB, "
                      f"jobs {res.get('jobs_s', {})}", flush=True)
            meta["checks"][str(rows)] = verify(results, rows)  # before any time is reported
            print(f"   results equal across {', '.join(results)}", flush=True)
            for config, res in results.items():
                rows_out.append(row_of(config, rows, data, res))
                extra[(config, rows)] = res
            for config in results:  # free disk space: outputs were checked
                if not args.keep:
                    shutil.rmtree(work_root / f"r{rows}" / config / "lake", ignore_errors=True)
            # Reports after every row count: a later, bigger run that fails keeps the figures so far.
            meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
            meta["load_end"] = uptime()
            write_reports(Path(args.out), rows_out, meta, extra)
            (Path(args.out) / "raw.json").write_text(json.dumps(
                {"meta": meta, "results": {f"{c}@{r}": v for (c, r), v in extra.items()}}, indent=1, default=str))
            print(f"wrote {args.out}/results.csv, results.md, time_vs_rows.png, raw.json", flush=True)
    finally:
        left = leftovers(str(work_root))
        if left:
            print(f"WARNING: processes still running under {work_root}: {left}", file=sys.stderr)
        if not args.keep and not args.work and not left:
            shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
