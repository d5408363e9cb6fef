"""Pytest fixtures for testing a pipeline end to end: load with ``-p include.etl.testing.pytest_plugin``
or ``pytest_plugins = ["include.etl.testing.pytest_plugin"]`` (``tests/conftest.py`` does).

* ``engine_runtime`` (session): the runtime's Dask and Spark engines, as ``make run`` owns them
  (``tests/e2e/clusters.py``); ``real_engines`` (session): ``{"dask": DaskEngine, "spark": SparkEngine}`` on a real local Dask
  cluster and Spark Connect server, started once per test process and stopped at its end. Run a
  pipeline's jobs on them with ``get_job(name).context(engine=..., lake_root=..., ds=...)``.
* ``migrated_home_template`` (session) and ``airflow_home``: an ``AIRFLOW_HOME`` initialised
  (secrets, migrated SQLite DB) once per session, and a fresh copy of it per test, for
  ``bin/airflow dags test`` (``tests.e2e.airflow_env.bin_airflow``).

The processes and homes are started with the project's own launchers (``tests/e2e/clusters.py``,
``bin/airflow``), imported when a fixture is first used.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def engine_runtime(tmp_path_factory):
    """The runtime's Dask and Spark engines (as ``make run`` owns them), one pair per test process.

    A :class:`tests.e2e.clusters.Runtime`: give ``engine_runtime.env`` to a deployment and its
    runs attach to these engines. Tests that kill an engine start a runtime of their own.
    """
    from tests.e2e.clusters import runtime

    with runtime(tmp_path_factory.mktemp("runtime")) as rt:
        yield rt


@pytest.fixture(scope="session")
def real_engines(engine_runtime, tmp_path_factory):
    """``{"dask": DaskEngine, "spark": SparkEngine}`` attached to ``engine_runtime``'s engines.

    For modules that only read and write through the engines (each test uses lake paths of its own).
    """
    from tests.e2e.clusters import local_engines

    with local_engines(engine_runtime, tmp_path_factory.mktemp("real-engines-lake")) as engines:
        yield engines


@pytest.fixture(scope="session")
def migrated_home_template(tmp_path_factory) -> Path:
    """An AIRFLOW_HOME initialised once per session (secrets + migrated SQLite DB) via bin/airflow."""
    from tests.e2e.airflow_env import bin_airflow

    home = tmp_path_factory.mktemp("airflow-template")
    out = bin_airflow(home, "version")
    assert out.returncode == 0, out.stderr[-3000:]
    return home


@pytest.fixture
def airflow_home(migrated_home_template, tmp_path) -> Path:
    """A fresh AIRFLOW_HOME for one test, copied from the session template (no second migration)."""
    home = tmp_path / "airflow"
    # airflow.cfg holds absolute paths of the template (its SQLite file): let Airflow write a new one.
    shutil.copytree(migrated_home_template, home, ignore=shutil.ignore_patterns("airflow.cfg", "logs"))
    return home
