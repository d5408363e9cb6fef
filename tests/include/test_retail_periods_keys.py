"""The rollup DAGs' partition keys: what the trigger form accepts, how re-run days map, and how
``check_period`` fails (at once, no retries) for a period that is not complete or a run without a key.

The DAGs are checked as the scheduler and the API see them: serialized and deserialized
(``DagSerialization``), and a typed key goes through the API's own check,
``TriggerDAGRunPostBody.validate_context`` (``POST /api/v2/dags/{dag_id}/dagRuns``, which the UI's
trigger form calls), which ends in ``PartitionedAssetTimetable.resolve_partition_date``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from types import SimpleNamespace

import pytest
from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
from airflow.exceptions import InvalidPartitionKeyError
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.serialization.serialized_objects import DagSerialization

from include.pipelines.retail import RERUN_URI
from include.pipelines.retail.periods import day_ranges, key_start, period_days
from tests.conftest import ROOT

UTC = dt.UTC
SALES = "lake://retail/sales_by_country"
NOVEMBER = period_days("month", "2011-11-01")


def _load(path):
    spec = importlib.util.spec_from_file_location(f"_dag_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.fixture(scope="module")
def dags():
    """dag_id -> (the DAG as parsed, the DAG as the scheduler and the API deserialize it)."""
    out = {}
    for path in (ROOT / "dags" / "retail_monthly.py", ROOT / "tests" / "fixtures" / "dags" / "retail_weekly.py",
                 ROOT / "dags" / "retail_daily.py"):
        dag = _load(path)
        out[dag.dag_id] = (dag, DagSerialization.from_dict(DagSerialization.to_dict(dag)))
    return out


def _trigger(serialized, key):
    """What ``POST /dags/{dag_id}/dagRuns`` does with the form's Partition Key (no logical date: the
    form has none for a partitioned DAG): the run's partition_date, or InvalidPartitionKeyError (400)."""
    return TriggerDAGRunPostBody(logical_date=None, partition_key=key).validate_context(serialized)["partition_date"]


def test_the_trigger_form_accepts_a_month_and_rejects_what_is_not_one(dags):
    _, monthly = dags["retail_monthly"]
    assert _trigger(monthly, "2011-11") == dt.datetime(2011, 11, 1, tzinfo=UTC)
    assert _trigger(monthly, "2010-12") == dt.datetime(2010, 12, 1, tzinfo=UTC)
    for bad in ("2011-11-05", "2011-13", "Nov 2011", "2011-11 re-run"):
        with pytest.raises(InvalidPartitionKeyError, match="is invalid for this timetable's mappers"):
            _trigger(monthly, bad)
    _, weekly = dags["retail_weekly"]
    assert _trigger(weekly, "2010-12-06 (W49)") == dt.datetime(2010, 12, 6, tzinfo=UTC)
    _, daily = dags["retail_daily"]  # the daily DAG: a day
    assert _trigger(daily, "2011-11-05") == dt.datetime(2011, 11, 5, tzinfo=UTC)
    with pytest.raises(InvalidPartitionKeyError, match="does not match the timetable's key_format '%Y-%m-%d'"):
        _trigger(daily, "2011-11")


def test_the_backfill_dialogs_utc_range_is_the_days_typed(dags):
    """Backfill dialog, From 2011/11/01 and To 2011/11/30 in UTC: the UI sends the start of the first
    day and the end of the last one; the runs are those 30 days."""
    _, daily = dags["retail_daily"]
    infos = daily.iter_dagrun_infos_between(dt.datetime(2011, 11, 1, tzinfo=UTC),
                                            dt.datetime(2011, 11, 30, 23, 59, 59, 999000, tzinfo=UTC))
    assert [i.partition_key for i in infos] == NOVEMBER


def test_days_and_re_run_days_still_map_to_their_periods(dags):
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.timetables.base import compute_rollup_fingerprint

    for dag_id, day, key, members in (("retail_monthly", "2011-11-17", "2011-11", NOVEMBER),
                                      ("retail_weekly", "2010-12-08", "2010-12-06 (W49)",
                                       period_days("week", "2010-12-06"))):
        _, serialized = dags[dag_id]
        timetable = serialized.timetable
        days, reruns = timetable.get_partition_mapper(uri=SALES), timetable.get_partition_mapper(uri=RERUN_URI)
        assert days.is_rollup and days.to_downstream(day) == key
        assert sorted(days.to_upstream(key)) == members  # WaitForAll waits for every day of the period
        assert not reruns.is_rollup and reruns.to_downstream(day) == f"{key} re-run"  # fires at once
        assert compute_rollup_fingerprint(timetable)  # what the scheduler stamps on a pending run
        # The scheduler's partition_date of a re-run's run: none (the key is its own), without error.
        scheduler = SimpleNamespace(log=SimpleNamespace(exception=pytest.fail, warning=pytest.fail))
        assert SchedulerJobRunner._resolve_partition_date(
            scheduler, timetable=timetable, asset_infos=[(RERUN_URI, RERUN_URI)], partition_key=f"{key} re-run",
            dag_id=dag_id, carried_partition_date=None) is None
        assert SchedulerJobRunner._resolve_partition_date(
            scheduler, timetable=timetable, asset_infos=[(SALES, SALES)], partition_key=key, dag_id=dag_id,
            carried_partition_date=None) == dt.datetime.fromisoformat(members[0]).replace(tzinfo=UTC)


def test_period_start_of_a_key():
    assert key_start("month", "2011-11") == key_start("month", "2011-11 re-run") == "2011-11-01"
    assert key_start("week", "2010-12-06 (W49)") == key_start("week", "2010-12-06 (W49) re-run") == "2010-12-06"
    assert key_start("week", "2010-12-08 (W49)") == "2010-12-06"
    assert key_start("month", None) == key_start("month", "") == key_start("month", "eu") == ""
    assert day_ranges(["2011-11-09", "2011-11-01", "2011-11-02", "2011-11-03", "2011-11-30"]) == \
        "2011-11-01 .. 2011-11-03, 2011-11-09, 2011-11-30"


def test_the_rollup_dags_start_unpaused(dags):
    """Airflow drops the asset events of a paused consumer: the rollup must listen from its creation."""
    for dag_id in ("retail_monthly", "retail_weekly"):
        dag, serialized = dags[dag_id]
        assert dag.is_paused_upon_creation is False and serialized.is_paused_upon_creation is False


# check_period as the worker runs it: the DAG's task, its templates rendered with the run's context.

def _check(dag_id, lake, monkeypatch, *, partition_key, published=(), partition_date=None, logical_date=None):
    from include.etl.lake import Lake
    from include.etl.landing import publish_empty
    from include.pipelines.retail.datasets import TABLE_SCHEMAS

    monkeypatch.delenv("ETL_LAKE_URI", raising=False)
    monkeypatch.setenv("ETL_LAKE_ROOT", str(lake))
    daily = {table: TABLE_SCHEMAS[table] for table in ("invoice_lines", "sales_by_country")}
    for day in published:  # each day committed as retail_daily does for a day without a landing file
        publish_empty(Lake(lake, "retail"), day, daily)
    dag = _load(ROOT / ("dags/retail_monthly.py" if dag_id == "retail_monthly" else "tests/fixtures/dags/retail_weekly.py"))
    task = dag.get_task("check_period")
    ti = SimpleNamespace(dag_id=dag_id, run_id=f"manual__{partition_key}", task_id=task.task_id, try_number=1)
    context = {"partition_key": partition_key, "partition_date": partition_date, "logical_date": logical_date,
               "outlet_events": {}, "dag": dag, "task": task, "ti": ti}
    task.render_template_fields(context)
    return task.retries, lambda: task.execute(context)


def test_an_incomplete_month_fails_at_once_naming_its_missing_days(tmp_path, monkeypatch):
    retries, run = _check("retail_monthly", tmp_path, monkeypatch, partition_key="2011-11",
                          partition_date=dt.datetime(2011, 11, 1, tzinfo=UTC),
                          published=[d for d in NOVEMBER if d not in ("2011-11-05", "2011-11-28", "2011-11-29")])
    assert retries == 2  # the DAG's default: the failure below must not use them
    with pytest.raises(AirflowFailException) as failed:  # Airflow's "fail now, no retries"
        run()
    message = str(failed.value)
    assert "the month 2011-11 (2011-11-01 to 2011-11-30) is not complete: 3 of its 30 days" in message
    assert "2011-11-05, 2011-11-28 .. 2011-11-29" in message and "Run retail_daily for those days first" in message


def test_a_run_without_a_key_fails_at_once(tmp_path, monkeypatch):
    _, run = _check("retail_monthly", tmp_path, monkeypatch, partition_key=None)
    with pytest.raises(AirflowFailException, match="the run has no day.*trigger a new run with a partition key"):
        run()


def test_a_complete_month_by_hand_and_a_re_run_day(tmp_path, monkeypatch):
    _, run = _check("retail_monthly", tmp_path, monkeypatch, partition_key="2011-11",
                    partition_date=dt.datetime(2011, 11, 1, tzinfo=UTC), published=NOVEMBER)
    summary = run()
    assert summary["complete"] and summary["ds"] == "2011-11-01" and not summary["rerun"]
    # A re-run's run has no partition_date: the period comes from its key.
    _, run = _check("retail_monthly", tmp_path, monkeypatch, partition_key="2011-11 re-run")
    assert run()["complete"] and run()["rerun"]
    _, run = _check("retail_monthly", tmp_path, monkeypatch, partition_key="2011-12 re-run")
    with pytest.raises(AirflowSkipException, match="not complete yet .*2011-12-01 .. 2011-12-31"):
        run()  # a re-run day of a month not complete yet: skipped, its rollup comes when it is
    # `airflow dags test retail_monthly 2011-11-15`: no key, a logical date.
    _, run = _check("retail_monthly", tmp_path, monkeypatch, partition_key=None,
                    logical_date=dt.datetime(2011, 11, 15, tzinfo=UTC))
    assert run()["ds"] == "2011-11-01"


def test_a_week_by_hand(tmp_path, monkeypatch):
    week = period_days("week", "2010-12-06")
    _, run = _check("retail_weekly", tmp_path, monkeypatch, partition_key="2010-12-06 (W49) re-run", published=week)
    assert run()["ds"] == "2010-12-06"
    _, run = _check("retail_weekly", tmp_path, monkeypatch, partition_key="2010-12-13 (W50)",
                    partition_date=dt.datetime(2010, 12, 13, tzinfo=UTC))
    with pytest.raises(AirflowFailException, match=r"7 of its 7 days .*2010-12-13 \.\. 2010-12-19"):
        run()
