"""Lake maintenance (include/etl/lake/maintenance.py) on real Delta tables, and its DAG.

Tables are written as the platform writes them (``Lake.stage``, Parquet files, ``Lake.commit``).
Compaction keeps every row; time travel inside the retention still reads; vacuum removes replaced
versions' files and a failed run's staged directory once older than the retention, never the
commit log, a fresh staged write or the reports; the same on a lake on S3; the DAG parses, wires
one mapped task per pipeline and its tasks run against the configured lake.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.etl.lake import Lake
from include.etl.lake.maintenance import (
    MaintenanceError,
    maintain_pipeline,
    maintain_table,
    pipelines,
    remove_stale_runs,
    retention_hours,
)
from tests.conftest import ROOT
from tests.lake import stage_files
from tests.s3 import s3_server_fixture  # noqa: F401 - the fixture `s3_server`

WEEK = 7 * 24
DAY_S = 86400
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def batch(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": list(range(start, start + n)), "name": [f"n{i}" for i in range(start, start + n)]},
                    schema=SCHEMA)


stage = stage_files  # tests/lake.py


def publish(lake: Lake, table: str, ds: str, *files: pa.Table) -> int:
    """Stage and commit ``ds`` of ``table`` (no files: an empty day); the new version."""
    staged = stage(lake, table, ds, *files) if files else None
    return lake.commit(table, ds, staged, schema=SCHEMA)["version"]


def backdate(path: Path, days: float) -> None:
    """Make every file and directory under ``path`` look ``days`` old."""
    old = time.time() - days * DAY_S
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (old, old))
        os.utime(dirpath, (old, old))


def data_files(table_dir: Path) -> set[str]:
    return {p.relative_to(table_dir).as_posix() for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts}


def referenced(lake: Lake, table: str) -> set[str]:
    """The data files of the table's latest version, relative to the table."""
    base = Path(lake.engine_path(lake.table_uri(table)))
    return {Path(u.removeprefix("file://")).relative_to(base).as_posix() for u in lake.delta(table).file_uris()}


def log_files(table_dir: Path) -> set[str]:
    return {p.name for p in (table_dir / "_delta_log").iterdir()}


@pytest.fixture
def lake(tmp_path) -> Lake:
    """``shop.orders``: two days written as several files each, a re-run, an empty day."""
    lake = Lake(tmp_path / "lake", "shop")
    publish(lake, "orders", "2024-01-01", batch(3), batch(4, 3), batch(2, 7))  # 9 rows in 3 files
    publish(lake, "orders", "2024-01-02", batch(5, 100), batch(5, 105))  # 10 rows in 2 files
    publish(lake, "orders", "2024-01-03")  # no data that day
    publish(lake, "orders", "2024-01-02", batch(2, 200), batch(3, 202))  # a re-run: 5 rows in 2 files
    return lake


def test_retention_hours():
    assert retention_hours(7) == 168 and retention_hours(0.5) == 12 and retention_hours(0.01) == 1
    assert retention_hours(0) == 0
    with pytest.raises(ValueError):
        retention_hours(-1)


def test_compaction_reduces_files_and_keeps_every_row(lake):
    before = {ds: lake.read_arrow("orders", ds) for ds in ("2024-01-01", "2024-01-02", "2024-01-03")}
    counts = lake.row_counts("orders")
    assert counts == {"2024-01-01": 9, "2024-01-02": 5, "2024-01-03": 0}
    files_before = len(lake.delta("orders").file_uris())
    assert files_before == 3 + 2 + 1

    done = maintain_table(lake, "orders", retention_hours=WEEK)

    assert (done.files_before, done.files_after) == (6, 3)  # one file per partition
    assert (done.files_compacted, done.files_written, done.partitions_compacted) == (5, 2, 2)
    assert done.version_after > done.version_before and done.checkpoint is not None
    assert lake.row_counts("orders") == counts  # the log's row counts: the Lake view's and the jobs'
    for ds, rows in before.items():
        assert lake.read_arrow("orders", ds).equals(rows), ds  # same rows, same order
    assert lake.published_days("orders") == {"2024-01-01", "2024-01-02", "2024-01-03"}
    assert done.files_vacuumed == 0  # nothing is older than the retention yet

    again = maintain_table(lake, "orders", retention_hours=WEEK)  # idempotent: nothing left to compact
    assert again.files_compacted == 0 and again.files_after == 3


def test_time_travel_inside_the_retention_still_reads(lake):
    table_dir = Path(lake.engine_path(lake.table_uri("orders")))
    first_run = next(h["version"] for h in lake.history("orders") if h.get("ds") == "2024-01-02" and h["rows"] == "10")
    maintain_table(lake, "orders", retention_hours=WEEK)
    # the re-run replaced ds=2024-01-02 and compaction replaced both days: all younger than a week
    old = lake.read_arrow("orders", "2024-01-02", version=first_run)
    assert sorted(old.column("id").to_pylist()) == list(range(100, 110))
    assert lake.row_count("orders", "2024-01-02", version=first_run) == 10
    assert lake.read_arrow("orders", "2024-01-02").column("id").to_pylist() == list(range(200, 205))
    assert len(data_files(table_dir)) == 3 + 2 + 2 + 1 + 2  # every version's files are kept

    # With no retention, the replaced files go: the old version's log remains, its files do not.
    done = maintain_table(lake, "orders", retention_hours=0)
    assert done.files_vacuumed == 7 and len(data_files(table_dir)) == 3
    with pytest.raises(Exception, match="(?i)not found|no such file|does not exist"):
        lake.read_arrow("orders", "2024-01-02", version=first_run)
    assert lake.read_arrow("orders", "2024-01-02").column("id").to_pylist() == list(range(200, 205))
    assert lake.row_counts("orders") == {"2024-01-01": 9, "2024-01-02": 5, "2024-01-03": 0}


def test_vacuum_removes_old_unreferenced_files_and_a_failed_runs_staged_dir(lake, tmp_path):
    table_dir = Path(lake.engine_path(lake.table_uri("orders")))
    # A failed run's staged partition, with a nested directory (engines write those), 30 days old.
    failed = Path(lake.engine_path(stage(lake, "orders", "2024-01-04", batch(9), batch(1))))
    (failed / "sub").mkdir()
    pq.write_table(batch(1), failed / "sub" / "part-9.parquet")
    (failed / "_SUCCESS").write_text("")  # Spark's markers: inside a partition, vacuum's too
    (failed / ".part-0.parquet.crc").write_text("")
    backdate(failed, 30)
    # A write in progress right now (staged, not committed yet): must survive.
    running = Path(lake.engine_path(stage(lake, "orders", "2024-01-05", batch(4))))
    # A report beside the table.
    report = Path(lake.engine_path(lake.write_report("orders", "2024-01-01", "report.html", "<p>hi</p>")))
    backdate(report.parent, 30)
    logs = log_files(table_dir)
    before = referenced(lake, "orders")

    done = maintain_table(lake, "orders", retention_hours=24)

    assert not failed.exists(), "the failed run's staged directory is still there"
    assert done.dirs_removed == 2  # w-… and w-…/sub, once emptied
    assert list(running.glob("*.parquet")), "a fresh staged write was removed"
    assert report.exists()
    assert logs <= log_files(table_dir), "vacuum removed commit log files"
    assert (done.files_vacuumed, done.other_vacuumed) == (3, 2)  # the replaced files are younger than a day
    kept = referenced(lake, "orders")
    assert kept <= data_files(table_dir) and len(kept) == 3
    assert before - kept, "compaction replaced the multi-file partitions"
    assert before <= data_files(table_dir), "files of a version inside the retention were removed"
    assert lake.row_counts("orders") == {"2024-01-01": 9, "2024-01-02": 5, "2024-01-03": 0}


def test_an_emptied_staged_directory_is_removed_on_a_local_lake(lake):
    failed = Path(lake.engine_path(stage(lake, "orders", "2024-01-04", batch(9))))
    (failed / "a" / "b").mkdir(parents=True)
    pq.write_table(batch(1), failed / "a" / "b" / "x.parquet")
    backdate(failed, 30)
    done = maintain_table(lake, "orders", retention_hours=24, compact=False)
    assert done.files_vacuumed == 2 and done.dirs_removed == 3 and not failed.exists()
    assert failed.parent.exists()  # the ds= directory: left (a job may be staging into it)


def test_stale_records_of_unpublished_runs_are_removed(lake):
    runs = Path(lake.engine_path(lake.root.join("shop", "_runs")))
    old, fresh = runs / "d__scheduled__2024-01-01", runs / "d__manual__now"
    for run in (old, fresh):
        run.mkdir(parents=True)
        (run / "orders@2024-01-01.json").write_text("{}")
    backdate(old, 10)
    assert remove_stale_runs(lake.root, "shop", retention_hours=WEEK) == 1
    assert not old.exists() and fresh.exists()
    assert remove_stale_runs(lake.root, "nothing_here", retention_hours=WEEK) == 0


def test_a_pipeline_every_table_and_a_damaged_one(lake, tmp_path):
    publish(lake, lake.rejects("orders"), "2024-01-01", batch(1), batch(1, 1))
    publish(lake, "customers", "2024-01-01", batch(2))
    publish(Lake(lake.root, "other"), "t", "2024-01-01", batch(1))
    assert pipelines(lake.root) == ["other", "shop"]

    summary = maintain_pipeline(lake.root, "shop", retention_hours=WEEK)
    assert summary["pipeline"] == "shop" and summary["tables"] == 3 and summary["errors"] == {}
    assert set(summary["per_table"]) == {"customers", "orders", "_rejects/orders"}
    assert summary["files_compacted"] == 5 + 2 and summary["files_written"] == 2 + 1
    assert summary["per_table"]["_rejects/orders"]["files_after"] == 1

    # A table whose log is damaged fails; the others are still maintained, and the step fails naming it.
    for f in (Path(lake.engine_path(lake.table_uri("customers"))) / "_delta_log").glob("*"):
        f.write_text("garbage")
    publish(lake, "orders", "2024-01-06", batch(1), batch(1, 1))
    with pytest.raises(MaintenanceError, match="customers"):
        maintain_pipeline(lake.root, "shop", retention_hours=WEEK)
    assert len(lake.delta("orders").file_uris()) == 4  # orders' new day was compacted all the same
    partial = maintain_pipeline(lake.root, "shop", retention_hours=WEEK, raise_on_error=False)
    assert set(partial["errors"]) == {"customers"} and partial["tables"] == 2


def test_maintenance_of_a_lake_on_s3(s3_server):
    location = s3_server.location("maintenance")
    lake = Lake(location, "shop")
    publish(lake, "orders", "2024-01-01", batch(3), batch(4, 3))
    publish(lake, "orders", "2024-01-02")
    failed = stage(lake, "orders", "2024-01-03", batch(5))
    fs = location.filesystem()
    failed_file = f"{lake.engine_path(failed)}/part-0.parquet"

    kept = maintain_pipeline(location, "shop", retention_hours=WEEK)["per_table"]["orders"]
    assert (kept["files_compacted"], kept["files_after"], kept["files_vacuumed"]) == (2, 2, 0)
    assert fs.get_file_info(failed_file).size > 0  # younger than the retention: kept

    done = maintain_table(lake, "orders", retention_hours=0)
    assert done.files_vacuumed == 3  # the two compacted files and the staged one
    assert fs.get_file_info(failed_file).type.name == "NotFound"
    assert lake.row_counts("orders") == {"2024-01-01": 7, "2024-01-02": 0}
    assert lake.read_arrow("orders", "2024-01-01").column("id").to_pylist() == list(range(7))
    assert lake.history("orders")[0]["operation"].startswith("VACUUM")


# ---------------------------------------------------------------- the DAG


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "lake_maintenance.py"))
    assert bag.import_errors == {}
    return bag.dags["lake_maintenance"]


def test_the_dag_parses_and_wires_one_task_per_pipeline(dag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert dag.doc_md and "vacuum" in dag.doc_md and dag.tags
    assert dag.catchup is False and dag.is_paused_upon_creation is False and dag.max_active_runs == 1
    assert dag.schedule == "@daily"
    assert set(dag.task_ids) == {"list_pipelines", "maintain_pipeline"}
    maintain = dag.get_task("maintain_pipeline")
    assert isinstance(maintain, MappedOperator) and maintain.upstream_task_ids == {"list_pipelines"}
    for task in dag.tasks:
        assert task.owner == "data-platform" and task.retries >= 2


def test_the_dag_file_imports_nothing_heavy_at_parse_time():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(ROOT / "dags" / "lake_maintenance.py")!r})
        assert not bag.import_errors, bag.import_errors
        heavy = ("pyarrow", "deltalake", "pandas", "numpy", "dask", "pyspark", "narwhals", "polars")
        print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY=\n" in out.stdout, out.stdout[-500:]


def test_the_dags_tasks_maintain_the_configured_lake(dag, lake, monkeypatch):
    monkeypatch.setenv("ETL_LAKE_URI", lake.root.uri)
    monkeypatch.setenv("ETL_LAKE_RETENTION_DAYS", "7")
    found = dag.get_task("list_pipelines").python_callable()
    assert found == ["shop"]
    summary = dag.get_task("maintain_pipeline").python_callable("shop")
    assert summary["tables"] == 1 and summary["files_compacted"] == 5 and summary["errors"] == {}
    assert len(lake.delta("orders").file_uris()) == 3
