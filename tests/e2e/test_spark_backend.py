"""The Spark backend end to end: a real local Spark Connect server started from the pyspark
package, the Olympics jobs on it compared with the same jobs on a real local Dask cluster,
attaching to a configured server, failures, and no leaked JVMs.

One Spark Connect server (and one Dask cluster) is shared by the module: starting a JVM costs
about 10 s on these machines.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from etl_platform.hooks import get_cluster_hook
from etl_platform.hooks.spark import SparkClusterHook
from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.jobs import JobContext, resolve_job
from include.etl.lake import Lake
from include.etl.settings import ConfigError, Settings
from tests.conftest import DATA as _DATA
from tests.e2e.stack import free_port
from tests.lake import part, published, read_partition, rejects
from tests.procs import processes_with_env

DS = "2024-07-07"
ROOT = Path(__file__).resolve().parents[2]
DATA = _DATA  # the shared Olympics data set, under ETL_DATA_DIR
SHIPPED = {
    "athletes": str(DATA / "athlete_events_head.csv"),
    "regions": str(DATA / "noc_regions.csv"),
    "venues": str(DATA / "host_city_locations.csv"),
}
TABLES = ("athletes", "regions", "venues", "enriched", "avg_age_by_year", "medals_by_region")


def _kill_leftovers(prefix: str) -> list[int]:
    """Safety net: SIGKILL every process that inherited a cluster workdir under ``prefix``."""
    left = processes_with_env(prefix)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("spark-backend")
    yield path
    assert _kill_leftovers(str(path)) == [], "a test left cluster processes running"


@pytest.fixture(scope="module")
def settings(base):
    return Settings.from_env({"ETL_LAKE_ROOT": str(base / "lake"), "ETL_LOCAL_WORKERS": "2", "ETL_LOCAL_THREADS": "1",
                              "ETL_SPARK_JAVA_OPTIONS": os.environ["ETL_SPARK_JAVA_OPTIONS"]})


@pytest.fixture(scope="module")
def spark(base, settings):
    """(hook, handle) of a local Spark Connect server started by the hook, stopped at module end."""
    hook = SparkClusterHook(settings=settings)
    t0 = time.monotonic()
    # A server of the module's own, started as the runtime's owner starts one.
    from include.etl.clusters.spark_local import start_local_spark_connect

    handle = start_local_spark_connect(settings, base / "spark")
    handle.extra["start_s"] = round(time.monotonic() - t0, 2)
    try:
        yield hook, handle
    finally:
        hook.stop(handle)
        _kill_leftovers(str(base / "spark"))


@pytest.fixture(scope="module")
def dask_engine(base, settings):
    from distributed import Client

    from include.etl.clusters.dask_local import start_local_dask, stop_local_dask
    from include.etl.engines.dask import DaskEngine

    handle = start_local_dask(settings, base / "dask")
    try:
        with Client(handle.address, timeout=30, set_as_default=False) as client:
            yield DaskEngine(client)
    finally:
        stop_local_dask(handle)
        _kill_leftovers(str(base / "dask"))


@pytest.fixture
def spark_engine(spark, settings):
    hook, handle = spark
    job_hook = SparkClusterHook(settings=settings)  # as SparkJobOperator does: a new hook per task
    engine = job_hook.engine(ClusterHandle.from_dict(handle.to_dict()))
    yield engine
    job_hook.close()


def run_jobs(engine, lake_root: Path, sources: dict[str, str], max_reject_ratio: float = 0.01) -> dict:
    """The olympics_etl DAG's jobs in order; returns each job's summary and wall time."""
    ctx = JobContext(engine=engine, lake=Lake(lake_root, "olympics"), ds=DS, max_reject_ratio=max_reject_ratio)
    steps = [(f"ingest_{t}", "olympics.ingest", {"table": t, "source": s}) for t, s in sources.items()]
    steps += [("enrich", "olympics.enrich", {}), ("aggregate", "olympics.aggregate", {}), ("noop", "noop", {})]
    out = {}
    for name, job, kwargs in steps:
        t0 = time.monotonic()
        summary = resolve_job(job)(ctx, **kwargs)
        out[name] = {"summary": summary, "seconds": round(time.monotonic() - t0, 3)}
    return out


def read_table(path: Path):
    """A published partition (:func:`tests.lake.part`) as (arrow schema types, pandas frame sorted on every column)."""
    import pyarrow as pa

    table = read_partition(path)
    table = table.replace_schema_metadata(None)  # compare values, not pandas' dtype metadata
    types = {f.name: ("string" if f.type in (pa.string(), pa.large_string()) else str(f.type)) for f in table.schema}
    frame = table.to_pandas()
    frame = frame.sort_values(list(frame.columns), na_position="last", kind="stable").reset_index(drop=True)
    return types, frame


def assert_same_table(a: Path, b: Path) -> None:
    import pandas as pd

    types_a, frame_a = read_table(a)
    types_b, frame_b = read_table(b)
    assert types_a == types_b, f"{a} vs {b}"
    pd.testing.assert_frame_equal(frame_a, frame_b, check_exact=False, rtol=1e-9, obj=str(a.name))


# --- no cluster needed ----------------------------------------------------------------------------


def test_pyspark_matches_its_bundled_spark_jars():
    import pyspark

    jars = list((Path(pyspark.__file__).parent / "jars").glob("spark-core_*.jar"))
    assert len(jars) == 1, jars
    version = re.fullmatch(r"spark-core_[\d.]+-(.+)\.jar", jars[0].name).group(1)
    assert version == pyspark.__version__


def test_java_check_accepts_installed_java_and_rejects_missing_or_old(tmp_path, monkeypatch):
    from include.etl.clusters.spark_local import check_java, start_local_spark_connect

    assert check_java() >= 17
    with pytest.raises(ClusterStartError, match=r"no Java found \(JAVA_HOME=/nonexistent\).*Java 17"):
        check_java({"JAVA_HOME": "/nonexistent", "PATH": os.environ["PATH"]})
    fake = tmp_path / "jdk11" / "bin" / "java"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho \'openjdk version "11.0.22" 2024-01-16\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk11"))
    with pytest.raises(ClusterStartError, match=rf"^Java 11 at {fake} is too old; the Spark backend needs Java 17") as err:
        start_local_spark_connect(Settings.from_env({}), tmp_path / "w")
    assert "\n" not in str(err.value)
    assert processes_with_env(str(tmp_path)) == []


def test_server_that_dies_while_starting_fails_with_its_log_and_leaves_nothing(tmp_path, monkeypatch):
    from include.etl.clusters import spark_local

    command = spark_local.server_command

    def too_small(*args):
        args = command(*args)
        args[args.index("--driver-memory") + 1] = "1k"
        return args

    monkeypatch.setattr(spark_local, "server_command", too_small)
    with pytest.raises(ClusterStartError, match=r"(?s)exited with code 1 while starting; its log .*spark-connect\.log "
                                                r"ends with:.*Too small maximum heap"):
        spark_local.start_local_spark_connect(Settings.from_env({}), tmp_path / "w", timeout=60)
    assert processes_with_env(str(tmp_path)) == []


def test_unusable_bind_host_is_one_clear_error(tmp_path):
    from include.etl.clusters.spark_local import start_local_spark_connect

    with pytest.raises(ClusterStartError, match=r"cannot listen on 192\.0\.2\.77 \(ETL_BIND_HOST\)"):
        start_local_spark_connect(Settings.from_env({"ETL_BIND_HOST": "192.0.2.77"}), tmp_path / "w")


def test_ports_are_read_from_this_start_s_part_of_the_log(tmp_path):
    from include.etl.clusters.spark_local import _reported_port, _ui_url

    log = tmp_path / "spark-connect.log"
    log.write_text("INFO SparkConnectServer: Spark Connect server started at: 127.0.0.1:41000\n")  # an earlier try
    offset = log.stat().st_size
    assert _reported_port(log, offset) is None and _ui_url(log, offset) is None
    with log.open("a") as f:
        f.write("26/11/21 13:35:56 INFO JettyUtils: Start Jetty 127.0.0.1:4041 for SparkUI\n"
                "26/11/21 13:35:57 INFO Utils: Successfully started service 'SparkUI' on port 4042.\n"
                "26/11/21 13:36:01 INFO SparkConnectServer: Spark Connect server started at: 127.0.0.1:41001\n")
    assert _reported_port(log, offset) == 41001
    assert _ui_url(log, offset) == "http://127.0.0.1:4042"


def test_unreachable_connection_fails_fast_naming_its_address(tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CONNECT_DEFAULT", f"sc://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(ClusterStartError, match=rf"Spark Connect server at sc://127.0.0.1:{port}.*'spark_connect_default'"):
        get_cluster_hook("spark", settings=Settings.from_env({})).start_or_attach(tmp_path / "w")
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "w").exists()


def test_something_else_on_the_port_fails_within_the_timeout():
    from include.etl.clusters.spark_local import check_spark_connect

    with socket.socket() as server:  # accepts connections, speaks no gRPC
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        stop = threading.Event()

        def answer():
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                with conn:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(ClusterStartError, match=rf"server at sc://127.0.0.1:{port} does not answer queries"):
                check_spark_connect(f"sc://127.0.0.1:{port}", timeout=2)
        finally:
            stop.set()
            thread.join(5)
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sc://spark-connect:15002", ("sc://spark-connect:15002", "sc://spark-connect:15002", None)),
        ("sc://spark-connect", ("sc://spark-connect:15002", "sc://spark-connect", None)),
        (  # the provider's SparkConnectHook builds the URL with the credentials
            "spark-connect://me:s%3Acret@spark-connect:443?use_ssl=True&dashboard_url=http%3A%2F%2Fui%3A4040",
            ("sc://spark-connect:443", "sc://spark-connect:443/;user_id=me;token=s%3Acret;use_ssl=True", "http://ui:4040"),
        ),
    ],
)
def test_connection_uri_becomes_spark_connect_address(monkeypatch, uri, expected):
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CONNECT_DEFAULT", uri)
    assert SparkClusterHook(settings=Settings.from_env({})).configured_address() == expected


def test_spark_standalone_connection_is_a_clear_config_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CONNECT_DEFAULT", "spark://spark-master:7077")
    with pytest.raises(ConfigError, match="only Spark Connect endpoints are supported yet"):
        SparkClusterHook(settings=Settings.from_env({})).start_or_attach(Path("/nonexistent"))


def test_attached_handle_is_never_stopped_by_the_process_layer():
    from include.etl.clusters.spark_local import stop_local_spark_connect

    with pytest.raises(ValueError, match="attached, not started here"):
        stop_local_spark_connect(ClusterHandle("spark", "sc://10.0.0.1:15002", owned=False))


# --- on a real Spark Connect server ---------------------------------------------------------------


def _listening_hosts(pids: list[int]) -> set[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    hosts = set()
    for line in out.splitlines():
        if any(f"pid={p}," in line for p in pids):
            host = line.split()[3].rsplit(":", 1)[0].strip("[]")
            hosts.add(host.removeprefix("::ffff:"))
    return hosts


@pytest.mark.slow
def test_local_server_is_bound_to_loopback_and_usable_from_a_handle(spark, spark_engine, base):
    import pyspark

    hook, handle = spark
    assert handle.owned and handle.backend == "spark" and handle.conn_id is None
    assert re.fullmatch(r"sc://127\.0\.0\.1:\d+", handle.address)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", handle.dashboard_url)
    assert handle.extra["spark_version"] == pyspark.__version__
    assert (base / "spark" / "spark-connect.log").stat().st_size > 0
    procs = processes_with_env(str(base / "spark"))
    assert handle.pids[0] in procs
    hosts = _listening_hosts(procs)
    assert hosts and hosts <= {"127.0.0.1"}, hosts  # gRPC, UI, driver RPC, block manager
    session = spark_engine.session
    assert session.session_id == handle.extra["session_id"]  # tasks join the run's session
    assert session.conf.get("spark.sql.shuffle.partitions") == "4"
    assert session.conf.get("spark.master") == "local[2,3]"
    spark_engine.run_noop()


@pytest.mark.slow
def test_olympics_jobs_on_spark_equal_dask(spark, spark_engine, dask_engine, base):
    spark_lake, dask_lake = base / "lake-spark", base / "lake-dask"
    on_spark = run_jobs(spark_engine, spark_lake, SHIPPED)
    on_dask = run_jobs(dask_engine, dask_lake, SHIPPED)
    print("start (s):", spark[1].extra["start_s"], spark[1].extra)
    print("spark (s):", {k: v["seconds"] for k, v in on_spark.items()})
    print("dask  (s):", {k: v["seconds"] for k, v in on_dask.items()})

    for table, rows in (("athletes", 3505), ("regions", 230), ("venues", 52)):
        summary = on_spark[f"ingest_{table}"]["summary"]
        assert (summary["rows_in"], summary["rows_accepted"], summary["rows_rejected"]) == (rows, rows, 0), summary
        assert summary == {**on_dask[f"ingest_{table}"]["summary"], "path": summary["path"],
                           "rejects_path": summary["rejects_path"]}
    assert on_spark["enrich"]["summary"]["rows_out"] == on_dask["enrich"]["summary"]["rows_out"] == 3505
    for mart in ("avg_age_by_year", "medals_by_region"):
        assert on_spark["aggregate"]["summary"][mart]["rows_out"] == on_dask["aggregate"]["summary"][mart]["rows_out"]
    for table in TABLES:
        assert_same_table(part(spark_lake, "olympics", table, DS), part(dask_lake, "olympics", table, DS))

    import pandas as pd

    medals = read_table(part(spark_lake, "olympics", "medals_by_region", DS))[1]
    assert not medals["region"].isna().any() and (medals["total"] > 0).all()
    ages = read_table(part(spark_lake, "olympics", "avg_age_by_year", DS))[1]
    assert pd.api.types.is_float_dtype(ages["avg_age"]) and (ages["n"] >= 0).all()


@pytest.mark.slow  # real engines (a JVM)
def test_generated_edge_cases_give_identical_tables_on_both_engines(spark_engine, dask_engine, base):
    """20,000 generated rows with the generator's edge cases (names with quotes, commas and
    non-ASCII letters, NOCs absent from the regions, missing values): every table, rejects
    included, is identical on Spark and Dask, and the marts equal the independent SQLite
    computation. (On the module's warm clusters: through `dags test` this took 76 s.)"""
    from include.pipelines.olympics.generate import generate_athletes
    from tests.e2e.expected import assert_marts_match

    data = base / "edge-cases"
    summary = generate_athletes(data, rows=20_000, seed=7, edge_cases=True)
    assert summary["rows"] == 20_000 and summary["edge_rows"]
    sources = {"athletes": summary["athletes_path"], "regions": summary["regions_path"], "venues": summary["venues_path"]}
    lakes = {"spark": base / "edge-spark", "dask": base / "edge-dask"}
    runs = {"spark": run_jobs(spark_engine, lakes["spark"], sources), "dask": run_jobs(dask_engine, lakes["dask"], sources)}
    for name, run in runs.items():
        athletes = run["ingest_athletes"]["summary"]
        assert athletes["rows_in"] == athletes["rows_accepted"] + athletes["rows_rejected"] == 20_000, (name, athletes)
        assert run["enrich"]["summary"]["rows_out"] == athletes["rows_accepted"], name
        assert_marts_match(lakes[name], DS, data, athletes=Path(sources["athletes"]).name)
    assert runs["spark"]["ingest_athletes"]["summary"]["rows_rejected"] == runs["dask"]["ingest_athletes"]["summary"]["rows_rejected"]
    for table in TABLES:
        assert_same_table(part(lakes["spark"], "olympics", table, DS), part(lakes["dask"], "olympics", table, DS))
    if runs["spark"]["ingest_athletes"]["summary"]["rows_rejected"]:
        assert_same_table(rejects(lakes["spark"], "olympics", "athletes", DS), rejects(lakes["dask"], "olympics", "athletes", DS))


def _crafted_inputs(folder: Path) -> dict[str, str]:
    """Small inputs with bad values, in each file's real line-ending style."""
    folder.mkdir()
    lines = (DATA / "athlete_events_head.csv").read_text().splitlines()[:21]
    edits = {  # file line -> (old, new): not a number, missing required ID, bad Season, bad Medal
        4: ('"M",24,', '"M",abc,'), 6: ('"5",', "NA,"), 9: ('"Winter","Albertville"', '"Spring","Albertville"'),
        13: ('kilometres",NA', 'kilometres","Platinum"'),
    }
    for line, (old, new) in edits.items():
        assert old in lines[line - 1]
        lines[line - 1] = lines[line - 1].replace(old, new, 1)
    athletes = folder / "athletes.csv"
    athletes.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    regions = folder / "regions.csv"
    regions.write_bytes(b"NOC,region,notes\rAFG,Afghanistan,\rAFG,Again,dup\r,Nowhere,\rSGP,Singapore,\"a \"\"quoted\"\" note\"")
    venues = folder / "venues.csv"
    venues.write_bytes(b"Year,Season,City,lon,lat\n1992,Summer,Barcelona,2.17,41.38\n1900,Summer,Paris,north,48.85\n"
                       b"2016,Summer,Rio de Janeiro,-43.2,-22.9\n")
    return {"athletes": str(athletes), "regions": str(regions), "venues": str(venues)}


@pytest.mark.slow
def test_rejects_are_the_same_on_both_engines(spark_engine, dask_engine, base):
    sources = _crafted_inputs(base / "crafted")
    on_spark = run_jobs(spark_engine, base / "crafted-spark", sources, max_reject_ratio=1.0)
    run_jobs(dask_engine, base / "crafted-dask", sources, max_reject_ratio=1.0)
    assert {t: on_spark[f"ingest_{t}"]["summary"]["rows_rejected"] for t in sources} == {
        "athletes": 4, "regions": 2, "venues": 1}
    for table in ("athletes", "regions", "venues"):
        spark_lake, dask_lake = base / "crafted-spark", base / "crafted-dask"
        assert_same_table(part(spark_lake, "olympics", table, DS), part(dask_lake, "olympics", table, DS))
        assert_same_table(rejects(spark_lake, "olympics", table, DS), rejects(dask_lake, "olympics", table, DS))
    rejected = read_table(rejects(base / "crafted-spark", "olympics", "regions", DS))[1]
    assert rejected[["_line", "_reason"]].values.tolist() == [[3, "duplicate key (NOC)"], [4, "missing required NOC"]]
    notes = read_table(part(base / "crafted-spark", "olympics", "regions", DS))[1].set_index("NOC")["notes"]
    assert notes["SGP"] == 'a "quoted" note'


@pytest.mark.slow
def test_malformed_rows_are_rejected_not_padded_or_truncated(spark_engine, base):
    # Spark's PERMISSIVE mode pads short rows and truncates long ones; the engine rejects both.
    src = base / "malformed.csv"
    src.write_text("Year,Season,City,lon,lat\n1992,Summer,Barcelona,2.17,41.38\n1996,Summer,Atlanta\n"
                   "2000,Summer,Sydney,151.2,-33.9,extra\n")
    ctx = JobContext(engine=spark_engine, lake=Lake(base / "malformed", "olympics"), ds=DS, max_reject_ratio=1.0)
    summary = resolve_job("olympics.ingest")(ctx, table="venues", source=str(src))
    assert (summary["rows_accepted"], summary["rows_rejected"]) == (1, 2)
    assert summary["rejects_path"] == Lake(base / "malformed", "olympics").table_uri("_rejects/venues")
    rejected = read_table(rejects(base / "malformed", "olympics", "venues", DS))[1]
    assert rejected[["_line", "_raw", "_reason"]].values.tolist() == [
        [3, "1996,Summer,Atlanta", "expected 5 fields, found 3"],
        [4, "2000,Summer,Sydney,151.2,-33.9,extra", "expected 5 fields, found 6"],
    ]


@pytest.mark.slow
def test_workers_that_cannot_run_job_code_fail_the_health_check(spark, monkeypatch):
    from include.etl.clusters import spark_local

    def probe(session):
        def needs_missing_module(batches):
            import etl_module_that_is_not_installed  # noqa: F401

            yield from batches

        session.range(0, 2, numPartitions=2).mapInPandas(needs_missing_module, "id bigint").collect()

    monkeypatch.setattr("include.etl.engines.spark.probe_python_workers", probe)
    address = spark[1].address
    with pytest.raises(ClusterStartError, match=rf"at {address} cannot run the job code in its Python workers .*"
                                                r"No module named 'etl_module_that_is_not_installed'"):
        spark_local.check_spark_connect(address)


def _long_query_in_a_task(hook: SparkClusterHook, handle: ClusterHandle, errors: list, ready: threading.Event):
    """Like SparkJobOperator.execute: get the engine and run the job in the same thread."""
    engine = hook.engine(handle)
    ready.set()
    try:
        engine.session.range(0, 10**12, numPartitions=2).selectExpr("sum(id % 7)").collect()
    except BaseException as exc:  # noqa: BLE001 - the interruption is what we wait for
        errors.append(exc)


@pytest.mark.slow
def test_cancel_interrupts_only_its_own_task_and_leaves_the_server_up(spark, settings):
    hook, handle = spark
    assert handle.extra.get("session_id"), "the start keeps a run session for the tasks to share"
    tasks = []
    for _ in range(2):  # two tasks of the run, sharing the run's session
        job_hook, errors, ready = SparkClusterHook(settings=settings), [], threading.Event()
        thread = threading.Thread(target=_long_query_in_a_task, args=(job_hook, handle, errors, ready), daemon=True)
        thread.start()
        assert ready.wait(60)
        tasks.append((job_hook, thread, errors))
    time.sleep(2)
    for n, (job_hook, thread, errors) in enumerate(tasks):
        assert job_hook._shared and job_hook._session.session_id == handle.extra["session_id"]
        t0 = time.monotonic()
        job_hook.cancel()  # what on_kill does
        thread.join(30)
        assert not thread.is_alive() and errors, "the query was not interrupted"
        assert time.monotonic() - t0 < 30 and job_hook._session is None
        if n == 0:
            other_thread = tasks[1][1]
            assert other_thread.is_alive(), "cancelling one task interrupted another task's work"
    from include.etl.clusters.spark_local import check_spark_connect

    check_spark_connect(handle.address, python=False)  # the server itself is untouched


@pytest.mark.slow
def test_attach_to_configured_server_leaves_it_running_and_owner_stops_it_twice(base, settings, monkeypatch):
    # Stands in for a compose service: a Spark Connect server this test owns, in its own process group.
    # Its first free port is taken by an HTTP server before the JVM binds it (the race seen in CI):
    # the handle must carry the port the server really listens on, not the chosen one.
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import include.etl.clusters.spark_local as spark_local

    squatters: list[HTTPServer] = []
    real_free_port = spark_local.free_port

    def free_port_then_taken(host):
        port = real_free_port(host)
        if not squatters:
            squatters.append(HTTPServer((host, port), BaseHTTPRequestHandler))
            threading.Thread(target=squatters[0].serve_forever, daemon=True).start()
        return port

    monkeypatch.setattr(spark_local, "free_port", free_port_then_taken)
    owner = SparkClusterHook(settings=settings)
    try:
        external = spark_local.start_local_spark_connect(settings, base / "external")
    finally:
        squatters[0].shutdown()
        squatters[0].server_close()
    assert external.address != f"sc://127.0.0.1:{squatters[0].server_address[1]}"
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SPARK_CONNECT_DEFAULT", external.address)
        hook = get_cluster_hook("spark", settings=settings)
        handle = hook.start_or_attach(base / "unused")
        assert not handle.owned and handle.address == external.address and handle.conn_id == "spark_connect_default"
        assert handle.pids == [] and not (base / "unused").exists()
        # A job task attaches through the handle from XCom, runs, closes its session.
        job_hook = get_cluster_hook(handle.backend, handle.conn_id, settings=settings)
        ctx = JobContext(engine=job_hook.engine(ClusterHandle.from_dict(handle.to_dict())), lake=Lake(base / "l", "olympics"), ds=DS)
        assert resolve_job("noop")(ctx) == {"job": "noop"}
        assert job_hook._shared and ctx.engine.session.session_id == handle.extra["session_id"]
        job_hook.close()
        assert job_hook._shared is False and job_hook._session is None
        assert hook.stop(handle) == []
        assert external.pids[0] in processes_with_env(str(base / "external")), "attached server was stopped"
        from include.etl.clusters.spark_local import check_spark_connect, connect

        check_spark_connect(external.address)
        # stop() released the run's session on the attached server; a late task falls back to a new session.
        with pytest.raises(Exception, match="SESSION_CLOSED"):
            connect(external.address, handle.extra["session_id"]).range(1).count()
        late = get_cluster_hook("spark", "spark_connect_default", settings=settings)
        late.engine(handle).run_noop()
        assert late._shared is False and late._session.session_id != handle.extra["session_id"]
        late.close()
    finally:
        first = owner.stop(external)
    assert first == external.pids
    assert owner.stop(external) == []  # second stop: nothing left, no error
    assert processes_with_env(str(base / "external")) == []
    jvms = subprocess.run(["pgrep", "-f", f"SparkConnectServer.*{base / 'external'}"], capture_output=True, text=True)
    assert jvms.stdout.strip() == ""


HEADER = '"ID","Name","Sex","Age","Height","Weight","Team","NOC","Games","Year","Season","City","Sport","Event","Medal"'
GOOD_ROW = '"{id}","Ann ""Annie"" O\'Neil, Jr.","F",24,170,60,"China","CHN","1992 Summer",1992,"Summer","Barcelona","Judo","Judo Women\'s Lightweight",NA'
BAD_ROWS = {  # line text -> reason (each case of issue 5's row-level list)
    '"101","Too Few","M",24,170': "expected 15 fields, found 5",
    GOOD_ROW.format(id=102) + ',"extra"': "expected 15 fields, found 16",
    '"103","Unterminated,"M",24,170,60,"China","CHN","1992 Summer",1992,"Summer","Barcelona","Judo","Judo",NA':
        "malformed CSV line (',' expected after '\"')",
    GOOD_ROW.format(id=104).replace(",24,", ",abc,"): "Age is not a number",
    GOOD_ROW.format(id=105).replace('"F"', '"X"'): "Sex not in M/F",
    GOOD_ROW.format(id=106).replace('"Summer","Barcelona"', '"Spring","Barcelona"'): "Season not in Summer/Winter",
    GOOD_ROW.format(id=107).replace(",NA", ',"Platinum"'): "Medal not in Gold/Silver/Bronze",
    GOOD_ROW.format(id=108).replace(",24,", ",-1,"): "Age outside [0, 120]",
    GOOD_ROW.format(id=109).replace(",24,", ",121,"): "Age outside [0, 120]",
    GOOD_ROW.format(id="NA"): "missing required ID",
    GOOD_ROW.format(id=111).replace(',1992,"Summer"', ',NA,"Summer"'): "missing required Year",
    GOOD_ROW.format(id=112).replace('"CHN"', '""'): "missing required NOC",
}


@pytest.mark.slow
def test_every_bad_row_kind_is_rejected_alike_on_both_engines(spark_engine, dask_engine, base):
    good = [GOOD_ROW.format(id=i) for i in range(1, 6)]
    lines = [HEADER, *good, *BAD_ROWS]
    data = "\r\n".join(lines).encode() + b"\r\n"
    invalid_utf8 = GOOD_ROW.format(id=113).encode().replace(b"Annie", b"Ann\xff\xfeie")
    data += invalid_utf8 + b"\r\n"
    src = base / "bad_rows" / "athlete_events.csv"
    src.parent.mkdir()
    src.write_bytes(data)
    expected = [[i + 2 + len(good), line, reason] for i, (line, reason) in enumerate(BAD_ROWS.items())]
    expected.append([len(lines) + 1, None, "not valid UTF-8"])
    results = {}
    for name, engine in (("spark", spark_engine), ("dask", dask_engine)):
        ctx = JobContext(engine=engine, lake=Lake(base / f"bad_rows-{name}", "olympics"), ds=DS, max_reject_ratio=1.0)
        summary = resolve_job("olympics.ingest")(ctx, table="athletes", source=str(src))
        assert summary["rows_in"] == len(good) + len(BAD_ROWS) + 1 == summary["rows_accepted"] + summary["rows_rejected"]
        assert (summary["rows_accepted"], summary["rows_rejected"]) == (len(good), len(BAD_ROWS) + 1)
        assert summary["rejects_path"] == ctx.lake.table_uri("_rejects/athletes")
        rejected = read_table(rejects(base / f"bad_rows-{name}", "olympics", "athletes", DS))[1].sort_values("_line")
        got = rejected[["_line", "_raw", "_reason"]].values.tolist()
        assert [g[2] for g in got] == [e[2] for e in expected], name
        assert [g[0] for g in got] == [e[0] for e in expected], name
        assert [g[1] for g in got[:-1]] == [e[1] for e in expected[:-1]], name
        assert "\ufffd" in got[-1][1]  # the undecodable line is kept, bad bytes marked
        assert set(rejected["_source"]) == {str(src)}
        results[name] = summary
    assert_same_table(part(base / "bad_rows-spark", "olympics", "athletes", DS), part(base / "bad_rows-dask", "olympics", "athletes", DS))
    assert_same_table(rejects(base / "bad_rows-spark", "olympics", "athletes", DS), rejects(base / "bad_rows-dask", "olympics", "athletes", DS))


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["spark", "dask"])
def test_too_many_rejects_fail_and_publish_nothing(engine_name, spark_engine, dask_engine, base):
    from include.etl.errors import RejectThresholdExceeded

    engine = {"spark": spark_engine, "dask": dask_engine}[engine_name]
    src = base / f"mostly_bad_{engine_name}.csv"
    src.write_text("\n".join([HEADER, GOOD_ROW.format(id=1), *list(BAD_ROWS)[:3]]) + "\n")
    lake = Lake(base / f"mostly_bad-{engine_name}", "olympics")
    ctx = JobContext(engine=engine, lake=lake, ds=DS, max_reject_ratio=0.01)
    with pytest.raises(RejectThresholdExceeded, match=rf"athletes input {src}: 3 of 4 rows rejected \(75.00%\)"):
        resolve_job("olympics.ingest")(ctx, table="athletes", source=str(src))
    lake_root = base / f"mostly_bad-{engine_name}"
    assert not published(part(lake_root, "olympics", "athletes", DS))
    assert not published(rejects(lake_root, "olympics", "athletes", DS))
    assert not lake.exists("athletes") and not lake.exists(lake.rejects("athletes"))  # no commit at all


@pytest.mark.parametrize("engine_name", ["spark", "dask"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file does not exist"),
        (b"", "file is empty"),
        (b"ID,Name,Sex\r\n1,A,M\r\n", "header is missing required columns ['Age', 'Height'"),
        (HEADER.replace(",", ";").encode() + b"\r\n", "looks ';'-delimited"),
    ],
)
def test_unusable_files_fail_with_one_message_naming_the_file(engine_name, content, message, base, request):
    from include.etl.errors import InputFileError

    engine = request.getfixturevalue(f"{engine_name}_engine") if content is not None else object()
    src = base / f"unusable_{engine_name}_{abs(hash(content))}.csv"
    if content is not None:
        src.write_bytes(content)
    ctx = JobContext(engine=engine, lake=Lake(base / "unusable", "olympics"), ds=DS)
    with pytest.raises(InputFileError, match=rf"^athletes input {src}: .*{re.escape(message)}"):
        resolve_job("olympics.ingest")(ctx, table="athletes", source=str(src))


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["spark", "dask"])
def test_failed_quality_check_keeps_the_published_marts(engine_name, spark_engine, dask_engine, base):
    from include.etl.errors import QualityCheckFailed

    engine = {"spark": spark_engine, "dask": dask_engine}[engine_name]
    lake_root = base / f"quality-{engine_name}"
    run_jobs(engine, lake_root, SHIPPED)
    lake = Lake(lake_root, "olympics")
    marts = ("avg_age_by_year", "medals_by_region")
    before = {m: read_table(part(lake_root, "olympics", m, DS))[1] for m in marts}
    versions = {m: lake.delta(m).version() for m in marts}
    # A bad source: every age 119 (valid per row, implausible as a Games' mean).
    src = base / f"old_{engine_name}.csv"
    rows = Path(SHIPPED["athletes"]).read_text().splitlines()
    src.write_text("\n".join([rows[0]] + [re.sub(r'^("[^"]*","(?:[^"]|"")*","[MF]"),\d+,', r"\1,119,", r) for r in rows[1:]]) + "\n")
    ctx = JobContext(engine=engine, lake=lake, ds=DS)
    resolve_job("olympics.ingest")(ctx, table="athletes", source=str(src))
    resolve_job("olympics.enrich")(ctx)
    with pytest.raises(QualityCheckFailed, match=r"nothing published .*averages outside the plausible \[10, 70\], e.g. .*: 119.00"):
        resolve_job("olympics.aggregate")(ctx)
    for mart, frame in before.items():
        assert read_table(part(lake_root, "olympics", mart, DS))[1].equals(frame), f"{mart} changed although the checks failed"
    assert {m: lake.delta(m).version() for m in marts} == versions, "a failed check committed a mart"
