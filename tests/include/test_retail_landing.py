"""The landing-zone pieces the retail pipeline waits with: deadlines, the trigger, the sensor's
decision, empty partitions, and the run's partition day (no Airflow deployment, no cluster)."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace

import pytest

from etl_platform.operators.partitioned import partition_day, table_of
from etl_platform.sensors.landing import LandingFileSensor
from etl_platform.triggers.landing import LandingFileTrigger
from include.etl.lake import Lake
from include.etl.landing import deadline_for, landing_file, publish_empty
from tests.lake import part, published, read_partition

UTC = dt.UTC


def test_deadline_is_hours_after_the_end_of_the_day():
    assert deadline_for("2011-12-05", 6) == dt.datetime(2011, 12, 6, 6, tzinfo=UTC)
    assert deadline_for("2011-12-31", 0) == dt.datetime(2012, 1, 1, tzinfo=UTC)
    assert landing_file("/in", "2011-12-05") == "/in/2011-12-05.csv"
    with pytest.raises(ValueError):
        deadline_for("2011-12-05", -1)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        landing_file("/in", "2011-12")


def _run(trigger: LandingFileTrigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(asyncio.wait_for(first(), 10))


def test_trigger_fires_when_the_file_lands_or_at_the_deadline(tmp_path):
    path = tmp_path / "2011-12-05.csv"
    soon = (dt.datetime.now(UTC) + dt.timedelta(seconds=0.3)).isoformat()
    event = _run(LandingFileTrigger(str(path), soon, poke_interval=0.05))
    assert event["present"] is False and event["path"] == str(path)

    later = (dt.datetime.now(UTC) + dt.timedelta(seconds=30)).isoformat()

    async def land():
        await asyncio.sleep(0.2)
        path.write_text("x")

    async def both():
        trigger = LandingFileTrigger(str(path), later, poke_interval=0.05)
        lander = asyncio.create_task(land())
        async for event in trigger.run():
            await lander
            return event.payload

    assert asyncio.run(asyncio.wait_for(both(), 10))["present"] is True
    classpath, kwargs = LandingFileTrigger(str(path), later, 7).serialize()
    assert classpath == "etl_platform.triggers.landing.LandingFileTrigger"
    assert LandingFileTrigger(**kwargs).poke_interval == 7.0


class _TI:
    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def _context(day: str) -> dict:
    return {"partition_key": day, "partition_date": None, "logical_date": None, "ti": _TI()}


def test_sensor_decides_at_once_when_the_file_is_there_or_the_deadline_has_passed(tmp_path):
    (tmp_path / "2010-12-06.csv").write_text("x")
    sensor = LandingFileSensor(task_id="wait", landing_dir=str(tmp_path), deadline_hours="6")
    ctx = _context("2010-12-06")
    out = sensor.execute(ctx)
    assert out["present"] is True and ctx["ti"].pushed["landing"] == out
    ctx = _context("2010-12-11")
    out = sensor.execute(ctx)  # a Saturday of 2010: its deadline passed long ago
    assert out["present"] is False and "already passed" in out["decided"]
    assert out["deadline"] == "2010-12-12T06:00:00+00:00"


def test_sensor_defers_while_the_deadline_is_ahead(tmp_path):
    from airflow.sdk.exceptions import TaskDeferred

    today = dt.datetime.now(UTC).date().isoformat()
    sensor = LandingFileSensor(task_id="wait", landing_dir=str(tmp_path), deadline_hours=6, poke_interval=30)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(_context(today))
    trigger = deferred.value.trigger
    assert isinstance(trigger, LandingFileTrigger) and trigger.path == str(tmp_path / f"{today}.csv")
    assert deferred.value.method_name == "execute_complete"
    ctx = _context(today)
    out = sensor.execute_complete(ctx, event={"present": False})
    assert out["present"] is False and ctx["ti"].pushed["landing"]["present"] is False


def test_partition_day_of_partitioned_and_logical_runs():
    assert partition_day({"partition_key": "2011-12-05"}) == "2011-12-05"
    month_start = dt.datetime(2011, 1, 1, tzinfo=UTC)
    assert partition_day({"partition_key": "2011-01", "partition_date": month_start}) == "2011-01-01"
    assert partition_day({"partition_key": None, "logical_date": dt.datetime(2011, 12, 5, tzinfo=UTC)}) == "2011-12-05"
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="has no day"):  # never retried: the run's key is fixed
        partition_day({"partition_key": "eu"})
    assert table_of(SimpleNamespace(uri="lake://retail/sales_by_country")) == "sales_by_country"
    assert table_of(SimpleNamespace(uri="s3://x/y")) is None


def test_empty_partitions_have_the_declared_columns(tmp_path):
    from include.pipelines.retail.datasets import TABLE_SCHEMAS

    lake = Lake(tmp_path, "retail")
    uris = publish_empty(lake, "2011-11-05", TABLE_SCHEMAS)
    assert uris == {table: lake.table_uri(table) for table in TABLE_SCHEMAS}
    for table, columns in TABLE_SCHEMAS.items():
        path = part(tmp_path, "retail", table, "2011-11-05")
        assert published(path)  # "no data that day", not "not processed yet"
        table_ = read_partition(path)
        assert table_.num_rows == 0
        assert [(f.name, str(f.type)) for f in table_.schema] == [tuple(c) for c in columns]
        history = lake.history(table)
        assert [h["version"] for h in history] == [1, 0]  # one commit (0 created the table)
        assert (history[0]["ds"], history[0]["rows"]) == ("2011-11-05", "0")
        assert lake.delta(table).history(1)[0]["empty_day"] == "true"
    publish_empty(lake, "2011-11-05", TABLE_SCHEMAS)  # a rerun replaces them: one new version each, still empty
    for table in TABLE_SCHEMAS:
        assert lake.delta(table).version() == 2 and lake.row_counts(table) == {"2011-11-05": 0}
    assert len(lake.files("invoice_lines", "2011-11-05")) == 1
