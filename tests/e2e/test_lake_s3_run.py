"""olympics_etl with its lake on a real S3 server (SeaweedFS), through `bin/airflow dags test`.

- the run publishes every table to ``s3://…`` and the marts equal the independent computation;
- no secret of the lake's connection appears in the run's logs, its rendered templates or its
  XComs (everything under AIRFLOW_HOME is scanned: the task logs and the metadata database);
- refused keys fail the run in its first task, before any cluster starts, without retries,
  naming the URI and the connection, with no secret in the logs; the teardown does not run when
  its setup failed (trigger rule ``all_done_setup_success``), and nothing is left running;
- the first task's check, in this process, turns each bad lake (a malformed lake URI, wrong
  keys, a missing bucket) into that same no-retry failure. (One `dags test` costs about 14 CPU
  seconds of Airflow's own start-up; `tests/include/test_lake_s3.py` and `test_lake_location.py`
  check the lake's messages for every bad configuration.)
"""

from __future__ import annotations

import json

import pytest

from include.etl.lake import Lake
from tests.conftest import DATA
from tests.e2e.airflow_env import bin_airflow
from tests.e2e.expected import expected_marts
from tests.procs import processes_with_env
from tests.s3 import s3_server_fixture  # noqa: F401 - the module's SeaweedFS server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_data")]
DS = "2024-07-07"
DASK = json.dumps({"backend": "dask"})


def files_containing(root, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_run_on_s3_publishes_and_leaks_no_secret(airflow_home, s3_server):
    env = s3_server.env(prefix="olympics-run")
    out = bin_airflow(airflow_home, "dags", "test", "olympics_etl", DS, "-c", DASK, **env)
    logs = out.stdout + out.stderr
    assert out.returncode == 0 and "state=success" in logs, logs[-4000:]
    lake = Lake(s3_server.location(prefix="olympics-run"), "olympics")
    medals = sorted(tuple(r.values()) for r in lake.read_arrow("medals_by_region", DS).to_pylist())
    assert medals == expected_marts(DATA)["medals_by_region"]
    committed = lake.history("medals_by_region")[0]
    assert committed["dag_id"] == "olympics_etl" and committed["task_id"] == "aggregate"
    assert not (airflow_home / "lake").exists(), "the run wrote to the local lake"
    # The secret is nowhere: not in the output, the task logs, the metadata DB (XComs, rendered fields).
    assert s3_server.secret_key not in logs
    assert files_containing(airflow_home, s3_server.secret_key) == []
    assert processes_with_env(str(airflow_home)) == []


def bad_lake_env(s3_server, case: str) -> dict[str, str]:
    env = s3_server.env(prefix="bad")
    if case == "malformed uri":
        env["ETL_LAKE_URI"] = "s3://key:secret@lake/x"
    elif case == "wrong keys":
        env["AIRFLOW_CONN_LAKE_DEFAULT"] = s3_server.conn_json(password="not-the-secret-key")
    else:
        env["ETL_LAKE_URI"] = "s3://no-such-bucket/x"
    return env


def assert_names_the_lake(message: str, env: dict[str, str], case: str) -> None:
    if case == "malformed uri":
        assert "ETL_LAKE_URI" in message and "secret@" not in message, message
    else:
        assert env["ETL_LAKE_URI"] in message and "lake_default" in message, message


def test_refused_keys_fail_the_first_task_before_any_cluster(airflow_home, s3_server):
    env = bad_lake_env(s3_server, "wrong keys")
    out = bin_airflow(airflow_home, "dags", "test", "olympics_etl", DS, "-c", DASK, **env)
    logs = out.stdout + out.stderr
    assert "state=failed" in logs
    assert "No cluster was started; retries cannot help" in logs
    assert "starting a local Dask cluster" not in logs and "Local Dask cluster up" not in logs
    failed = next(line for line in logs.splitlines() if "No cluster was started" in line and "raise " not in line)
    assert_names_the_lake(failed, env, "wrong keys")
    assert s3_server.secret_key not in logs and "not-the-secret-key" not in logs
    assert "up_for_retry" not in logs.lower()
    assert "Stopped the local Dask cluster" not in logs  # no teardown: its setup failed
    assert processes_with_env(str(airflow_home)) == []


@pytest.mark.parametrize("case", ["malformed uri", "wrong keys", "missing bucket"])
def test_the_first_tasks_check_fails_each_bad_lake_without_retries(s3_server, monkeypatch, case):
    from airflow.sdk.exceptions import AirflowFailException

    from etl_platform.operators import StartClusterOperator

    env = bad_lake_env(s3_server, case)
    for var in ("ETL_LAKE_URI", "ETL_LAKE_CONN_ID", "AIRFLOW_CONN_LAKE_DEFAULT"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(AirflowFailException) as failed:
        StartClusterOperator(task_id="start_cluster", backend="dask").check_lake()
    message = str(failed.value)
    assert message.endswith("No cluster was started; retries cannot help.")
    assert_names_the_lake(message, env, case)
    assert s3_server.secret_key not in message and "not-the-secret-key" not in message
