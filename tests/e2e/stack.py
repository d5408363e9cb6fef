"""Processes of an Airflow deployment started natively by a test, and its REST API.

Each component runs in its own session (process group), is recorded by name and stopped by
process group, so a test never leaves a scheduler, worker or JVM behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
