"""Airflow's scheduler with the engines' clients imported first (``make run``).

LocalExecutor forks its workers from the scheduler when it starts, and each task process from a
worker (fork, with the GC frozen): what the scheduler imported before that, every task process
has without importing it. A job task then starts with its engine's client, pandas, pyarrow and
the job code loaded (1-3 s of imports per task otherwise) and runs its job's driver itself, with
no process between the task and its engine. Nothing here connects or starts a thread before the
fork: the modules are only imported.

    python -m include.etl.clusters.preload scheduler --skip-serve-logs   (what bin/airflow runs)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

MODULES = {
    "dask": ("distributed", "include.etl.clusters.dask_jobs", "etl_platform.hooks.dask_cluster"),
    "spark": ("pandas", "pyarrow", "pyarrow.parquet", "pyspark.sql.connect.session", "pyspark.sql.connect.dataframe",
              "pyspark.sql.connect.functions", "narwhals", "include.etl.engines.spark", "include.etl.reader",
              "include.etl.lake", "etl_platform.hooks.spark"),
}
COMMON = ("include.etl.jobs", "etl_platform.operators")


def preload(backends: Iterable[str]) -> list[str]:
    """Import the clients and job code of ``backends`` (and the operators); the modules imported.

    A module that fails to import is left out with a warning: the scheduler starts anyway, and a
    task that needs it imports it itself (and shows the error in its own log).
    """
    done = []
    for name in [*COMMON, *(m for b in backends for m in MODULES.get(b, ()))]:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as exc:  # noqa: BLE001 - any import error: the scheduler must start
            print(f"preload: not importing {name} in the scheduler: {type(exc).__name__}: {exc}", file=sys.stderr)
    return done


def main() -> int:
    import airflow  # noqa: F401 - first: it puts the plugins folder (etl_platform) on sys.path

    from include.etl.settings import Settings

    preload(Settings.from_env().runtime_engines)
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *sys.argv[1:]]
    return airflow_main()


if __name__ == "__main__":
    sys.exit(main())
