"""Lake paths, atomic publish and settings."""

from __future__ import annotations

import pytest

from include.etl.lake import STAGING_PREFIX, Lake, check_ds, publish, row_count
from include.etl.settings import ConfigError, Settings


def test_partition_paths(tmp_path):
    lake = Lake(tmp_path)
    assert lake.partition("athletes", "2024-07-07") == tmp_path / "olympics" / "athletes" / "ds=2024-07-07"
    assert lake.rejects("athletes", "2024-07-07") == tmp_path / "olympics" / "_rejects" / "athletes" / "ds=2024-07-07"
    with pytest.raises(ValueError, match="ds='2024-13-01' is not a date"):
        lake.partition("athletes", "2024-13-01")
    assert check_ds("2024-02-29") == "2024-02-29"


def test_publish_replaces_partition_whole_and_leaves_no_staging(tmp_path):
    lake = Lake(tmp_path)
    target = lake.partition("t", "2024-07-07")
    for version, files in ((1, ["a", "b"]), (2, ["c"])):
        staging = lake.staging(target)
        staging.mkdir()
        for name in files:
            (staging / f"{name}.parquet").write_text(str(version))
        publish(staging, target)
        assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.parquet" for n in files)
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert leftovers == []
    with pytest.raises(FileNotFoundError, match="staging directory"):
        publish(tmp_path / "nope", target)


def test_settings_defaults_and_errors(tmp_path):
    s = Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path)})
    assert s.lake_root == tmp_path and s.default_backend == "dask" and s.bind_host == "127.0.0.1"
    assert s.athletes_path.endswith("data/olympics/athlete_events_head.csv")
    assert Settings.from_env({"ETL_ATHLETES_PATH": "/x.csv"}).athletes_path == "/x.csv"
    relative = Settings.from_env({"ETL_LAKE_ROOT": "lake2"})  # relative to the project, not the cwd
    assert relative.lake_root.is_absolute() and relative.lake_root.name == "lake2"
    with pytest.raises(ConfigError, match="ETL_DEFAULT_BACKEND='flink'"):
        Settings.from_env({"ETL_DEFAULT_BACKEND": "flink"})
    with pytest.raises(ConfigError, match="ETL_DASK_WORKERS='two'"):
        Settings.from_env({"ETL_DASK_WORKERS": "two"})
    with pytest.raises(ConfigError, match="ETL_MAX_REJECT_RATIO"):
        Settings.from_env({"ETL_MAX_REJECT_RATIO": "5"})


def test_row_count_reads_footers_of_every_part_and_skips_spark_markers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = tmp_path / "ds=2024-07-07"  # a ds=... name must not turn into a column or a filter
    part.mkdir()
    pq.write_table(pa.table({"ID": [1, 2, 3]}), part / "part.0.parquet")
    pq.write_table(pa.table({"ID": [4, 5]}), part / "part.1.parquet")
    (part / "_SUCCESS").write_text("")
    (part / ".part.0.parquet.crc").write_text("crc")
    assert row_count(part) == 5
