"""The runtime's engine file as runs read it: starting (runs wait), ready, failed (runs are told why), stale."""

from __future__ import annotations

import json
import os
import threading
import time

import psutil
import pytest

from include.etl.clusters import ClusterStartError
from include.etl.clusters.runtime import current, engine_file, state, wait_for

HANDLE = {"backend": "dask", "address": "tcp://127.0.0.1:8786", "owned": True, "dashboard_url": None,
          "pids": [11, 12], "workdir": "/w", "conn_id": None, "extra": {"dashboard_port": 1}}


def _owner(pid: int | None = None) -> dict:
    pid = pid or os.getpid()
    return {"pid": pid, "started": psutil.Process(pid).create_time()}


def _write(root, data) -> None:
    """As the owner writes it: whole or not at all (a reader never sees half a file)."""
    path = engine_file(root, "dask")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def test_a_run_waits_while_the_engine_starts_and_gets_it_once_ready(tmp_path):
    _write(tmp_path, {"state": "starting", "owner": _owner()})
    assert current("dask", tmp_path) is None and state("dask", tmp_path)["state"] == "starting"
    timer = threading.Timer(1.0, _write, (tmp_path, {"state": "ready", "handle": HANDLE, "owner": _owner()}))
    timer.start()
    t0 = time.monotonic()
    handle = wait_for("dask", tmp_path, timeout=30)
    timer.join()
    assert 0.9 <= time.monotonic() - t0 < 30
    assert handle.address == HANDLE["address"] and handle.extra["dashboard_port"] == HANDLE["extra"]["dashboard_port"]
    assert handle.owned is False and handle.pids == [] and handle.workdir is None  # never a run's to stop
    assert handle.extra["runtime"] == str(tmp_path)


def test_an_engine_that_failed_to_start_fails_the_run_with_the_owners_error(tmp_path):
    _write(tmp_path, {"state": "failed", "error": "no Java found (JAVA_HOME=/nonexistent)", "owner": _owner()})
    with pytest.raises(ClusterStartError, match=r"the runtime's dask engine failed to start: no Java found"):
        wait_for("dask", tmp_path, timeout=30)


def test_an_engine_still_starting_after_the_timeout_is_an_error(tmp_path):
    _write(tmp_path, {"state": "starting", "owner": _owner()})
    with pytest.raises(ClusterStartError, match=r"still starting after 1 s"):
        wait_for("dask", tmp_path, timeout=1)


def test_a_file_whose_owner_is_gone_is_not_believed(tmp_path):
    assert wait_for("dask", tmp_path, timeout=30) is None  # no file: no runtime engine, at once
    _write(tmp_path, {"state": "ready", "handle": HANDLE, "owner": {"pid": os.getpid(), "started": 1.0}})  # pid reused
    assert state("dask", tmp_path) == {"state": "none"} and current("dask", tmp_path) is None
    _write(tmp_path, {"state": "starting", "owner": {"pid": 2**22 + 12345, "started": 1.0}})  # no such process
    t0 = time.monotonic()
    assert wait_for("dask", tmp_path, timeout=30) is None and time.monotonic() - t0 < 5
