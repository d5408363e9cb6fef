"""Lake names, commits (one Delta version per published partition) and settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.etl.lake import Lake, check_ds
from include.etl.settings import PROJECT_ROOT, SHARED_DATA_DIR, ConfigError, Settings, default_data_dir

DS = "2024-07-07"


def _uri(path: Path) -> str:
    return "file://" + str(Path(path).resolve())


def _stage(lake: Lake, table: str, ds: str, files: dict[str, list[int]]) -> str:
    """A staged directory of ``table``'s ``ds`` holding one Parquet file per entry (column ``v``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    staged = lake.stage(table, ds)
    path = Path(lake.engine_path(staged))
    path.mkdir(parents=True)
    for name, values in files.items():
        pq.write_table(pa.table({"v": pa.array(values, pa.int64())}), path / f"{name}.parquet")
    return staged


def test_table_names_per_pipeline(tmp_path):
    lake = Lake(tmp_path, "demo")
    assert lake.table_uri("orders") == _uri(tmp_path / "demo" / "orders")
    assert lake.rejects("orders") == "_rejects/orders"
    assert lake.table_uri(lake.rejects("orders")) == _uri(tmp_path / "demo" / "_rejects" / "orders")
    assert lake.report_uri("orders", DS, "report.html") == _uri(
        tmp_path / "demo" / "_reports" / "orders" / f"ds={DS}" / "report.html")
    # A staged directory is a fresh one inside the table's partition, never the same twice.
    staged = lake.stage("orders", DS)
    assert staged.startswith(lake.table_uri("orders") + f"/ds={DS}/") and staged != lake.stage("orders", DS)
    for bad in (lambda: lake.stage("orders", "2024-13-01"), lambda: lake.report_uri("orders", "2024-13-01", "r"),
                lambda: lake.files("orders", "2024-13-01")):
        with pytest.raises(ValueError, match="ds='2024-13-01' is not a date"):
            bad()
    assert check_ds("2024-02-29") == "2024-02-29"
    assert Lake(str(tmp_path), "other").table_uri("t") == _uri(tmp_path / "other" / "t")


def test_lake_has_no_default_domain(tmp_path):
    with pytest.raises(TypeError):
        Lake(tmp_path)  # type: ignore[call-arg]
    for bad in ("", "a/b", "../up", None):
        with pytest.raises(ValueError, match="must be a pipeline name"):
            Lake(tmp_path, bad)  # type: ignore[arg-type]


def test_commit_replaces_the_partition_whole_in_one_new_version(tmp_path):
    run = {"dag_id": "d", "run_id": "r", "task_id": "t", "try_number": 1}
    lake = Lake(tmp_path, "demo", run=run)
    other = lake.commit("t", "2024-07-08", _stage(lake, "t", "2024-07-08", {"x": [7]}))
    assert other == {"table": "t", "uri": lake.table_uri("t"), "version": 1, "rows": 1, "files": 1}  # 0 created it
    for version, files in ((2, {"a": [1, 2], "b": [3]}), (3, {"c": [4]})):
        before = lake.delta("t").version()
        result = lake.commit("t", DS, _stage(lake, "t", DS, files))
        assert result["version"] == before + 1 == version  # exactly one new version
        expected = sorted(v for values in files.values() for v in values)
        assert sorted(lake.read_arrow("t", DS).column("v").to_pylist()) == expected  # the new files only
        assert sorted(Path(f).name for f in lake.files("t", DS)) == sorted(f"{n}.parquet" for n in files)
        assert lake.row_count("t", DS) == len(expected)
    assert lake.row_counts("t") == {"2024-07-08": 1, DS: 1}  # the other day is untouched
    assert lake.read_arrow("t", DS, version=2).column("v").to_pylist() == [1, 2, 3]  # the replaced version stays readable
    latest = lake.history("t")[0]
    assert {k: latest[k] for k in ("version", "ds", "rows", "rows_removed")} == {
        "version": 3, "ds": DS, "rows": "1", "rows_removed": "3"}
    assert {k: latest[k] for k in run} == {k: str(v) for k, v in run.items()}  # who wrote it
    # Staged files no commit references are invisible: a staged directory never committed changes nothing.
    _stage(lake, "t", DS, {"stray": [99]})
    assert lake.delta("t").version() == 3 and lake.read_arrow("t", DS).column("v").to_pylist() == [4]
    # A staged directory without files publishes an empty partition (a day without data), still one version.
    assert lake.commit("t", DS, lake.stage("t", DS))["version"] == 4
    assert lake.has_partition("t", DS) and lake.row_count("t", DS) == 0 and lake.read_arrow("t", DS).num_rows == 0
    with pytest.raises(FileNotFoundError, match="no Delta table"):  # nothing to say the columns of a new table
        lake.commit("new", DS, lake.stage("new", DS))
    assert not lake.exists("new") and not lake.has_partition("new", DS)


def test_settings_defaults_and_errors(tmp_path):
    s = Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path)})
    assert s.lake_root == tmp_path and s.default_backend == "dask" and s.bind_host == "127.0.0.1"
    assert s.lake_uri == _uri(tmp_path)  # a local lake directory is a file:// lake
    assert Settings.from_env({"ETL_LAKE_ROOT": str(tmp_path), "ETL_LAKE_URI": _uri(tmp_path / "u")}).lake_root == (
        tmp_path / "u").resolve()  # ETL_LAKE_URI wins
    assert not hasattr(s, "athletes_path")  # a pipeline's inputs are not platform settings
    relative = Settings.from_env({"ETL_LAKE_ROOT": "lake2"})  # relative to the project, not the cwd
    assert relative.lake_root.is_absolute() and relative.lake_root.name == "lake2"
    with pytest.raises(ConfigError, match="ETL_DEFAULT_BACKEND='flink'"):
        Settings.from_env({"ETL_DEFAULT_BACKEND": "flink"})
    with pytest.raises(ConfigError, match="ETL_LOCAL_WORKERS='two'"):
        Settings.from_env({"ETL_LOCAL_WORKERS": "two"})
    with pytest.raises(ConfigError, match="ETL_MAX_REJECT_RATIO"):
        Settings.from_env({"ETL_MAX_REJECT_RATIO": "5"})


def test_row_count_comes_from_the_log_of_every_part_and_skips_spark_markers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = Lake(tmp_path, "demo")
    uri = lake.stage("t", DS)  # inside ds=...: the name must not turn into a column
    staged = Path(lake.engine_path(uri))
    staged.mkdir(parents=True)
    pq.write_table(pa.table({"ID": [1, 2, 3]}), staged / "part.0.parquet")
    pq.write_table(pa.table({"ID": [4, 5]}), staged / "part.1.parquet")
    (staged / "_SUCCESS").write_text("")
    (staged / ".part.0.parquet.crc").write_text("crc")
    assert lake.commit("t", DS, uri)["files"] == 2
    for data in staged.glob("*.parquet"):  # the counts are in the commit log: no data file is read
        data.write_bytes(b"gone")
    assert lake.row_count("t", DS) == 5 and lake.row_counts("t") == {DS: 5}
    assert lake.row_count("t", "2024-07-08") == 0 and lake.row_count("nope", DS) == 0
    assert lake.schema("t").names == ["ID"]


def test_data_dir_is_the_shared_data_root_by_default(tmp_path):
    assert default_data_dir() == (SHARED_DATA_DIR if SHARED_DATA_DIR.is_dir() else PROJECT_ROOT / "data")
    assert SHARED_DATA_DIR == PROJECT_ROOT.parent / "shared" / "data"
    assert Settings.from_env({}).data_dir == default_data_dir()
    assert Settings.from_env({"ETL_DATA_DIR": str(tmp_path)}).data_dir == tmp_path
    assert Settings.from_env({"ETL_DATA_DIR": "somewhere"}).data_dir == PROJECT_ROOT / "somewhere"


def test_a_pipeline_can_have_a_data_root_of_its_own(tmp_path):
    from include.etl.settings import pipeline_data_dir_var

    env = {"ETL_DATA_DIR": str(tmp_path / "shared"), "ETL_DATA_DIR_NZ_TRADE": str(tmp_path / "trade"),
           "ETL_DATA_DIR_RETAIL": "rel", "ETL_DATA_DIR_OLYMPICS": " "}
    s = Settings.from_env(env)
    assert pipeline_data_dir_var("nz_trade") == "ETL_DATA_DIR_NZ_TRADE"
    assert s.pipeline_data_dir("nz_trade") == tmp_path / "trade"
    assert s.pipeline_data_dir("retail") == PROJECT_ROOT / "rel"  # relative: from the project root
    assert s.pipeline_data_dir("olympics") == s.pipeline_data_dir("movies") == tmp_path / "shared"  # blank or unset


def test_an_input_path_is_relative_to_its_data_dir_unless_absolute():
    from include.etl.settings import data_path

    assert data_path("/data", "olympics/a.csv") == "/data/olympics/a.csv"
    assert data_path("/data", "/elsewhere/a.csv") == "/elsewhere/a.csv"
    assert data_path("data", "a.csv") == str(PROJECT_ROOT / "data" / "a.csv")
    assert data_path("/data", " a.csv ") == "/data/a.csv"  # as typed in a form


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


def test_spark_java_options_reach_the_local_servers_command(tmp_path):
    from include.etl.clusters.spark_local import server_command

    assert Settings.from_env({}).spark_java_options == ""
    opts = " -XX:TieredStopAtLevel=1  -XX:+UseSerialGC "
    settings = Settings.from_env({"ETL_SPARK_JAVA_OPTIONS": opts})
    assert settings.spark_java_options == opts.strip()
    command = server_command(settings, tmp_path, 15002, 4040, tmp_path)
    java_opts = command[command.index("--driver-java-options") + 1]
    assert java_opts.startswith("-Dlog4j2.configurationFile=file:") and java_opts.endswith(opts.strip())
    assert "UseParallelGC" not in java_opts  # the user's collector, not two
    plain = server_command(Settings.from_env({}), tmp_path, 15002, 4040, tmp_path)
    assert "TieredStopAtLevel" not in " ".join(plain)
    assert "-XX:+UseParallelGC" in plain[plain.index("--driver-java-options") + 1].split()  # under 1 GiB at 5 M rows
    assert plain[plain.index("--driver-memory") + 1] == "640m"  # 5 M rows: the JVM stays under 1 GiB resident
    bigger = server_command(Settings.from_env({"ETL_SPARK_DRIVER_MEMORY": "2GiB"}), tmp_path, 15002, 4040, tmp_path)
    assert bigger[bigger.index("--driver-memory") + 1] == "2048m"
    with pytest.raises(ConfigError, match="ETL_SPARK_DRIVER_MEMORY"):
        Settings.from_env({"ETL_SPARK_DRIVER_MEMORY": "256MiB"})  # below what Spark accepts
