"""Processes of an Airflow deployment started natively by a test, and its REST API.

Each component runs in its own session (process group), is recorded by name and stopped by
process group, so a test never leaves a scheduler, worker or JVM behind. :func:`ui_deployment`
starts the components of a UI test (tests/e2e/test_ui_browser.py, test_ui_dashboard.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

_HANDED_OUT: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(also_free: tuple[int, ...] = ()) -> int:
    """A free loopback port below the kernel's ephemeral range that no other test process draws,
    never handed out twice by this one (nor ``port + o`` for each ``o`` of ``also_free``, checked free too).

    Why each rule (each was seen in a whole run):

    * below the ephemeral range: a port the kernel hands out (bind to port 0) can be handed out
      again as soon as it is closed: an engine binding port 0 (a Dask worker, a JVM) took the API
      port of a deployment between its choice and the api-server's bind;
    * one residue class per xdist worker (``port % workers == worker``): the two test processes drew
      the same port for two deployments in the same second, and the second api-server could not bind;
    * never twice: a port stays free (so drawable again) until its server binds it, seconds later.
    """
    import random

    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = (10000, ephemeral_low) if ephemeral_low - 10000 >= 1000 else (1024, 65535)
    high -= max(also_free, default=0)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    mine = int((os.environ.get("PYTEST_XDIST_WORKER") or "gw0").removeprefix("gw") or 0) % workers
    for _ in range(1000):
        port = random.randrange(low, high)
        port -= (port - mine) % workers  # this worker's residue class
        ports = (port, *(port + o for o in also_free))
        if port < low or any(p in _HANDED_OUT for p in ports) or not all(_bindable(p) for p in ports):
            continue
        _HANDED_OUT.update(ports)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {low}..{high}")


class Stack:
    """Processes started by this test, recorded by name and stopped by process group."""

    def __init__(self, base: Path):
        self.base = base
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str, chars: int = 3000) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")[-chars:]

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def stop(self, name: str, timeout: float = 30) -> None:
        stop_group(self.procs[name], timeout)

    def stop_all(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.procs.values():
                try:
                    os.killpg(proc.pid, sig)  # the group outlives a leader that already exited
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(p.poll() is None for p in self.procs.values()):
                time.sleep(0.5)


def spark_master_ports(log: Path, proc: subprocess.Popen, timeout: float = 120) -> tuple[str, int]:
    """The master URL and web UI port a Spark standalone master really bound, read from its log.

    A master whose ``--port`` or ``--webui-port`` is taken moves to the next port without failing
    (seen in a whole run: the test then read another server's HTML page on the port it had asked
    for), so nothing may trust the requested ports.
    """
    import re

    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        url = re.search(r"Starting Spark master at (spark://\S+)", text)
        ui = re.search(r"Successfully started service 'MasterUI' on port (\d+)", text)
        if url and ui:
            return url.group(1), int(ui.group(1))
        assert proc.poll() is None, f"the Spark master exited ({proc.returncode}):\n{text[-3000:]}"
        assert time.monotonic() < deadline, f"the Spark master did not start in {timeout:.0f} s:\n{text[-3000:]}"
        time.sleep(0.5)


def spark_java_options() -> str:
    """JVM options for a test's own Spark JVMs (standalone daemons, servers): the suite's
    ``ETL_SPARK_JAVA_OPTIONS`` after this install's class-data archive, as the platform's own get."""
    from include.etl.clusters.spark_local import java_options
    from include.etl.settings import Settings

    return java_options(Settings.from_env(dict(os.environ)))


def stop_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the process group led by ``proc``; SIGKILL whatever of it is left after ``grace`` s.

    The leader exiting is not enough: `airflow standalone` exits on SIGTERM at once while its
    scheduler can stay in its shutdown with LocalExecutor workers for minutes.
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(proc.pid):
        proc.poll()
        time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def wait(what: str, predicate, timeout: float, stack: Stack | None = None, interval: float = 1.0):
    """Poll ``predicate`` until truthy; fail on timeout or, given a ``stack``, when one of its
    components dies (with every component's log tail)."""
    stack = stack or Stack(Path("."))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, urllib.error.URLError, ValueError):
            value = None
        if value:
            return value
        dead = [n for n in stack.procs if not stack.alive(n)]
        if dead:
            pytest.fail(f"{dead} exited while waiting for {what}:\n" + "\n".join(stack.log(n) for n in dead))
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}:\n" + "\n---\n".join(f"{n}: {stack.log(n)}" for n in stack.procs))


class Api:
    """``/api/v2`` with a JWT from ``/auth/token``, as the UI and any client use it."""

    def __init__(self, port: int, home: Path):
        self.base = f"http://127.0.0.1:{port}"
        self.home = home

    def token(self) -> str:
        password = json.loads((self.home / "simple_auth_manager_passwords.json").read_text())["admin"]
        req = urllib.request.Request(f"{self.base}/auth/token", method="POST",
                                     data=json.dumps({"username": "admin", "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)["access_token"]

    def __call__(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"{self.base}/api/v2/{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)


# ---------------------------------------------------------------- a UI deployment (api-server, scheduler, dag-processor)


def http_status(url: str, **headers: str) -> tuple[int, dict]:
    """Status and headers of a GET without following redirects (a 302 to the login stays a 302)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def artifacts_dir(name: str) -> Path:
    """``$ETL_TEST_ARTIFACTS/<name>`` (default ``tests/artifacts/<name>``), emptied: a test's screenshots."""
    import shutil

    out = Path(os.environ.get("ETL_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts") / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


@dataclass
class Deployment:
    """An Airflow deployment like `make run`'s, started by :func:`ui_deployment`."""

    base: Path
    home: Path
    lake: Path
    env: dict[str, str]
    stack: Stack
    api: Api

    @property
    def url(self) -> str:
        return self.api.base

    def password(self, user: str = "admin") -> str:
        return json.loads((self.home / "simple_auth_manager_passwords.json").read_text())[user]


UI_COMPONENTS = {  # no log server: the scheduler's would bind 0.0.0.0:8793 (the UI reads the local log files)
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}


@contextlib.contextmanager
def ui_deployment(template: Path, base: Path, dag_files: list[Path],
                  components: tuple[str, ...] = ("api-server", "scheduler", "dag-processor"),
                  **env_extra: str) -> Iterator[Deployment]:
    """api-server, scheduler and dag-processor (SQLite, LocalExecutor) on a fresh AIRFLOW_HOME, a free loopback port.

    ``template``: a migrated AIRFLOW_HOME (the ``migrated_home_template`` fixture), copied to
    ``base/airflow``; the DAG folder ``base/dags`` holds links to ``dag_files`` only; the lake is
    ``base/lake``. No scheduled runs (``use_job_schedule`` off: runs are triggered by the test),
    DAG files re-scanned every 5 s. ``env_extra`` adds or overrides environment variables. Every
    component is stopped (by process group) when the context exits.
    """
    import shutil

    from tests.e2e.airflow_env import project_env

    home = base / "airflow"
    shutil.copytree(template, home, ignore=shutil.ignore_patterns("airflow.cfg", "logs"))
    dags = base / "dags"
    dags.mkdir()
    for f in dag_files:
        (dags / f.name).symlink_to(f)
    lake = base / "lake"
    port = free_port()
    env = project_env(home, **{
        "ETL_LAKE_ROOT": str(lake),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        **env_extra,
    })
    stack = Stack(base)
    try:
        for component in components:
            stack.start(component, [str(ROOT / "bin" / "airflow"), *UI_COMPONENTS[component]], env)
        yield Deployment(base=base, home=home, lake=lake, env=env, stack=stack, api=Api(port, home))
    finally:
        stack.stop_all()
