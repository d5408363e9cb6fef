"""Lake paths, atomic publish and settings."""

from __future__ import annotations

import pytest

from include.etl.lake import STAGING_PREFIX, Lake, check_ds, publish, row_count
from include.etl.settings import PROJECT_ROOT, SHARED_DATA_DIR, ConfigError, Settings, default_data_dir


def test_partition_paths_per_pipeline(tmp_path):
    lake = Lake(tmp_path, "demo")
    assert lake.partition("orders", "2024-07-07") == tmp_path / "demo" / "orders" / "ds=2024-07-07"
    assert lake.rejects("orders", "2024-07-07") == tmp_path / "demo" / "_rejects" / "orders" / "ds=2024-07-07"
    with pytest.raises(ValueError, match="ds='2024-13-01' is not a date"):
        lake.partition("orders", "2024-13-01")
    assert check_ds("2024-02-29") == "2024-02-29"
    assert Lake(str(tmp_path), "other").partition("t", "2024-07-07") == tmp_path / "other" / "t" / "ds=2024-07-07"


def test_lake_has_no_default_domain(tmp_path):
    with pytest.raises(TypeError):
        Lake(tmp_path)  # type: ignore[call-arg]
    for bad in ("", "a/b", "../up", None):
        with pytest.raises(ValueError, match="must be a pipeline name"):
            Lake(tmp_path, bad)  # type: ignore[arg-type]


def test_publish_replaces_partition_whole_and_leaves_no_staging(tmp_path):
    lake = Lake(tmp_path, "demo")
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
    assert not hasattr(s, "athletes_path")  # a pipeline's inputs are not platform settings
    relative = Settings.from_env({"ETL_LAKE_ROOT": "lake2"})  # relative to the project, not the cwd
    assert relative.lake_root.is_absolute() and relative.lake_root.name == "lake2"
    with pytest.raises(ConfigError, match="ETL_DEFAULT_BACKEND='flink'"):
        Settings.from_env({"ETL_DEFAULT_BACKEND": "flink"})
    with pytest.raises(ConfigError, match="ETL_LOCAL_WORKERS='two'"):
        Settings.from_env({"ETL_LOCAL_WORKERS": "two"})
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


def test_data_dir_is_the_shared_data_root_by_default(tmp_path):
    assert default_data_dir() == (SHARED_DATA_DIR if SHARED_DATA_DIR.is_dir() else PROJECT_ROOT / "data")
    assert SHARED_DATA_DIR == PROJECT_ROOT.parent / "shared" / "data"
    assert Settings.from_env({}).data_dir == default_data_dir()
    assert Settings.from_env({"ETL_DATA_DIR": str(tmp_path)}).data_dir == tmp_path
    assert Settings.from_env({"ETL_DATA_DIR": "somewhere"}).data_dir == PROJECT_ROOT / "somewhere"


def test_ingest_block_bytes_setting():
    assert Settings.from_env({}).ingest_block_bytes == 64 * 2**20
    assert Settings.from_env({"ETL_INGEST_BLOCK_BYTES": "1048576"}).ingest_block_bytes == 2**20
    assert Settings.from_env({"ETL_INGEST_BLOCK_BYTES": "16MiB"}).ingest_block_bytes == 16 * 2**20
    assert Settings.from_env({"ETL_INGEST_BLOCK_BYTES": "500 kB"}).ingest_block_bytes == 500_000
    for bad in ("lots", "1.5MiB", "-1", "64XB"):
        with pytest.raises(ConfigError, match=rf"ETL_INGEST_BLOCK_BYTES='{bad}' is not a size in bytes"):
            Settings.from_env({"ETL_INGEST_BLOCK_BYTES": bad})
    with pytest.raises(ConfigError, match="ETL_INGEST_BLOCK_BYTES='100' is below the minimum"):
        Settings.from_env({"ETL_INGEST_BLOCK_BYTES": "100"})


def test_landing_poke_interval_setting():
    assert Settings.from_env({}).landing_poke_interval == 60.0
    assert Settings.from_env({"ETL_LANDING_POKE_INTERVAL": "5"}).landing_poke_interval == 5.0
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match=f"ETL_LANDING_POKE_INTERVAL='{bad}'"):
            Settings.from_env({"ETL_LANDING_POKE_INTERVAL": bad})


def test_the_old_engine_size_names_still_work_with_a_warning(caplog):
    from include.etl.settings import Settings

    old = Settings.from_env({"ETL_DASK_WORKERS": "3", "ETL_DASK_THREADS": "2"})
    assert (old.local_workers, old.local_threads) == (3, 2)
    assert "ETL_DASK_WORKERS is deprecated" in caplog.text and "ETL_LOCAL_WORKERS" in caplog.text
    new = Settings.from_env({"ETL_DASK_WORKERS": "3", "ETL_LOCAL_WORKERS": "4"})
    assert new.local_workers == 4  # the new name wins
