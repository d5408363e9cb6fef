"""retail_daily and the rollup through a real scheduler and LocalExecutor (every task its own process).

The real `make run` entry point, `bin/run` (SQLite, LocalExecutor: api-server, scheduler,
dag-processor, triggerer, and the runtime's Dask engine, which every run attaches to) with
`dags/retail_daily.py` and the weekly variant of `retail_monthly` (`tests/fixtures/dags/retail_weekly.py`,
the same factory with a `WeekWindow`), over a landing directory holding copies of the real days
of the week 2010-12-06 .. 2010-12-12 (the Saturday 2010-12-11 has no file). On Dask:

* a backfill of the week's 7 daily runs (`POST /api/v2/backfills`, two runs at a time): 6 days
  with their marts, the Saturday published as an empty day without a cluster (its log says why,
  every table has an empty partition of its declared columns, and every event says
  ``empty_day``);
* `retail_weekly` is created only once all 7 days have published (never while the backfill is
  under way), runs once, and its `weekly_sales_by_country` equals SQL over the 6 raw files,
  with distinct counts over the whole week; its report is written beside it;
* a corrected file for one day lands and that day's run is cleared (re-run): the rollup runs
  again by itself, and its output equals SQL over the corrected week;
* paused, the rollup is not told of the days published meanwhile (Airflow queues no asset event
  for a paused DAG), and unpausing does not bring them back; a week's rollup started by hand
  from its key (as the trigger form's Partition Key does) runs, and one of an incomplete week
  fails at once, without retries, naming the missing days;
* today's scheduled run (created when the DAG is unpaused), whose deadline is ahead, waits
  *deferred* in the triggerer (no worker slot) and goes on when its file lands.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import ROOT
from tests.e2e.airflow_env import project_env
from tests.e2e.stack import Api, Stack, free_port, wait
from tests.e2e.test_retail import (
    DAYS_DIR,
    _schema,
    needs_data,
    oracle_db,
    oracle_period_by_country,
    period_by_country,
    read_table,
)
from tests.lake import part as partition
from tests.lake import published
from tests.procs import processes_with_env

pytestmark = [pytest.mark.slow, needs_data]

WEEK = [f"2010-12-{d:02d}" for d in range(6, 13)]  # Monday .. Sunday
NO_FILE = "2010-12-11"
RERUN_DAY = "2010-12-08"


@pytest.fixture(scope="module")
def deployment(migrated_home_template, tmp_path_factory):
    base = tmp_path_factory.mktemp("retail-scheduler")
    home = base / "airflow"
    shutil.copytree(migrated_home_template, home, ignore=shutil.ignore_patterns("airflow.cfg", "logs"))
    dags = base / "dags"
    dags.mkdir()
    (dags / "retail_daily.py").symlink_to(ROOT / "dags" / "retail_daily.py")
    (dags / "retail_weekly.py").symlink_to(ROOT / "tests" / "fixtures" / "dags" / "retail_weekly.py")
    data = base / "data"  # ETL_DATA_DIR: the DAG's default landing_dir is data/retail/by-day
    landing = data / "retail" / "by-day"
    landing.mkdir(parents=True)
    for day in WEEK:
        if (DAYS_DIR / f"{day}.csv").exists():
            shutil.copy(DAYS_DIR / f"{day}.csv", landing)
    assert not (landing / f"{NO_FILE}.csv").exists() and len(list(landing.iterdir())) == 6
    port = free_port()
    env = project_env(home, ETL_DATA_DIR=str(data), ETL_DEFAULT_BACKEND="dask", AIRFLOW__CORE__DAGS_FOLDER=str(dags),
                      AIRFLOW__API__PORT=str(port), AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
                      ETL_LANDING_POKE_INTERVAL="5", ETL_RUNTIME_ENGINES="dask")
    stack = Stack(base)
    stack.start("run", [str(ROOT / "bin" / "run")], env)
    api = Api(port, home)
    try:
        wait("the DAGs to be parsed", lambda: all(api("GET", f"dags/{d}")["dag_id"] for d in ("retail_daily", "retail_weekly")),
             300, stack, interval=2)
        yield {"home": home, "api": api, "stack": stack, "landing": landing}
    finally:
        stack.procs["run"].send_signal(signal.SIGTERM)  # bin/run's own shutdown stops its engine
        try:
            stack.procs["run"].wait(60)
        finally:
            stack.stop_all()
    assert processes_with_env(str(home)) == [], "engine processes survived bin/run"


def _runs(home: Path, dag_id: str) -> list[dict]:
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT run_id, state, partition_key, run_type, queued_at, start_date, end_date "
                          "FROM dag_run WHERE dag_id = ? ORDER BY id", (dag_id,)).fetchall()
    return [dict(r) for r in rows]


def _tis(home: Path, dag_id: str, run_id: str) -> dict[str, str]:
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        return dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                               (dag_id, run_id)).fetchall())


def _day_events(home: Path) -> dict[str, str]:
    """The week's days with a ``sales_by_country`` event -> the event's time (the last one of a day)."""
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        rows = db.execute("SELECT e.partition_key, MAX(e.timestamp) FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                          "WHERE a.uri = 'lake://retail/sales_by_country' GROUP BY e.partition_key").fetchall()
    return {k: ts for k, ts in rows if k in WEEK}


def _week_runs(home: Path) -> dict[str, dict]:
    return {r["partition_key"]: r for r in _runs(home, "retail_daily") if r["partition_key"] in WEEK}


def test_backfilled_week_rolls_up_once_complete_and_again_after_a_rerun(deployment):
    home, api, stack, landing = deployment["home"], deployment["api"], deployment["stack"], deployment["landing"]
    # The rollup listens from its creation (a paused DAG is not told of asset events); the daily DAG starts paused.
    assert api("GET", "dags/retail_weekly")["is_paused"] is False
    assert api("GET", "dags/retail_daily")["is_paused"] is True
    for dag_id in ("retail_weekly", "retail_daily"):
        assert api("PATCH", f"dags/{dag_id}", {"is_paused": False})["is_paused"] is False
    t0 = time.monotonic()
    backfill = api("POST", "backfills", {"dag_id": "retail_daily", "from_date": f"{WEEK[0]}T00:00:00Z",
                                         "to_date": f"{WEEK[-1]}T00:00:00Z", "max_active_runs": 2,
                                         "run_backwards": False, "reprocess_behavior": "none"})
    assert backfill["dag_id"] == "retail_daily", backfill
    premature = []

    def week_done():
        runs = _week_runs(home)
        failed = {k: _tis(home, "retail_daily", r["run_id"]) for k, r in runs.items() if r["state"] == "failed"}
        assert not failed, (failed, stack.log("run"))
        done = sorted(k for k, r in runs.items() if r["state"] == "success")
        weekly = _runs(home, "retail_weekly")  # read before the events: a run seen here had its events
        if weekly and len(_day_events(home)) < len(WEEK):
            premature.append((sorted(_day_events(home)), weekly))
        return len(done) == len(WEEK) and runs

    runs = wait("the 7 daily runs of the backfill", week_done, 900, stack, interval=1)
    backfill_s = time.monotonic() - t0
    assert premature == [], f"the rollup ran before the week was complete: {premature}"
    assert {r["run_type"] for r in runs.values()} == {"backfill"}
    # The Saturday: an empty day, no cluster; the other days: the cluster chain, no empty day.
    for day, run in runs.items():
        tis = _tis(home, "retail_daily", run["run_id"])
        if day == NO_FILE:
            assert tis["publish_empty_day"] == "success" and tis["start_cluster"] == "skipped", tis
            assert tis["marts"] == "skipped" and tis["stop_cluster"] == "skipped", tis
        else:
            assert tis["marts"] == "success" and tis["stop_cluster"] == "success", (day, tis)
            assert tis["publish_empty_day"] == "skipped", (day, tis)
    # The embedded default: the 6 trading days ran on the runtime's one Dask engine, started by none of them.
    starts = [f.read_text(errors="replace") for f in
              (home / "logs" / "dag_id=retail_daily").glob("run_id=*/task_id=start_cluster/attempt=*.log")]
    assert len(starts) == 6 and all("Attaching to the runtime's dask engine" in t for t in starts), \
        [t[-600:] for t in starts]
    last_daily = max(r["end_date"] for r in runs.values())
    events = _day_events(home)
    assert sorted(events) == WEEK, events  # every day emitted its event, the empty day too
    _assert_an_empty_day(home, runs[NO_FILE]["run_id"])

    def weekly_done(n):
        weekly = _runs(home, "retail_weekly")
        assert not [r for r in weekly if r["state"] == "failed"], (weekly, stack.log("run"))
        return len(weekly) >= n and all(r["state"] == "success" for r in weekly) and weekly

    weekly = wait("the weekly rollup", lambda: weekly_done(1), 300, stack, interval=1)
    assert len(weekly) == 1, weekly
    first = weekly[0]
    assert first["partition_key"].startswith(f"{WEEK[0]} (W49)"), first
    assert first["queued_at"] >= max(events.values()), (first, events)  # created after the last day published
    rollup_s = time.monotonic() - t0 - backfill_s

    part = home / "lake" / "retail" / "weekly_sales_by_country" / f"ds={WEEK[0]}"
    files = sorted(landing.iterdir())
    assert period_by_country(part, "week", WEEK[0]) == oracle_period_by_country(oracle_db(files))
    report_file = home / "lake" / "retail" / "_reports" / "weekly_sales_by_country" / f"ds={WEEK[0]}" / "report.html"
    report = report_file.read_text(encoding="utf-8")
    for chart in ("revenue-per-day", "top-countries", "top-products", "cancellations-per-day"):
        assert f'id="{chart}"' in report, chart
    assert f"Days without trading: {NO_FILE}." in report

    # A corrected file lands for one day (its last 200 lines withdrawn) and the day is re-run.
    corrected = landing / f"{RERUN_DAY}.csv"
    lines = corrected.read_text(encoding="utf-8").splitlines()
    corrected.write_text("\n".join(lines[:-200]) + "\n", encoding="utf-8")
    expected = oracle_period_by_country(oracle_db(files))
    assert expected != period_by_country(part, "week", WEEK[0])
    run_id = runs[RERUN_DAY]["run_id"]
    t1 = time.monotonic()
    api("POST", f"dags/retail_daily/dagRuns/{quote(run_id, safe='')}/clear", {"dry_run": False})

    def rerun_done():
        run = [r for r in _runs(home, "retail_daily") if r["run_id"] == run_id][0]
        assert run["state"] != "failed", _tis(home, "retail_daily", run_id)
        return run["state"] == "success" and run["end_date"] > last_daily

    wait(f"the re-run of {RERUN_DAY}", rerun_done, 300, stack, interval=1)
    weekly = wait("the rollup after the re-run", lambda: weekly_done(2), 300, stack, interval=1)
    assert len(weekly) == 2, weekly
    assert weekly[1]["partition_key"].endswith("re-run"), weekly[1]
    assert _tis(home, "retail_weekly", weekly[1]["run_id"])["rollup"] == "success"
    assert period_by_country(part, "week", WEEK[0]) == expected
    # The re-run replaced the day's partition (one more commit of that day, recording the re-run), never appended.
    from include.etl.lake import Lake

    day_commits = [h for h in Lake(home / "lake", "retail").history("sales_by_country") if h.get("ds") == RERUN_DAY]
    assert len(day_commits) == 2 and day_commits[0]["run_id"] == run_id, day_commits
    assert day_commits[0]["rows_removed"] == day_commits[1]["rows"], day_commits
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        marts = db.execute("SELECT e.partition_key, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                           "WHERE a.uri = 'lake://retail/weekly_sales_by_country' ORDER BY e.id").fetchall()
    assert [k for k, _ in marts] == [first["partition_key"]] * 2, marts  # the period's key, the re-run's too
    assert all(json.loads(x)["trading_days"] == 6 and json.loads(x)["empty_days"] == 1 for _, x in marts), marts
    rerun_s = time.monotonic() - t1
    print(f"backfill of 7 days {backfill_s:.0f} s, rollup {rollup_s:.0f} s later, re-run + rollup {rerun_s:.0f} s")


def _assert_an_empty_day(home: Path, run_id: str) -> None:
    """The day without a file: its log says why, every table has an empty partition of its
    declared columns, and each of its events says it is an empty day."""
    from include.pipelines.retail.datasets import TABLE_SCHEMAS

    logs = "".join(f.read_text(errors="replace") for f in (home / "logs" / "dag_id=retail_daily").glob(
        f"run_id={run_id}/task_id=*/attempt=*.log"))
    assert f"No landing file for {NO_FILE}" in logs and "a day without trading" in logs, logs[-3000:]
    for table, columns in TABLE_SCHEMAS.items():
        path = home / "lake" / "retail" / table / f"ds={NO_FILE}"
        assert read_table(path) == [], table
        assert [n for n, _ in _schema(path)] == [c for c, _ in columns], table
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        extras = dict(db.execute("SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                                 "WHERE e.partition_key = ?", (NO_FILE,)).fetchall())
    assert {uri.rsplit("/", 1)[-1] for uri in extras} == {"invoice_lines", "enriched_lines", "sales_by_country",
                                                          "sales_by_product"}, extras
    for extra in map(json.loads, extras.values()):
        assert extra["empty_day"] is True and extra["rows"] == 0 and "a day without trading" in extra["reason"], extra


def _wait_run(home: Path, stack: Stack, dag_id: str, what: str, match, timeout: float = 180) -> dict:
    """The first run of ``dag_id`` that ``match`` (a predicate on a run's row) accepts, once it has ended."""
    def ended():
        runs = [r for r in _runs(home, dag_id) if match(r)]
        return runs and runs[0]["state"] in ("success", "failed") and runs[0]

    return wait(f"{what} to end", ended, timeout, stack, interval=1)


def _ti_rows(home: Path, dag_id: str, run_id: str) -> dict[str, dict]:
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT task_id, state, try_number, start_date, end_date FROM task_instance "
                          "WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)).fetchall()
    return {r["task_id"]: dict(r) for r in rows}


def test_events_while_paused_are_lost_and_a_week_is_started_by_hand(deployment):
    """What Airflow does with the events of a paused rollup, and what the docs say to do then.

    Events are posted through the REST API (``POST /assets/events`` with a partition key, as a
    daily run's ``marts`` emits them): no day has to run, and the lake is the first test's.
    """
    home, api, stack = deployment["home"], deployment["api"], deployment["stack"]
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        (sales,) = db.execute("SELECT id FROM asset WHERE uri = 'lake://retail/sales_by_country'").fetchone()
    week_key, next_key = f"{WEEK[0]} (W49)", "2010-12-13 (W50)"
    next_week = [f"2010-12-{d}" for d in range(13, 20)]

    def post_days(days):
        return [api("POST", "assets/events", {"asset_id": sales, "partition_key": d, "extra": {"test": True}})["id"]
                for d in days]

    def queued_for_weekly(event_ids):
        with sqlite3.connect(home / "airflow.db", timeout=30) as db:
            return db.execute(f"SELECT COUNT(*) FROM partitioned_asset_key_log WHERE target_dag_id = 'retail_weekly' "
                              f"AND asset_event_id IN ({','.join('?' * len(event_ids))})", event_ids).fetchone()[0]

    assert api("PATCH", "dags/retail_weekly", {"is_paused": True})["is_paused"] is True
    before = len(_runs(home, "retail_weekly"))
    paused_events = post_days(WEEK)  # the whole week's days, published while the rollup is paused
    assert queued_for_weekly(paused_events) == 0  # Airflow recorded the events, for no one
    assert api("PATCH", "dags/retail_weekly", {"is_paused": False})["is_paused"] is False
    # Unpaused: the same kind of events of the next week (not in the lake) are queued, and their
    # complete window makes a run. Once the scheduler made it, it has long seen the unpause, and
    # the paused week made none.
    assert queued_for_weekly(post_days(next_week)) == 7
    failed = _wait_run(home, stack, "retail_weekly", f"the run of {next_key}", lambda r: r["partition_key"] == next_key)
    assert [r["partition_key"] for r in _runs(home, "retail_weekly")[before:]] == [next_key]
    # A period not in the lake fails at once in check_period, without retries, naming the missing days.
    assert failed["state"] == "failed", _ti_rows(home, "retail_weekly", failed["run_id"])
    tis = _ti_rows(home, "retail_weekly", failed["run_id"])
    assert tis["check_period"]["state"] == "failed" and tis["check_period"]["try_number"] == 1, tis
    assert tis["rollup"]["state"] == "upstream_failed", tis
    logs = "".join(f.read_text(errors="replace") for f in (home / "logs" / "dag_id=retail_weekly").glob(
        f"run_id={failed['run_id']}/task_id=check_period/attempt=*.log"))
    assert "7 of its 7 days lack their daily partitions" in logs and "2010-12-13 .. 2010-12-19" in logs, logs[-2000:]

    # What the docs say to do: start the week by hand, from its key (the trigger form's Partition Key).
    if not all(published(partition(home / "lake", "retail", "sales_by_country", d)) for d in WEEK):
        pytest.fail("the week by hand needs the week the first test of this module publishes: run the module whole")
    run = api("POST", "dags/retail_weekly/dagRuns", {"logical_date": None, "partition_key": week_key})
    assert run["partition_key"] == week_key and run["run_type"] == "manual", run
    done = _wait_run(home, stack, "retail_weekly", f"the run of {week_key} by hand", lambda r: r["run_id"] == run["dag_run_id"])
    assert done["state"] == "success", _tis(home, "retail_weekly", done["run_id"])
    assert _tis(home, "retail_weekly", done["run_id"])["rollup"] == "success"
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        (key,) = db.execute("SELECT e.partition_key FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE "
                            "a.uri = 'lake://retail/weekly_sales_by_country' ORDER BY e.id DESC LIMIT 1").fetchone()
    assert key == week_key


def test_a_day_not_over_waits_deferred_and_goes_on_when_its_file_lands(deployment):
    home, api, stack, landing = deployment["home"], deployment["api"], deployment["stack"], deployment["landing"]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    api("PATCH", "dags/retail_daily", {"is_paused": False})  # (unpaused by the test above; alone, here)

    def waiting():
        runs = [r for r in _runs(home, "retail_daily") if r["partition_key"] == today and r["run_type"] == "scheduled"]
        return runs and _tis(home, "retail_daily", runs[0]["run_id"]).get("wait_for_file") == "deferred" and runs[0]

    run = wait(f"today's run ({today}) to wait deferred for its file", waiting, 180, stack, interval=1)
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        triggers = db.execute("SELECT classpath FROM trigger").fetchall()
    assert ("etl_platform.triggers.landing.LandingFileTrigger",) in triggers, triggers
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    (landing / f"{today}.csv").write_text(
        f"{header}\n900001,85123A,HEART,2,{today} 09:00:00,2.55,17850.0,United Kingdom\n"
        f"900001,22633,HAND WARMER,3,{today} 09:00:00,1.85,17850.0,United Kingdom\n"
        f"C900002,22633,HAND WARMER,-1,{today} 10:00:00,1.85,,France\n", encoding="utf-8")

    def finished():
        state = [r for r in _runs(home, "retail_daily") if r["run_id"] == run["run_id"]][0]["state"]
        assert state != "failed", _tis(home, "retail_daily", run["run_id"])
        return state == "success"

    wait("today's run to go on once its file landed (the trigger checks every 5 s here)", finished, 300, stack, interval=2)
    tis = _tis(home, "retail_daily", run["run_id"])
    assert tis["wait_for_file"] == "success" and tis["marts"] == "success" and tis["publish_empty_day"] == "skipped", tis
    rows = {r["country"]: r for r in read_table(home / "lake" / "retail" / "sales_by_country" / f"ds={today}")}
    assert (rows["United Kingdom"]["units"], rows["United Kingdom"]["invoices"], rows["United Kingdom"]["customers"]) \
        == (5, 1, 1)
    assert (rows["France"]["units"], rows["France"]["cancelled_lines"]) == (0, 1)
