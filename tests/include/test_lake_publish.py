"""Write, audit, publish per run (include/etl/lake): staged partitions are invisible until the run's
publish step, the run's own reads see them, and a publish that stopped half way converges on retry."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.etl.lake import Lake

DS = "2024-07-07"
RUN = {"dag_id": "demo_etl", "run_id": "manual__2024-07-07T00:00:00+00:00", "task_id": "job", "try_number": 1,
       "publish": "run"}


def stage(lake: Lake, table: str, values: list[int]) -> dict:
    staged = lake.stage(table, DS)
    path = lake.engine_path(staged)
    lake.root.filesystem().create_dir(path)
    pq.write_table(pa.table({"v": values}), f"{path}/part-0.parquet")
    return lake.commit(table, DS, staged)


def test_staged_tables_are_invisible_until_the_publish_step(tmp_path):
    published = Lake(tmp_path, "demo")
    stage(published, "a", [1])  # no run: committed at once (version 1)
    run = Lake(tmp_path, "demo", run=RUN)
    assert stage(run, "a", [1, 2, 3])["version"] is None and stage(run, "b", [4])["version"] is None
    # Readers outside the run see the table as it was, and no table b at all.
    assert published.read_arrow("a", DS).column("v").to_pylist() == [1]
    assert published.delta("a").version() == 1 and not published.exists("b")
    # The run's own reads see what it staged (a new table's columns too).
    assert run.row_count("a", DS) == 3 and run.read_arrow("b", DS).column("v").to_pylist() == [4]
    assert run.schema("b", DS).names == ["v"] and len(run.files("b", DS)) == 1
    done = run.publish_run(publisher={"task_id": "publish", "try_number": 1})
    assert [(d["table"], d["rows"]) for d in done] == [("a", 3), ("b", 1)]
    assert published.read_arrow("a", DS).column("v").to_pylist() == [1, 2, 3]
    last = published.history("a")[0]
    assert (last["run_id"], last["task_id"], last["rows"], last["rows_removed"]) == (RUN["run_id"], "job", "3", "1")
    assert run.staged_entries() == []


def test_a_publish_retried_after_a_partial_one_commits_each_table_once(tmp_path):
    run = Lake(tmp_path, "demo", run=RUN)
    stage(run, "a", [1, 2])
    stage(run, "b", [3])
    # The first try committed table a, then died before b.
    first = run.staged_entries()[0]
    run._commit_files(first["table"], DS, [tuple(f) for f in first["files"]], first["info"])
    done = run.publish_run()
    assert [(d["table"], d["version"]) for d in done] == [("a", 1), ("b", 1)]
    reader = Lake(tmp_path, "demo")
    assert reader.delta("a").version() == 1, "table a was committed twice"
    assert reader.read_arrow("a", DS).column("v").to_pylist() == [1, 2]
    assert reader.read_arrow("b", DS).column("v").to_pylist() == [3]
    assert run.publish_run() == [], "a second publish of the same run has nothing left to do"


def test_a_run_without_a_run_id_never_waits_for_a_publish_step(tmp_path):
    lake = Lake(tmp_path, "demo", run={"publish": "run"})  # no run id: nothing to key its staging by
    assert not lake.deferred
    assert stage(lake, "a", [1])["version"] == 1


def test_an_empty_day_keeps_the_table_columns(tmp_path):
    lake = Lake(tmp_path, "demo")
    stage(lake, "a", [1])
    lake.commit("a", "2024-07-08", None, schema=pa.schema([("other", pa.string())]))
    assert lake.row_count("a", "2024-07-08") == 0 and lake.has_partition("a", "2024-07-08")
    assert lake.schema("a").names == ["v"]
    with pytest.raises(FileNotFoundError, match="no Delta table"):
        lake.commit("new", DS, None)  # nothing says the columns of a new table


def test_an_ingests_counts_are_in_the_tables_history(tmp_path):
    lake = Lake(tmp_path, "demo")
    staged = lake.stage("a", DS)
    path = lake.engine_path(staged)
    lake.root.filesystem().create_dir(path)
    pq.write_table(pa.table({"v": [1, 2]}), f"{path}/part-0.parquet")
    counts = {"rows_in": 5, "rows_accepted": 2, "rows_rejected": 1, "duplicates_dropped": 2}
    lake.commit("a", DS, staged, metadata={"source": "in.csv", **counts})
    last = lake.history("a")[0]  # what the Lake view's versions page shows
    assert {k: last[k] for k in counts} == {k: str(v) for k, v in counts.items()} and last["rows"] == "2"
