"""Test configuration: an isolated AIRFLOW_HOME and lake, set before Airflow is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="etl-test-airflow-"))

os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("ETL_LAKE_ROOT", str(_HOME / "lake"))
for var in [v for v in os.environ if v.startswith("AIRFLOW_CONN_")]:
    del os.environ[var]  # tests decide which clusters exist

import pytest  # noqa: E402

from include.etl.settings import default_data_dir  # noqa: E402

# The shared data sets (../shared/data beside the checkout, as in CI), never copies in the
# project. Subprocesses (bin/airflow, clusters) inherit ETL_DATA_DIR.
os.environ.setdefault("ETL_DATA_DIR", str(default_data_dir()))
DATA_ROOT = Path(os.environ["ETL_DATA_DIR"])
DATA = DATA_ROOT / "olympics"


@pytest.fixture
def data_dir() -> Path:
    """The Olympics inputs under ETL_DATA_DIR; fails naming the folder when they are absent."""
    if not (DATA / "athlete_events_head.csv").is_file():
        pytest.fail(f"the Olympics data set is missing: expected {DATA} (ETL_DATA_DIR={DATA_ROOT}); "
                    "CI and dev machines have it in ../shared/data beside the checkout")
    return DATA


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
    import shutil

    home = tmp_path / "airflow"
    # airflow.cfg holds absolute paths of the template (its SQLite file): let Airflow write a new one.
    shutil.copytree(migrated_home_template, home, ignore=shutil.ignore_patterns("airflow.cfg", "logs"))
    return home


# The longest modules first (seconds of one full run with -n 2, on a machine loaded by other
# work, roughly): pytest-xdist's loadfile hands whole files to the two workers in collection
# order, so a long module collected last would run alone at the end while the other worker idles.
LONGEST_FIRST = (
    "tests/e2e/test_spark_standalone.py",  # ~430
    "tests/e2e/test_retail.py",  # ~390
    "tests/e2e/test_production_stack.py",  # ~340
    "tests/e2e/test_cluster_reuse.py",  # ~340
    "tests/e2e/test_executor_faults.py",  # ~310
    "tests/e2e/test_retail_scheduler.py",  # ~300 (on one shared cluster now)
    "tests/e2e/test_reader_engines.py",  # ~290
    "tests/e2e/test_scheduler_run.py",  # ~250 (bin/run now)
    "tests/e2e/test_spark_backend.py",  # ~250
    "tests/e2e/test_engine_faults.py",  # ~235
    "tests/e2e/test_olympics_dask.py",  # ~170
    "tests/e2e/test_nz_trade.py",  # ~140
    "tests/e2e/test_spark_thin.py",  # ~100
    "tests/e2e/test_olympics_spark.py",  # ~115
    "tests/plugins/test_cluster_recovery.py",  # ~100
    "tests/e2e/test_ui_browser.py",  # ~90
    "tests/e2e/test_run_entrypoint.py",  # ~80
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item):
        path = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
        return rank.get(path, len(rank))

    items.sort(key=key)  # stable: a module's tests keep their order, and stay together
