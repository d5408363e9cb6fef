"""The lake on a real S3 server (SeaweedFS on 127.0.0.1): Delta commits, re-runs, time travel, concurrent
writers, other engines reading the same rows, and the preflight ``check_lake``."""

from __future__ import annotations

import threading
import time
import uuid

import psutil
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from include.etl.lake import Lake
from include.etl.lake.location import LakeConfigError, LakeLocation, check_lake
from tests.s3 import S3Server, free_ports, s3_server_fixture  # noqa: F401 - the fixture `s3_server`

DS, DS2 = "2024-07-07", "2024-07-08"


def rows(start: int, n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()),
                     "name": [f"row-{i}" for i in range(start, start + n)]})


def stage(lake: Lake, table: str, ds: str, data: pa.Table, files: int = 2) -> str:
    """Write ``data`` as ``files`` Parquet files into a fresh staged directory of ``table``'s ``ds``."""
    staged = lake.stage(table, ds)
    fs, path = lake.root.filesystem(), lake.engine_path(staged)
    step = -(-data.num_rows // files)
    for i in range(files):
        pq.write_table(data.slice(i * step, step), f"{path}/part-{i}.parquet", filesystem=fs)
    return staged


def ids(table: pa.Table) -> list[int]:
    return sorted(table.column("id").to_pylist())


@pytest.fixture
def lake(s3_server) -> Lake:
    """A pipeline ``demo`` in a lake of its own under the server's bucket."""
    return Lake(s3_server.location(f"t-{uuid.uuid4().hex[:8]}"), "demo")


def test_the_server_listens_on_loopback_only_and_wants_its_keys(s3_server: S3Server):
    listening = [c.laddr for c in psutil.Process(s3_server.proc.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    host = s3_server.endpoint.removeprefix("http://")

    def bucket_info(**keys):
        fs = pafs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1", **keys)
        return fs.get_file_info(s3_server.bucket).type

    assert bucket_info(access_key=s3_server.access_key, secret_key=s3_server.secret_key) == pafs.FileType.Directory
    for keys in ({"access_key": s3_server.access_key, "secret_key": "wrong"},
                 {"access_key": "nobody", "secret_key": s3_server.secret_key}, {"anonymous": True}):
        with pytest.raises(OSError, match="ACCESS_DENIED"):
            bucket_info(**keys)


def test_commit_read_rerun_and_time_travel(lake: Lake):
    first = lake.commit("orders", DS, stage(lake, "orders", DS, rows(0, 10)))
    assert first["rows"] == 10 and first["files"] == 2
    assert ids(lake.read_arrow("orders", DS)) == list(range(10))

    staged = stage(lake, "orders", DS, rows(100, 10), files=3)  # staged, not committed: no reader sees it
    assert ids(lake.read_arrow("orders", DS)) == list(range(10))
    rerun = lake.commit("orders", DS, staged)
    assert rerun["version"] == first["version"] + 1 and rerun["files"] == 3
    assert ids(lake.read_arrow("orders", DS)) == list(range(100, 110))  # replaced, not doubled
    assert lake.row_count("orders", DS) == 10
    assert ids(lake.read_arrow("orders", DS, version=first["version"])) == list(range(10))
    latest = lake.history("orders")[0]
    assert (latest["version"], latest["ds"]) == (rerun["version"], DS)
    assert (latest["rows"], latest["rows_removed"]) == ("10", "10")


def test_an_empty_partition_is_published(lake: Lake):
    lake.commit("orders", DS, stage(lake, "orders", DS, rows(0, 4)))
    empty = lake.commit("orders", DS2, None)
    assert empty["rows"] == 0
    assert lake.read_arrow("orders", DS2).num_rows == 0 and lake.has_partition("orders", DS2)
    lake.commit("orders", DS, None)  # a re-run that found nothing empties the day
    assert lake.read_arrow("orders", DS).num_rows == 0 and lake.row_count("orders", DS) == 0
    # A new table's first day may be empty when its columns are given.
    lake.commit("refunds", DS, None, schema=rows(0, 0).schema)
    assert lake.read_arrow("refunds", DS).schema.names == ["id", "name"] and lake.has_partition("refunds", DS)


def test_two_writers_commit_different_days_of_one_table_at_once(lake: Lake):
    lake.commit("orders", "2024-07-01", stage(lake, "orders", "2024-07-01", rows(0, 3)))
    days = {"2024-07-07": rows(0, 5), "2024-07-08": rows(50, 7)}
    staged = {ds: stage(lake, "orders", ds, data) for ds, data in days.items()}
    barrier, errors = threading.Barrier(len(days)), []

    def commit(ds: str) -> None:
        try:
            barrier.wait()
            lake.commit("orders", ds, staged[ds])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(ds,)) for ds in days]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for ds, data in days.items():
        assert ids(lake.read_arrow("orders", ds)) == ids(data)
    commits = [e for e in lake.history("orders") if e.get("ds") in days]
    assert sorted(e["ds"] for e in commits) == sorted(days) and len({e["version"] for e in commits}) == 2
    assert lake.delta("orders").version() == 3


def test_duckdb_and_polars_read_the_same_rows(lake: Lake):
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    lake.commit("orders", DS, stage(lake, "orders", DS, rows(0, 6)))
    lake.commit("orders", DS2, stage(lake, "orders", DS2, rows(10, 4)))
    lake.commit("orders", DS, stage(lake, "orders", DS, rows(20, 6)))  # a re-run: readers see its rows only
    uri, options = lake.table_uri("orders"), dict(lake.location.storage_options)
    expected = sorted((r["id"], r["name"]) for r in lake.read_arrow("orders", DS).to_pylist())
    assert [i for i, _ in expected] == list(range(20, 26))

    con = duckdb.connect()
    con.register("orders", DeltaTable(uri, storage_options=options).to_pyarrow_dataset())
    assert con.sql(f"SELECT id, name FROM orders WHERE ds = '{DS}' ORDER BY id").fetchall() == expected
    assert con.sql("SELECT count(*) FROM orders").fetchone() == (10,)

    frame = pl.read_delta(uri, storage_options=options).filter(pl.col("ds") == DS).sort("id")
    assert list(frame.select("id", "name").iter_rows()) == expected


def test_check_lake_passes_on_a_good_config_quickly(s3_server: S3Server):
    location = s3_server.location(f"check-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    check_lake(location)
    assert time.monotonic() - started < 2
    fs = location.filesystem()
    left = fs.get_file_info(pafs.FileSelector(location.fs_path(location.uri), allow_not_found=True, recursive=True))
    assert [i.path for i in left if i.type == pafs.FileType.File] == []  # the marker is deleted


def test_check_lake_passes_with_the_aws_variables_only(s3_server: S3Server):
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
           "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_REGION": "us-east-1"}
    check_lake(LakeLocation.resolve(f"s3://{s3_server.bucket}/from-env", "lake_default", env=env))


def _bad_locations(server: S3Server) -> dict[str, tuple[LakeLocation, str]]:
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    conn = server.conn()
    return {
        "wrong secret": (server.location("x", "my_lake", password="not-" + server.secret_key), "keys were refused"),
        "unknown key": (server.location("x", "my_lake", login="nobody"), "keys were refused"),
        "missing bucket": (LakeLocation.resolve("s3://nosuchbucket/x", "my_lake",
                                                env={"AIRFLOW_CONN_MY_LAKE": server.conn_json()}),
                           "the bucket 'nosuchbucket' does not exist"),
        "closed port": (server.location("x", "my_lake", extra={**conn["extra"], "endpoint_url": closed}),
                        f"the endpoint {closed} is unreachable"),
    }


@pytest.mark.parametrize("case", ["wrong secret", "unknown key", "missing bucket", "closed port"])
def test_check_lake_names_the_lake_the_connection_and_the_problem(s3_server: S3Server, case: str):
    location, problem = _bad_locations(s3_server)[case]
    started = time.monotonic()
    with pytest.raises(LakeConfigError) as err:
        check_lake(location)
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert location.uri in message and "'my_lake'" in message and problem in message, message
    for secret in (s3_server.secret_key, location.storage_options["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in message and secret not in repr(location)
    if case == "missing bucket":  # the check does not create it
        fs = s3_server.location("x").filesystem()
        assert fs.get_file_info("nosuchbucket").type == pafs.FileType.NotFound
