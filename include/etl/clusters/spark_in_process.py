"""Spark inside a one-off run's process (``airflow dags test``): a classic local session, ending with it.

Every task of a one-off run runs in one process, so its Spark needs no server: a classic
``SparkSession`` (``local[N,F]``, as the runtime's server) whose JVM is a child of this process
(py4j) and exits with it. The job code is the same (:class:`include.etl.engines.spark.SparkEngine`
works on classic and Connect sessions alike, as ``spark-submit`` shows). Its UI and driver bind
``ETL_BIND_HOST``; Spark's own logging keeps to errors (the run's log is the task log).
"""

from __future__ import annotations

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


def start_in_process_spark(settings: Settings) -> ClusterHandle:
    """A classic local Spark session in this process; its handle's address names it (``local-spark://<pid>``)."""
    from include.etl.clusters.spark_local import LOG4J2, SHUFFLE_PARTITIONS, TASK_ATTEMPTS, check_java

    check_java()
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
                   .config("spark.driver.extraJavaOptions",
                           f"-Dlog4j2.configurationFile=file:{log4j} {settings.spark_java_options}".strip())
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
