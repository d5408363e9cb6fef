"""Real local clusters for end-to-end tests: one Dask cluster and one Spark Connect server.

``local_engines(base)`` starts both with the platform's own launchers and yields
``{"dask": DaskEngine, "spark": SparkEngine}``; at exit it stops them and kills whatever still
carries a workdir under ``base``. ``tests/e2e/conftest.py`` shares one pair per test process
(``real_engines``): starting a JVM and a Dask cluster costs 20-40 s here, and the modules that
only read and write through the engines need no cluster of their own.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.procs import processes_with_env


def kill_leftovers(prefix: str) -> list[int]:
    """Safety net: SIGKILL every process that inherited a cluster workdir under ``prefix``."""
    left = processes_with_env(prefix)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@contextlib.contextmanager
def local_engines(base: Path) -> Iterator[dict[str, Any]]:
    from distributed import Client

    from etl_platform.hooks.spark import SparkClusterHook
    from include.etl.clusters import ClusterHandle
    from include.etl.clusters.dask_local import start_local_dask, stop_local_dask
    from include.etl.engines.dask import DaskEngine
    from include.etl.settings import Settings

    settings = Settings.from_env({"ETL_LAKE_ROOT": str(base / "lake"), "ETL_LOCAL_WORKERS": "2", "ETL_LOCAL_THREADS": "1"})
    dask_handle = start_local_dask(settings, base / "dask")
    spark_hook = SparkClusterHook(settings=settings)
    job_hook = SparkClusterHook(settings=settings)  # as SparkJobOperator does: a separate hook for the jobs
    spark_handle = None
    try:
        spark_handle = spark_hook.start_or_attach(base / "spark")
        with Client(dask_handle.address, timeout=30, set_as_default=False) as client:
            yield {"dask": DaskEngine(client), "spark": job_hook.engine(ClusterHandle.from_dict(spark_handle.to_dict()))}
    finally:
        job_hook.close()
        if spark_handle is not None:
            spark_hook.stop(spark_handle)
        stop_local_dask(dask_handle)
        kill_leftovers(str(base))
