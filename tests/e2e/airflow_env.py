"""Run the project's bin/airflow in an isolated AIRFLOW_HOME and lake."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def project_env(home: Path, **extra: str) -> dict[str, str]:
    # Nothing of this test process's own state: no Airflow/ETL settings, and no Spark Connect
    # mode that pyspark exports once a session was opened in-process.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "ETL_")) and k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
    env.update(AIRFLOW_HOME=str(home), ETL_LAKE_ROOT=str(home / "lake"),
               ETL_SPARK_JAVA_OPTIONS=os.environ.get("ETL_SPARK_JAVA_OPTIONS", ""))
    env.update(extra)
    return env


def bin_airflow(home: Path, *args: str, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "bin" / "airflow"), *args], env=project_env(home, **extra), capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
    )
