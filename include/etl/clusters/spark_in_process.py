"""Spark inside a one-off run's process (``airflow dags test``): a classic local session, ending with it.

Every task of a one-off run runs in one process, so its Spark needs no server: a classic
``SparkSession`` (``local[N,F]``, as the runtime's server) whose JVM is a child of this process
(py4j) and exits with it. The job code is the same (:class:`include.etl.engines.spark.SparkEngine`
works on classic and Connect sessions alike, as ``spark-submit`` shows). Its UI and driver bind
``ETL_BIND_HOST``; Spark's own logging keeps to errors (the run's log is the task log). Its JVM
maps Spark's classes from the class-data archive when ``bin/install`` made one
(:func:`include.etl.clusters.spark_local.jvm_options`) and, unless ``ETL_SPARK_JAVA_OPTIONS`` says
otherwise, runs C1-only with the serial GC (:data:`ONE_OFF_JAVA_OPTIONS`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from include.etl.clusters import ClusterHandle, ClusterStartError
from include.etl.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

_SESSIONS: dict[str, Any] = {}  # address -> the classic session of this process
# The JVM options of a one-off run's session when ETL_SPARK_JAVA_OPTIONS is unset (the runtime's
# server keeps the JVM's defaults): C1-only JIT and the serial GC, as in the test suite. A one-off
# run is a few small jobs, where most of the JVM's CPU is its JIT compiling Spark: `dags test
# <pipeline>` about 2-6 s sooner; a 5M-row chain in such a session was about 20 % slower
# (docs/runtime.md, "Spark's class-data archive"): set ETL_SPARK_JAVA_OPTIONS (e.g. -XX:+UseG1GC) for those.
ONE_OFF_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def start_in_process_spark(settings: Settings) -> ClusterHandle:
    """A classic local Spark session in this process; its handle's address names it (``local-spark://<pid>``)."""
    from include.etl.clusters.spark_local import LOG4J2, SHUFFLE_PARTITIONS, TASK_ATTEMPTS, check_java, jvm_options

    check_java()
    if not settings.spark_java_options:
        settings = dataclasses.replace(settings, spark_java_options=ONE_OFF_JAVA_OPTIONS)
    address = f"local-spark://{os.getpid()}"
    if address in _SESSIONS:
        return _handle(address, _SESSIONS[address])
    # A process that once opened a Spark Connect session keeps these set: this one is classic.
    for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
        os.environ.pop(var, None)
    paths = [str(PROJECT_ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))  # the job code, in Spark's Python workers
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    log4j = Path(tempfile.mkdtemp(prefix="etl-spark-")) / "log4j2.properties"
    log4j.write_text(LOG4J2.replace("rootLogger.level = warn", "rootLogger.level = error"))  # the run's own log
    host = settings.bind_host
    os.environ["SPARK_LOCAL_IP"] = host
    from pyspark.sql import SparkSession

    threads = settings.local_workers * settings.local_threads
    try:
        session = (SparkSession.builder.master(f"local[{threads},{TASK_ATTEMPTS}]").appName(f"one-off run {os.getpid()}")
                   .config("spark.driver.host", host).config("spark.driver.bindAddress", host)
                   .config("spark.driver.extraJavaOptions", jvm_options(settings, log4j))
                   .config("spark.driver.memory", f"{settings.spark_driver_memory >> 20}m")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.shuffle.partitions", str(SHUFFLE_PARTITIONS))
                   .config("spark.pyspark.python", sys.executable)
                   .getOrCreate())
    except Exception as exc:  # noqa: BLE001 - py4j and JVM errors of many kinds
        raise ClusterStartError(f"could not start Spark in this process: {exc}") from None
    _SESSIONS[address] = session
    return _handle(address, session)


def _handle(address: str, session: Any) -> ClusterHandle:
    return ClusterHandle("spark", address, owned=True, dashboard_url=session.sparkContext.uiWebUrl,
                         extra={"in_process": os.getpid(), "spark_version": session.version})


def session_of(handle: ClusterHandle) -> Any:
    """The session of an in-process handle of this process."""
    try:
        return _SESSIONS[handle.address]
    except KeyError:
        raise ClusterStartError(f"{handle.address} is a Spark session inside another process (a one-off run's); "
                                "it cannot be reached from here") from None


def stop_in_process_spark(handle: ClusterHandle) -> bool:
    """Stop the session (and its JVM); False when it was stopped already. Idempotent."""
    session = _SESSIONS.pop(handle.address, None)
    if session is None:
        return False
    session.stop()
    return True


def record_classes(archive: str) -> None:
    """The class-data archive's recording run (:func:`include.etl.clusters.spark_local.make_cds_archive`).

    A session with ``-XX:ArchiveClassesAtExit=archive`` runs :func:`_sample_jobs` on a small
    generated input, so the classes a one-off run loads are those recorded, then ends its JVM and waits while the JVM writes the archive. A failing job only
    leaves fewer classes recorded (a warning); a session that does not start raises.
    """
    from include.etl.clusters.spark_local import CDS_RECORD_OPTIONS

    settings = dataclasses.replace(Settings.from_env({k: v for k, v in os.environ.items() if k != "ETL_SPARK_JAVA_OPTIONS"}),
                                   spark_java_options=f"-XX:ArchiveClassesAtExit={archive} {CDS_RECORD_OPTIONS}")
    handle = start_in_process_spark(settings)
    session = _SESSIONS[handle.address]
    jvm = getattr(session.sparkContext._gateway, "proc", None)  # spark-submit, which became the JVM
    try:
        _sample_jobs(session)
    except Exception as exc:  # noqa: BLE001 - the archive is still valid, only smaller
        log.warning("the recording run's jobs failed (the archive holds fewer classes): %s", exc)
    finally:
        stop_in_process_spark(handle)
    if jvm is not None:
        jvm.stdin.close()  # the JVM exits at the end of its stdin, writing the archive first
        jvm.wait(timeout=600)


def _sample_jobs(session: Any) -> None:
    """Work that loads the classes jobs use (no pipeline's: the generic layer knows none): the
    Python workers' Arrow exchange, a CSV ingest in blocks through the engine, Parquet writes and
    reads, a broadcast join and a group-by."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    from include.etl.contract import Column, Dataset
    from include.etl.engines.spark import SparkEngine, probe_python_workers

    probe_python_workers(session)
    engine = SparkEngine(session)
    with tempfile.TemporaryDirectory(prefix="etl-spark-cds-") as tmp:
        source = Path(tmp, "in.csv")
        source.write_text("id,key,name,value\n" + "".join(f"{i},{i % 50},n{i % 7},{i / 2}\n" for i in range(5000)))
        dataset = Dataset("sample", (Column("id", "integer"), Column("key", "integer"), Column("name"),
                                     Column("value", "float")))
        engine.write_split(engine.read_csv(str(source), dataset, block_bytes=20_000), f"{tmp}/ok", f"{tmp}/rejects")
        schema = pa.schema([("id", pa.int64()), ("key", pa.int64()), ("name", pa.string()), ("value", pa.float64())])
        rows = engine.read_parquet([str(f) for f in sorted(Path(tmp, "ok").glob("*.parquet"))], schema)
        labels = session.range(0, 50).selectExpr("id AS key", "concat('k', id) AS label")
        out = rows.join(F.broadcast(labels), "key").groupBy("label", "name").agg(F.count("*").alias("n"),
                                                                                 F.avg("value").alias("mean"))
        engine.write_parquet(out, f"{tmp}/out")
        session.read.parquet(f"{tmp}/out").orderBy("label").toPandas()


if __name__ == "__main__":  # python -m include.etl.clusters.spark_in_process --record-classes <archive>
    if len(sys.argv) != 3 or sys.argv[1] != "--record-classes":
        sys.exit("usage: python -m include.etl.clusters.spark_in_process --record-classes <archive>")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record_classes(sys.argv[2])
