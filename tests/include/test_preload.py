"""The scheduler's preload (include/etl/clusters/preload.py): the engines' clients imported, nothing started.

LocalExecutor forks its workers from the scheduler, and the task processes from them: the
preload must leave only modules behind, no thread (a fork copies a thread's locks, not the
thread) and no open connection. That the scheduler of a deployment starts through it, and its
workers have the clients loaded: ``tests/e2e/test_executor_faults.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

CHECK = """
import json, sys, threading
import airflow
from include.etl.clusters.preload import preload
names = preload(sys.argv[1].split(","))
import psutil
print(json.dumps({"missing": [n for n in names if n not in sys.modules], "threads": threading.active_count(),
                  "sockets": len(psutil.Process().net_connections("all"))}))
"""


def _preload(backends: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHECK, backends], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_preload_imports_both_engines_clients_and_starts_nothing():
    result = _preload("dask,spark")
    assert result == {"missing": [], "threads": 1, "sockets": 0}, result



def test_a_module_that_fails_to_import_is_left_out_and_the_rest_is_loaded(monkeypatch, capsys):
    from include.etl.clusters import preload as mod

    monkeypatch.setattr(mod, "COMMON", ("include.etl.jobs", "include.etl.no_such_module"))
    monkeypatch.setattr(mod, "MODULES", {"dask": ("include.etl.clusters.dask_jobs",)})
    assert mod.preload(["dask"]) == ["include.etl.jobs", "include.etl.clusters.dask_jobs"]
    assert "not importing include.etl.no_such_module" in capsys.readouterr().err
