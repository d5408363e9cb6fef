"""Stop a local Spark Connect server after it has been idle too long (leak safety net); serve its job endpoint.

A Dask scheduler has ``--idle-timeout``; a Spark Connect server has nothing alike (its session
timeout closes sessions, never the server). When a run's teardown never runs (Airflow itself
stopped or crashed mid-run), this watcher, started next to the server, stops it after
``--idle-timeout`` seconds without a running or newly finished Spark job, as seen by the
server's own monitoring REST API (``{ui}/api/v1/applications/{app}/jobs``), and without a job
of its endpoint in flight. ``--idle-timeout 0`` never stops the server (the watcher then only
serves the endpoint).

With ``--address``, the same process also serves the server's job endpoint
(:mod:`include.etl.clusters.spark_jobs`): the Spark Connect client, pandas and pyarrow are
imported here once, so that job tasks need not import them; the endpoint's URL is written to
``--endpoint-file`` once it answers.

It never stops a server it cannot observe: while the UI does not answer it only waits. It
exits by itself when the server exits, and the teardown kills it with the server.

    python -m include.etl.clusters.idle_watch --pid PID --ui http://127.0.0.1:4040 --idle-timeout 3600 \\
        --marker SparkConnectServer [--address sc://127.0.0.1:15002 --bind-host 127.0.0.1 --endpoint-file F]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from include.etl.clusters import is_alive, kill_groups

log = logging.getLogger("etl.idle_watch")


def _parse_time(text: str | None) -> float | None:
    """Spark's REST timestamps, e.g. ``2026-11-21T10:00:00.123GMT``, as epoch seconds."""
    if not text:
        return None
    try:
        return dt.datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return None


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def last_activity(ui: str) -> tuple[bool, float | None]:
    """(a job is running, time of the latest job submission or completion) from the Spark UI's REST API."""
    apps = _get(f"{ui.rstrip('/')}/api/v1/applications")
    busy, latest = False, None
    for app in apps:
        for job in _get(f"{ui.rstrip('/')}/api/v1/applications/{app['id']}/jobs"):
            if job.get("status") == "RUNNING":
                busy = True
            for key in ("submissionTime", "completionTime"):
                ts = _parse_time(job.get(key))
                if ts is not None and (latest is None or ts > latest):
                    latest = ts
    return busy, latest


def watch(pid: int, ui: str, idle_timeout: float, marker: str, poll: float = 5.0,
          activity: Callable[[], tuple[bool, float | None]] | None = None) -> str:
    """Block until the server exits (returns ``"exited"``) or was stopped for idling (``"stopped"``).

    ``activity`` (the job endpoint's) reports jobs in flight and the latest job start or end:
    both count as activity, like the server's own Spark jobs.
    """
    idle_since = time.time()
    while True:
        if not is_alive(pid, marker):
            log.info("server %s exited; nothing to watch", pid)
            return "exited"
        if idle_timeout > 0:
            try:
                busy, latest = last_activity(ui)
            except (OSError, ValueError) as exc:  # UI not up yet, or going away: never act blind
                log.debug("Spark UI %s did not answer: %s", ui, exc)
            else:
                if activity is not None:
                    jobs_busy, jobs_latest = activity()
                    busy = busy or jobs_busy
                    if jobs_latest is not None and (latest is None or jobs_latest > latest):
                        latest = jobs_latest
                now = time.time()
                if busy:
                    idle_since = now
                elif latest is not None and latest > idle_since:
                    idle_since = latest
                if now - idle_since >= idle_timeout:
                    log.warning(
                        "Spark Connect server %s idle for %.0f s (limit %.0f s, ETL_CLUSTER_IDLE_TIMEOUT): no teardown "
                        "stopped it, so stopping it now", pid, now - idle_since, idle_timeout,
                    )
                    kill_groups([pid], marker, grace=10)
                    return "stopped"
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True, help="the server's pid (its process-group leader)")
    parser.add_argument("--ui", required=True, help="the server's Spark UI address")
    parser.add_argument("--idle-timeout", type=float, required=True, help="seconds (0: never stop the server)")
    parser.add_argument("--marker", required=True, help="text of the server's command line (guards pid reuse)")
    parser.add_argument("--poll", type=float, default=5.0)
    parser.add_argument("--address", help="the server's sc:// address: also serve its job endpoint")
    parser.add_argument("--bind-host", default="127.0.0.1", help="where the job endpoint listens (ETL_BIND_HOST)")
    parser.add_argument("--endpoint-file", type=Path, help="where to write the job endpoint's URL once it answers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: _exit(args.address))
    log.info("watching Spark Connect server %s (UI %s): %s; my pid %s", args.pid, args.ui,
             f"stop it after {args.idle_timeout:.0f} s idle" if args.idle_timeout > 0 else "no idle timeout",
             os.getpid())
    activity = None
    if args.address:
        from include.etl.clusters.spark_jobs import serve

        try:
            activity = serve(args.address, args.bind_host, args.endpoint_file).activity
        except Exception:  # noqa: BLE001 - the idle watch goes on; job tasks then run their jobs themselves
            log.exception("the job endpoint could not start")
    watch(args.pid, args.ui, args.idle_timeout, args.marker, args.poll, activity)
    _exit(args.address)
    return 0


def _exit(address: str | None) -> None:
    """Exit now, whatever the endpoint's jobs are doing (their clients would retry against a dead server for
    minutes, and pyspark's exit hook too): their task processes see the connection drop and fail retryably."""
    if address:
        from include.etl.clusters.spark_local import close_clients

        close_clients(address)  # no clean-up calls to the (dead or dying) server
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
