"""A job's error on the runtime's Dask engine, from the driver on its worker up to the operator.

The job fails in one of its Dask tasks with pandas' ``KeyError: "['Country'] not in index"``,
below a driver stack of several KB; the driver answers its class, message and whole
traceback (:mod:`include.etl.jobs.errors`), and the operator logs ``<job> failed: KeyError: ...``
before that traceback and raises a retryable ``RemoteJobError`` naming the class.
"""

from __future__ import annotations

import uuid

import pytest
from structlog.testing import capture_logs

from include.etl.jobs.errors import RemoteJobError
from tests.plugins.test_job_operators import run_operator

pytestmark = pytest.mark.slow
JOB = "tests.fixtures.jobs:missing_column_on_cluster"
DEPTH = 40  # the job's default
MISSING = "\"['Country'] not in index\""


@pytest.fixture(scope="module")
def dask_handle(engine_runtime) -> dict:
    """The runtime's Dask engine as a run's start task hands it out."""
    handle = engine_runtime.handle("dask")
    assert handle.extra["runtime"], handle
    return handle.to_dict()


def _assert_whole(traceback: str) -> None:
    assert len(traceback) > 5_000 and traceback.count(", in _replan\n") == DEPTH, traceback
    assert ", in missing_column_on_cluster\n" in traceback and ", in _select_country\n" in traceback  # driver and task frames
    assert traceback.rstrip().endswith(f"KeyError: {MISSING}"), traceback[-500:]


def test_the_driver_answers_the_class_and_the_whole_traceback(dask_handle, tmp_path):
    from distributed import Client

    from include.etl.clusters.dask_jobs import run_job_on_worker

    spec = {"job": JOB, "job_kwargs": {}, "ds": "2024-07-07", "lake_root": str(tmp_path), "max_reject_ratio": 0.01,
            "block_bytes": 1 << 20, "key": f"etl-job-errors-{uuid.uuid4().hex[:8]}"}
    with Client(dask_handle["address"], timeout=30, set_as_default=False) as client:
        error = client.submit(run_job_on_worker, spec, key=spec["key"], pure=False).result()["error"]
    assert (error["class"], error["module"], error["message"], error["data_error"]) == (
        "KeyError", "builtins", MISSING, None)
    _assert_whole(error["traceback"])


def test_the_operator_says_what_went_wrong_first_and_raises_a_retryable_error(dask_handle, monkeypatch, tmp_path):
    from etl_platform.hooks.dask_cluster import DaskClusterHook
    from include.etl.settings import Settings

    hook = DaskClusterHook(settings=Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path)}))
    with capture_logs() as logs, pytest.raises(RemoteJobError) as info:
        run_operator(monkeypatch, hook, cluster=dask_handle, job=JOB)
    assert str(info.value) == f"KeyError: {MISSING}"
    _assert_whole(info.value.remote_traceback)
    lines = [e["event"] for e in logs if "failed" in e["event"] or "Traceback" in e["event"]]
    assert lines[0] == f"{JOB} failed: KeyError: {MISSING}"
    assert lines[1] == f"Traceback where the job ran:\n{info.value.remote_traceback.rstrip()}" and len(lines) == 2
