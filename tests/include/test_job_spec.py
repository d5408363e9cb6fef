"""JobSpec: one description of a job for every path that runs one, and run_spec's one answer format."""

from __future__ import annotations

import json
import logging

import pytest

from include.etl.errors import InputFileError
from include.etl.jobs.errors import decode
from include.etl.jobs.spec import JobSpec, run_spec
from include.etl.settings import Settings


def test_a_tasks_spec_carries_the_settings_and_survives_json(tmp_path):
    settings = Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path), "ETL_MAX_REJECT_RATIO": "0.05",
                                  "ETL_INGEST_BLOCK_BYTES": "1MiB"})
    spec = JobSpec.for_task(settings, "olympics.ingest", {"table": "regions"}, "2024-07-01",
                            {"dag_id": "d", "run_id": "r", "task_id": "t", "try_number": 2})
    assert spec.lake_root == settings.lake_uri and spec.max_reject_ratio == 0.05 and spec.block_bytes == 2**20
    assert spec.key.startswith("etl-job-olympics.ingest-") and spec.run["try_number"] == 2
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert JobSpec.for_task(settings, "olympics.ingest", {}, "2024-07-01").key != spec.key  # one key per job


def test_a_malformed_spec_is_one_error_naming_what_is_wrong():
    with pytest.raises(ValueError, match=r"missing ds, lake_root; unknown colour"):
        JobSpec.from_dict({"job": "noop", "colour": "red"})
    with pytest.raises(ValueError, match=r"not a job spec: \[1\]"):
        JobSpec.from_dict([1])


class _Engine:
    def run_noop(self) -> None:
        logging.getLogger("include.etl.engines.fake").info("one trivial task")


def test_run_spec_answers_the_summary_and_the_jobs_logs():
    answer = run_spec(JobSpec(job="noop", ds="2024-07-01", lake_root="/nonexistent"), engine=_Engine())
    assert answer["summary"] == {"job": "noop"} and answer["elapsed_s"] >= 0
    assert [(name, msg) for _t, _lvl, name, msg in answer["logs"]] == [("include.etl.engines.fake", "one trivial task")]


def test_run_spec_encodes_a_data_error_so_the_task_raises_the_same_class(tmp_path):
    spec = JobSpec(job="olympics.ingest", ds="2024-07-01", lake_root=str(tmp_path),
                   job_kwargs={"table": "regions", "source": str(tmp_path / "missing.csv")})
    answer = run_spec(spec, engine_factory=lambda: object())
    assert "summary" not in answer
    raised = decode(answer["error"])
    assert type(raised) is InputFileError and "missing.csv" in str(raised)


def test_run_spec_keeps_only_the_records_of_the_jobs_thread_below_include(caplog):
    def engine():
        logging.getLogger("include.etl.jobs.test").info("opening the engine")  # part of the job: captured
        logging.getLogger("elsewhere").info("not the job's")  # another logger: not captured
        return _Engine()

    answer = run_spec(JobSpec(job="noop", ds="2024-07-01", lake_root="/x"), engine_factory=engine)
    assert [msg for _t, _lvl, _name, msg in answer["logs"]] == ["opening the engine", "one trivial task"]
