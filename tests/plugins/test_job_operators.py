"""Operators and the spark-submit error path, with fake hooks: no cluster, no JVM.

A data error (include.etl.errors.DataError) must fail the task without retries on every
backend (AirflowFailException); anything else stays an ordinary, retried failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from etl_platform.hooks import spark_submit as spark_hooks
from etl_platform.operators import SparkJobOperator, StartClusterOperator
from etl_platform.operators import cluster as cluster_ops
from etl_platform.operators import job as job_ops
from include.etl.errors import DATA_ERRORS, DataError, InputFileError, QualityCheckFailed, RejectThresholdExceeded
from include.etl.spark_submit_app import error_report

DS = "2024-07-07"
DASK = {"backend": "dask", "address": "tcp://127.0.0.1:8786", "owned": False, "conn_id": "dask_default"}
SUBMIT = {"backend": "spark", "address": "spark://127.0.0.1:7077", "owned": False, "conn_id": "spark_default",
          "extra": {"mode": "submit"}}


class FakeTI:
    task_id, dag_id, run_id, map_index, try_number = "t", "d", "r", -1, 1

    def xcom_push(self, key, value):
        pass


def context() -> dict:
    return {"ds": DS, "ti": FakeTI()}


class PipelineError(DataError):
    """A pipeline's own data error (a subclass of the platform's base)."""


class FakeHook:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error, self.closed, self.run = error, False, None

    def lost(self, handle):
        return None

    def resolve(self, handle):
        return handle

    def run_job(self, handle, job, job_kwargs, ds, run=None):
        self.run = run
        if self.error is not None:
            raise self.error
        return {"job": job, "ds": ds}

    def close(self):
        self.closed = True


def run_operator(monkeypatch, hook, cluster=DASK, job="noop") -> dict:
    monkeypatch.setattr(job_ops, "get_cluster_hook", lambda backend, conn_id=None: hook)
    op = SparkJobOperator(task_id="job", job=job, cluster=cluster)
    return op.execute(context())


@pytest.mark.parametrize("error", [InputFileError("athletes input x: file does not exist"),
                                   RejectThresholdExceeded("3 of 4 rows rejected"), QualityCheckFailed("bad marts"),
                                   PipelineError("a pipeline's own check")])
def test_data_errors_fail_the_task_without_retries(monkeypatch, error):
    hook = FakeHook(error)
    with pytest.raises(AirflowFailException, match=str(error)) as raised:
        run_operator(monkeypatch, hook)
    assert raised.value.__cause__ is error and hook.closed


def test_other_errors_stay_retryable(monkeypatch):
    hook = FakeHook(RuntimeError("connection reset"))
    with pytest.raises(RuntimeError, match="connection reset") as raised:
        run_operator(monkeypatch, hook)
    assert not isinstance(raised.value, AirflowFailException) and hook.closed
    ok = FakeHook()
    assert run_operator(monkeypatch, ok) == {"job": "noop", "ds": DS}
    # who runs the job, which every lake commit of the job records
    assert ok.run.items() >= {"dag_id": "d", "run_id": "r", "task_id": "t", "try_number": 1}.items()


def test_an_unknown_job_fails_before_the_cluster_is_touched(monkeypatch):
    monkeypatch.setattr(job_ops, "get_cluster_hook", lambda *a, **k: pytest.fail("hook created"))
    with pytest.raises(KeyError, match="unknown job 'nowhere.job'"):
        SparkJobOperator(task_id="job", job="nowhere.job", cluster=DASK).execute(context())


def test_rendered_backend_names_the_engine():
    assert job_ops.describe_backend(DASK) == "dask (at tcp://127.0.0.1:8786)"
    assert job_ops.describe_backend(SUBMIT) == "spark (spark-submit at spark://127.0.0.1:7077)"
    connect = {"backend": "spark", "address": "sc://127.0.0.1:15002", "owned": True, "extra": {"session_id": "x"}}
    assert job_ops.describe_backend(connect) == "spark (Spark Connect at sc://127.0.0.1:15002)"
    assert "unknown" in job_ops.describe_backend(None)
    assert job_ops.describe_backend({"backend": "spark", "address": "local-spark://7", "extra": {"in_process": 7}}) == \
        "spark (a classic session in the run's process)"
    assert "backend" in SparkJobOperator.template_fields


def test_the_ui_operator_column_names_the_engine():
    from airflow.sdk import DAG

    with DAG("engines", schedule=None):
        for backend in ("dask", "spark", "{{ params.backend }}"):
            start = StartClusterOperator(task_id=f"start_{len(backend)}", backend=backend)
            job = SparkJobOperator(task_id=f"job_{len(backend)}", job="olympics.enrich", cluster=start.output)
            assert job.operator_name == {"dask": "Dask job", "spark": "Spark job"}.get(
                backend, "Dask or Spark job (param backend)"), backend
            assert job.task_type == "SparkJobOperator"  # the class keeps its name


# --- spark-submit mode: the provider's SparkSubmitHook replaced by a fake ----------------------


class FakeSubmitHook:
    """Writes what the application would write to ``--summary``, then behaves like the provider's hook:
    a non-zero exit of spark-submit raises AirflowException."""

    report: dict | None = None
    instances: list = []

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        FakeSubmitHook.instances.append(self)

    def submit(self, application: str) -> None:
        args = self.kwargs["application_args"]
        summary = Path(args[args.index("--summary") + 1])
        assert application.endswith("include/etl/spark_submit_app.py")
        if self.report is not None:
            summary.write_text(json.dumps(self.report))
        if self.report is None or "error" in self.report:
            raise AirflowException("Cannot execute: spark-submit ... Error code is: 1.")

    def on_kill(self) -> None:
        pass


@pytest.fixture
def fake_submit(monkeypatch, tmp_path):
    import airflow.providers.apache.spark.hooks.spark_submit as provider

    monkeypatch.setattr(provider, "SparkSubmitHook", FakeSubmitHook)
    monkeypatch.setenv("ETL_LAKE_ROOT", str(tmp_path / "lake"))
    FakeSubmitHook.instances = []
    return FakeSubmitHook


def submit_through_operator(fake_submit, report: dict | None, job: str = "olympics.ingest"):
    fake_submit.report = report
    op = SparkJobOperator(task_id="ingest", job=job, cluster=SUBMIT,
                          job_kwargs={"table": "athletes", "source": "/nowhere.csv"})
    return op.execute(context())


@pytest.mark.parametrize("exc", [InputFileError("athletes input /nowhere.csv: file does not exist"),
                                 RejectThresholdExceeded("athletes input x: 3 of 4 rows rejected"),
                                 QualityCheckFailed("quality checks failed"), PipelineError("own check")])
def test_spark_submit_data_errors_are_not_retried(fake_submit, exc):
    with pytest.raises(AirflowFailException, match=str(exc)) as raised:
        submit_through_operator(fake_submit, error_report(exc))
    cause = raised.value.__cause__
    assert isinstance(cause, DataError) and str(cause) == str(exc)
    assert isinstance(cause, DATA_ERRORS[type(exc).__name__] if type(exc).__name__ in DATA_ERRORS else DataError)
    assert isinstance(cause.__cause__, AirflowException)  # the provider's failure is kept as the cause
    (hook,) = fake_submit.instances
    args = hook.kwargs["application_args"]
    spec = json.loads(args[args.index("--spec") + 1])  # the task's JobSpec, whole
    assert spec["job"] == "olympics.ingest" and spec["ds"] == DS and spec["block_bytes"] == 64 * 2**20
    assert spec["run"]["task_id"] and spec["key"].startswith("etl-job-olympics.ingest-")


def test_spark_submit_other_errors_stay_retryable(fake_submit):
    with pytest.raises(RuntimeError, match="^OSError: disk full$") as raised:
        submit_through_operator(fake_submit, error_report(OSError("disk full")))
    assert not isinstance(raised.value, AirflowFailException)
    with pytest.raises(AirflowException, match="Error code is: 1") as raised:  # died before reporting
        submit_through_operator(fake_submit, None)
    assert not isinstance(raised.value, AirflowFailException)


def test_spark_submit_success_returns_the_summary(fake_submit, tmp_path):
    assert submit_through_operator(fake_submit, {"summary": {"rows_in": 3}}) == {"rows_in": 3}
    args = fake_submit.instances[-1].kwargs["application_args"]
    spec = json.loads(args[args.index("--spec") + 1])
    assert spec["lake_root"] == "file://" + str((tmp_path / "lake").resolve())  # the lake's URI
    run = spec["run"]  # recorded by the application's commits
    assert run.items() >= {"dag_id": "d", "run_id": "r", "task_id": "t", "try_number": 1}.items()


def test_submit_result_mapping():
    assert spark_hooks.submit_result({"summary": {"a": 1}}, job="j", address="spark://m") == {"a": 1}
    with pytest.raises(RuntimeError, match="wrote no summary"):
        spark_hooks.submit_result(None, job="j", address="spark://m")
    with pytest.raises(InputFileError, match="^bad file$"):
        spark_hooks.submit_result(error_report(InputFileError("bad file")), job="j", address="spark://m")
    assert error_report(PipelineError("x")).items() >= {"error": "PipelineError", "message": "x",
                                                        "data_error": "DataError"}.items()  # + the encoding's keys
    assert error_report(ValueError("x"))["data_error"] is None


# --- missing inputs: the start task fails at once, before any cluster ------------------------


def test_missing_input_fails_the_start_at_once_naming_the_file_and_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(cluster_ops, "get_cluster_hook", lambda *a, **k: pytest.fail("a cluster hook was created"))
    present = tmp_path / "present.csv"
    present.write_text("a\n")
    op = StartClusterOperator(task_id="start_cluster", backend="dask",
                              inputs={"regions_path": str(present), "athletes_path": str(tmp_path / "gone.csv"),
                                      "remote": "s3://bucket/key.csv"})
    with pytest.raises(AirflowFailException) as raised:
        op.execute(context())
    message = str(raised.value)
    assert f"athletes_path={tmp_path / 'gone.csv'}" in message and "regions_path" not in message
    assert f"ETL_DATA_DIR={tmp_path / 'data'}" in message and "No cluster was started" in message
    assert "data_dir" in message and "ETL_DATA_DIR_<PIPELINE>" in message  # where a pipeline's own root is set
    assert cluster_ops.missing_inputs({"x": ""}) == [("x", "(empty)")]
    assert "inputs" in StartClusterOperator.template_fields
