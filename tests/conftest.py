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
# Every Spark JVM of the suite (runtime engines, one-off runs, spark-submit, standalone daemons):
# C1-only JIT and the serial GC halve their CPU on these small jobs (measured: docs/runtime.md).
SPARK_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
os.environ.setdefault("ETL_SPARK_JAVA_OPTIONS", SPARK_JAVA_OPTIONS)
# Dask's statistical profiler samples every worker thread every 10 ms for the dashboard's
# Profile tab, which no test opens.
os.environ.setdefault("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "False")
for var in [v for v in os.environ if v.startswith("AIRFLOW_CONN_")]:
    del os.environ[var]  # tests decide which clusters exist

import pytest  # noqa: E402

from include.etl.settings import default_data_dir  # noqa: E402

# The shared data sets (../shared/data beside the checkout, as in CI), never copies in the
# project. Subprocesses (bin/airflow, clusters) inherit ETL_DATA_DIR.
os.environ.setdefault("ETL_DATA_DIR", str(default_data_dir()))
DATA_ROOT = Path(os.environ["ETL_DATA_DIR"])
DATA = DATA_ROOT / "olympics"


def require_data(path: Path) -> Path:
    """``path`` under ETL_DATA_DIR; fails (never skips) naming it when it is absent."""
    if not path.exists():
        pytest.fail(f"a shared data set is missing: expected {path} (ETL_DATA_DIR={DATA_ROOT}); "
                    "CI and dev machines have it in ../shared/data beside the checkout", pytrace=False)
    return path


@pytest.fixture
def data_dir() -> Path:
    """The Olympics inputs under ETL_DATA_DIR; fails naming the folder when they are absent."""
    require_data(DATA / "athlete_events_head.csv")
    return DATA


@pytest.fixture
def shared_data() -> Path:
    """The root of the shared data sets (olympics, nz_trade, retail); fails when one is absent."""
    for part in ("olympics/athlete_events.csv", "nz_trade", "retail/by-day"):
        require_data(DATA_ROOT / part)
    return DATA_ROOT


# real_engines, migrated_home_template, airflow_home: the public test fixtures of pipeline authors.
pytest_plugins = ["include.etl.testing.pytest_plugin"]


# Test files are scheduled longest first, from measured durations (tests/durations.json, seconds
# of each file in a whole run of `make test`). `make test` runs xdist with `--dist loadfile
# --no-loadscope-reorder`: xdist then hands out files in collection order (by default it re-sorts
# them by their number of tests, which put the one-test modules of several minutes last). Refresh
# the figures with `make test PYTEST_ARGS=--record-durations`.
DURATIONS = ROOT / "tests" / "durations.json"
UNMEASURED_S = 60.0  # a new file: assume an end-to-end module until measured


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_addoption(parser):
    parser.addoption("--record-durations", action="store_true",
                     help=f"write each test file's measured seconds to {DURATIONS.relative_to(ROOT)}")


def pytest_collection_modifyitems(session, config, items):
    import json

    measured = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    items.sort(key=lambda item: -measured.get(_file_of(item.nodeid), UNMEASURED_S))  # stable: a file stays together


_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    _seconds[_file_of(report.nodeid)] = _seconds.get(_file_of(report.nodeid), 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    """With --record-durations, in the controller (or a run without xdist): save the files' seconds."""
    import json

    if session.config.getoption("--record-durations") and not hasattr(session.config, "workerinput"):
        DURATIONS.write_text(json.dumps({k: round(v, 1) for k, v in sorted(_seconds.items())}, indent=1) + "\n")



@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_tests(tmp_path_factory):
    """At the end of this test process: nothing a test started (Airflow components, clusters,
    JVMs, Python workers) may still run. Survivors are killed, by pid, and fail the run."""
    yield
    from tests.procs import kill_started_under

    left = kill_started_under(str(_HOME), str(tmp_path_factory.getbasetemp()))
    assert not left, f"processes started by the tests outlived them (now killed): {left}"
