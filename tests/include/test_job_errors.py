"""A job's error from where it ran to the task log (include/etl/jobs/errors.py), on every path that runs without a cluster.

One encoding (class, module, message, whole traceback, data-error class) survives JSON intact,
however long the traceback; the task side raises a data error as its own class (never retried)
and anything else as ``RemoteJobError("<Class>: <message>")``; the operator logs the one-line
summary first, then the remote traceback. The same on a real Dask cluster:
``tests/e2e/test_dask_job_errors.py``.
"""

from __future__ import annotations

import json
import pickle

import pytest
from airflow.sdk.exceptions import AirflowFailException
from structlog.testing import capture_logs

from include.etl.errors import ContractError, InputFileError
from include.etl.jobs.errors import RemoteJobError, decode, encode, headline
from include.etl.jobs.spec import JobSpec, run_spec
from include.etl.spark_submit_app import error_report
from tests.plugins.test_job_operators import FakeHook, run_operator

DEPTH = 60  # frames: a traceback of several KB
MISSING = "\"['Country'] not in index\""  # str() of pandas' KeyError for a missing column


class OwnContractError(ContractError):
    """A pipeline's own data error, with an __init__ of its own."""

    def __init__(self, table: str, column: str) -> None:
        super().__init__(f"{table}: no column {column!r} in the header")


def deep(n: int, exc: BaseException):
    if n == 0:
        try:
            {}["Country"]
        except KeyError as cause:  # a chained cause must stay in the traceback too
            raise exc from cause
    return _deeper(n - 1, exc)


def _deeper(n: int, exc: BaseException):  # alternating frames: Python does not fold them into "[Previous line repeated]"
    return deep(n, exc)


def deep_job(ctx) -> dict:
    return deep(DEPTH, KeyError("['Country'] not in index"))


def raised(exc: BaseException) -> BaseException:
    try:
        deep(DEPTH, exc)
    except BaseException as caught:  # noqa: BLE001
        return caught
    raise AssertionError("not raised")


def _assert_whole(traceback: str, last_line: str) -> None:
    assert len(traceback) > 5_000, len(traceback)
    assert traceback.count(", in _deeper\n") == DEPTH  # every frame, none cut
    assert traceback.count(", in deep\n") == DEPTH + 2  # and the cause's
    assert "The above exception was the direct cause" in traceback and "KeyError: 'Country'" in traceback
    assert traceback.rstrip().endswith(last_line), traceback[-300:]


def test_a_code_error_round_trips_with_its_class_message_and_whole_traceback():
    error = json.loads(json.dumps(encode(raised(KeyError("['Country'] not in index")))))
    assert {k: error[k] for k in ("class", "module", "message", "data_error")} == {
        "class": "KeyError", "module": "builtins", "message": MISSING, "data_error": None}
    _assert_whole(error["traceback"], f"KeyError: {MISSING}")
    exc = decode(error)
    assert type(exc) is RemoteJobError and isinstance(exc, RuntimeError)  # retried like any bug
    assert str(exc) == f"KeyError: {MISSING}" == headline(exc)
    assert exc.remote_traceback == error["traceback"]
    copy = pickle.loads(pickle.dumps(exc))
    assert str(copy) == str(exc) and copy.remote_traceback == exc.remote_traceback


def test_a_data_error_round_trips_as_its_own_class():
    error = json.loads(json.dumps(encode(raised(OwnContractError("athletes", "Country")))))
    assert error["class"] == "OwnContractError" and error["data_error"] == "ContractError"
    _assert_whole(error["traceback"], "OwnContractError: athletes: no column 'Country' in the header")
    exc = decode(error)
    assert type(exc) is OwnContractError and str(exc) == "athletes: no column 'Country' in the header"
    assert exc.remote_traceback == error["traceback"]
    # a class this process cannot import: the nearest platform class, still a data error
    exc = decode({**error, "module": "include.pipelines.nowhere"})
    assert type(exc) is ContractError and str(exc) == "athletes: no column 'Country' in the header"
    assert headline(InputFileError("x.csv: empty")) == "InputFileError: x.csv: empty" and headline(KeyError()) == "KeyError"


def test_spark_submit_report_is_the_encoding():
    report = error_report(raised(KeyError("['Country'] not in index")))
    assert report["error"] == report["class"] == "KeyError" and report["data_error"] is None
    _assert_whole(report["traceback"], f"KeyError: {MISSING}")
    assert str(decode(report)) == f"KeyError: {MISSING}"


def test_run_spec_answers_class_and_whole_traceback():
    """What a job's driver elsewhere (a Dask worker) answers: the encoding, with the job's time and logs."""
    spec = JobSpec(job=f"{__name__}:deep_job", job_kwargs={}, ds="2024-07-01", lake_root="/nonexistent", key="k")
    result = json.loads(json.dumps(run_spec(spec, engine=object())))
    error = result["error"]
    assert error["class"] == "KeyError" and error["message"] == MISSING and error["data_error"] is None
    _assert_whole(error["traceback"], f"KeyError: {MISSING}")
    assert ", in deep_job\n" in error["traceback"] and set(result) == {"error", "elapsed_s", "logs"}


def run_logged(monkeypatch, error: BaseException, expected: type[BaseException]) -> tuple[BaseException, list]:
    """Run the operator on a hook that raises ``error``: what it raised, and its log lines about the failure."""
    with capture_logs() as logs, pytest.raises(expected) as info:
        run_operator(monkeypatch, FakeHook(error))
    return info.value, [(e["log_level"], e["event"]) for e in logs if "failed" in e["event"] or "Traceback" in e["event"]]


def test_the_operator_logs_what_went_wrong_first_then_the_remote_traceback(monkeypatch):
    error = encode(raised(KeyError("['Country'] not in index")))
    exc, lines = run_logged(monkeypatch, decode(error), RemoteJobError)
    assert str(exc) == f"KeyError: {MISSING}" and not isinstance(exc, AirflowFailException)  # retried
    assert lines == [("error", f"noop failed: KeyError: {MISSING}"),
                     ("error", f"Traceback where the job ran:\n{error['traceback'].rstrip()}")]


def test_a_data_error_is_logged_first_and_not_retried(monkeypatch):
    error = encode(raised(InputFileError("athletes input a.csv: wrong header (no column 'Country')")))
    exc, lines = run_logged(monkeypatch, decode(error), AirflowFailException)
    assert isinstance(exc.__cause__, InputFileError)
    assert lines[0] == ("error", "noop failed: InputFileError: athletes input a.csv: wrong header (no column 'Country')")
    assert lines[1][0] == "info" and lines[1][1].startswith("Traceback where the job ran:") and len(lines) == 2


def test_an_error_of_this_process_is_logged_first_too(monkeypatch):
    _, lines = run_logged(monkeypatch, KeyError("k"), KeyError)  # in-process: Airflow logs its own traceback
    assert lines == [("error", "noop failed: KeyError: 'k'")]
