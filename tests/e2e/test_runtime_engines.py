"""The runtime's engines outside a deployment: a one-off ``airflow dags test`` and an owner stopped
mid-start.

1. a one-off ``airflow dags test`` has an engine in its own process and leaves no process;
2. an engine owner (``python -m include.etl.clusters.runtime spark``, as ``make run`` starts it)
   stopped while its engine starts: nothing is left, nor its handle file.

Through a real ``bin/run``: the runs that attach to the runtime's engines, two of them at once
with one killed (``test_executor_faults.py``), and Ctrl-C stopping the engines with everything
else (``test_run_entrypoint.py``).
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.conftest import ROOT
from tests.e2e.airflow_env import bin_airflow, project_env
from tests.e2e.stack import wait
from tests.procs import processes_with_env

pytestmark = pytest.mark.slow

FIXTURES = ROOT / "tests" / "fixtures" / "dags"


def test_a_one_off_dags_test_leaves_no_process(airflow_home, tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "small_jobs.py").symlink_to(FIXTURES / "small_jobs.py")
    t0 = time.monotonic()
    out = bin_airflow(airflow_home, "dags", "test", "small_jobs", "2024-07-05", "-c", '{"backend": "dask"}',
                      AIRFLOW__CORE__DAGS_FOLDER=str(dags), ETL_RUNTIME_DIR=str(tmp_path / "no-runtime"))
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    left = processes_with_env(str(airflow_home))
    assert left == [], f"`dags test` left cluster processes running: {left}"
    text = out.stdout + out.stderr
    assert "A one-off run" in text and "state=success" in text, text[-3000:]
    print(f"dags test: {time.monotonic() - t0:.1f} s, nothing left")


def test_an_owner_stopped_while_its_engine_starts_leaves_nothing(tmp_path):
    import subprocess
    import sys


    env = project_env(tmp_path / "airflow", ETL_RUNTIME_DIR=str(tmp_path / "rt"))
    with open(tmp_path / "owner.log", "wb") as log:
        owner = subprocess.Popen([sys.executable, "-m", "include.etl.clusters.runtime", "spark"], env=env, cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait("the owner to be starting its engine",
             lambda: (tmp_path / "rt" / "spark.json").exists() and processes_with_env(str(tmp_path / "rt")), 120)
        assert json.loads((tmp_path / "rt" / "spark.json").read_text())["state"] == "starting"
        t0 = time.monotonic()
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(30) == 0, (tmp_path / "owner.log").read_text()[-3000:]
        elapsed = time.monotonic() - t0
    finally:
        if owner.poll() is None:
            owner.kill()
    assert wait("the engine's processes to end", lambda: not processes_with_env(str(tmp_path / "rt")), 15)
    assert not (tmp_path / "rt" / "spark.json").exists()
    assert "stopped while the spark engine was starting" in (tmp_path / "owner.log").read_text()
    print(f"owner stopped mid-start in {elapsed:.1f} s")
