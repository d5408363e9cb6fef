"""Start and stop a local Spark Connect server from the installed ``pyspark`` package.

No Spark download: the ``pyspark`` wheel ships Spark's jars and launch scripts, so the server
is ``<pyspark>/bin/spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer``
with ``SPARK_HOME=<pyspark>``; the script replaces itself with the JVM, so the started pid is the JVM's.
It runs in a process group of its own (which also holds the Python workers the JVM forks) and
gets SIGTERM when the process that started it dies: its owner, the runtime
(:mod:`include.etl.clusters.runtime`).

Master ``local[N,F]``: ``N`` task threads (``ETL_LOCAL_WORKERS`` x ``ETL_LOCAL_THREADS``, the same
parallelism a local Dask cluster gets; 2 by default) and ``F`` = :data:`TASK_ATTEMPTS` attempts
per task (a plain ``local[N]`` never retries a failed task).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
import weakref
from pathlib import Path
from urllib.parse import urlparse

from include.etl.clusters import ClusterHandle, ClusterStartError, die_with_parent, is_alive, kill_groups, log_tail
from include.etl.clusters.dask_local import worker_env
from include.etl.settings import Settings

log = logging.getLogger(__name__)

MARKER = "SparkConnectServer"
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
DEFAULT_PORT = 15002
TASK_ATTEMPTS = 3
CHECK_BOUND_S = 120.0  # the most a health check's session and first query may take (check_spark_connect)
SHUFFLE_PARTITIONS = 4
# An operation whose client went away (a SIGKILLed task process) is interrupted within about twice
# this: the server notices a dead client only when the response stream it serves ends (after
# senderMaxStreamDuration; a live client then reattaches at once), and interrupts an operation
# nobody reattached to after detachedTimeout. Spark's defaults (2 min, 5 min) let it run about
# 7 minutes, or to its end (docs/runtime.md, "Cancelling a job").
DETACHED_TIMEOUT = "5s"
MIN_JAVA = 17
LOG_NAME = "spark-connect.log"


def spark_home() -> Path:
    """The installed ``pyspark`` package directory, which is a complete Spark distribution."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        raise ClusterStartError("the pyspark package is not installed; the Spark backend needs it (see requirements.txt)")
    home = Path(spec.origin).parent
    if not (home / "jars").is_dir() or not (home / "bin" / "spark-submit").exists():
        raise ClusterStartError(
            f"{home} has no Spark jars or bin/spark-submit: a local Spark Connect server needs the full 'pyspark' "
            "package, not only 'pyspark-client'"
        )
    return home


_JAVA_BUILDS: dict[str, str] = {}  # java executable -> its full version ("17.0.15+6-Debian-1deb12u1"), by check_java


def check_java(env: dict[str, str] | None = None) -> int:
    """The major version of the Java that Spark will use; :class:`ClusterStartError` (one line) if unusable.

    Same rules as ``bin/check-java``: ``$JAVA_HOME/bin/java`` if ``JAVA_HOME`` is set, else ``java``
    on ``PATH``; Spark 4 needs Java 17 or newer.
    """
    env = dict(os.environ if env is None else env)
    java_home = env.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java", path=env.get("PATH"))
    if not java or not os.access(java, os.X_OK):
        raise ClusterStartError(
            f"no Java found (JAVA_HOME={java_home or 'unset'}); the Spark backend needs Java {MIN_JAVA} or 21: "
            "install e.g. 'apt-get install openjdk-17-jre-headless'"
        )
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterStartError(f"cannot run {java} -version ({exc}); the Spark backend needs Java {MIN_JAVA} or 21") from None
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    version = int(match.group(1)) if match else 0
    build = re.search(r"\(build ([^)\s]+)\)", out.stderr + out.stdout)
    _JAVA_BUILDS[java] = build.group(1) if build else f"{version or 'unknown'}"
    if version < MIN_JAVA:
        raise ClusterStartError(
            f"Java {version or 'of unknown version'} at {java} is too old; the Spark backend needs Java {MIN_JAVA} or 21"
        )
    return version


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def split_address(address: str) -> tuple[str, int]:
    """``sc://host:port[/;params]`` -> (host, port); the port defaults to 15002."""
    url = urlparse(address if "://" in address else f"sc://{address}")
    if url.scheme != "sc" or not url.hostname:
        raise ValueError(f"{address!r} is not a Spark Connect address (sc://host:port)")
    return url.hostname, url.port or DEFAULT_PORT


def port_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# Clients this process opened, per server address: stopping a server closes them first, or
# pyspark's exit hook would retry its clean-up calls against the dead server for minutes.
_CLIENTS: dict[str, weakref.WeakSet] = {}


def _base_address(address: str) -> str:
    return address.split("/;", 1)[0].rstrip("/")


def close_clients(address: str) -> None:
    """Close (without any server call) every client of this process on ``address``."""
    for spark in list(_CLIENTS.pop(_base_address(address), ())):
        try:
            spark.client._closed = True  # skip pyspark's exit-time clean-up RPCs
            spark.client.close()
        except Exception as exc:  # noqa: BLE001 - best effort
            log.debug("closing a Spark Connect client of %s failed: %s", address, exc)


def connect(address: str, session_id: str | None = None):
    """A new Spark Connect client on ``address`` (never a cached one of another server).

    With ``session_id`` the client joins that existing server-side session instead of opening
    a new one, and closing the client does not release it (see :func:`release_session`).
    """
    from pyspark.sql import SparkSession

    if session_id:
        address = f"{address};session_id={session_id}" if "/;" in address else \
            f"{address.rstrip('/')}/;session_id={session_id}"
    spark = SparkSession.builder.remote(address).create()
    if session_id:
        spark.release_session_on_close = False
    _CLIENTS.setdefault(_base_address(address), weakref.WeakSet()).add(spark)
    return spark


def release_session(address: str, session_id: str) -> None:
    """Release a server-side session (its state and its Python workers) on a server that keeps running."""
    try:
        spark = connect(address, session_id)
        spark.release_session_on_close = True
        spark.stop()  # best effort by design: never raises
    except Exception as exc:  # noqa: BLE001 - the server may be gone already
        log.info("could not release Spark Connect session %s: %s", session_id, exc)


def _error_line(exc: BaseException) -> str:
    """The most telling line of an error: gRPC's details, or the last ``...Error: ...`` line of a remote traceback."""
    grpc_details = re.search(r'details = "(.*)"', str(exc))
    if grpc_details:
        return grpc_details.group(1)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    return (errors or lines or [type(exc).__name__])[-1]


def _few_retries(spark, timeout: float) -> None:
    """Retry a health check for about ``timeout`` s, not the client's default of 10 minutes.

    (Something that is not a Spark Connect server on the port, such as an HTTP server, makes
    every call fail as retryable ``UNAVAILABLE``.)
    """
    try:
        from pyspark.sql.connect.client.retries import DefaultPolicy

        spark._client.set_retry_policies([DefaultPolicy(max_retries=4, initial_backoff=250, backoff_multiplier=2.0,
                                                        max_backoff=max(500, int(timeout * 250)))])
    except (ImportError, AttributeError, TypeError) as exc:  # a client without this API: keep its defaults
        log.debug("cannot shorten the Spark Connect client's retries: %s", exc)


def check_spark_connect(address: str, timeout: float = 10.0, python: bool = True, keep_session: bool = False) -> dict:
    """Health of the Spark Connect server at ``address``: raises :class:`ClusterStartError` if unusable.

    A plain TCP connect first (with ``timeout``), so that an unreachable address fails fast
    instead of going through the client's minutes of gRPC retries; then one tiny query: with
    ``python`` a ``mapInPandas`` per task thread, which also checks that the server's Python
    workers can import pandas and the job code (a separate plain query first cost ~1 s more).

    With ``keep_session`` the checked session stays open on the server and its id is returned
    as ``session_id``: the run's tasks join it, so they share its (then warm) Python workers.
    Spark keeps a separate Python worker pool per session, which costs every new session about
    2 s on its first ``mapInPandas`` and, until the server stops, a daemon process.
    """
    host, port = split_address(address)
    where = address.split("/;", 1)[0]  # never show tokens
    if not port_open(host, port, timeout):
        raise ClusterStartError(f"cannot reach the Spark Connect server at {where}: nothing answers on {host}:{port}")
    # Bounded: a session opened while another run opened one on the same server once hung for
    # 6 min in gRPC (a clean-clone run); the caller's task then fails and is retried instead.
    bound = max(timeout, CHECK_BOUND_S)
    outcome: list[object] = []

    def check() -> None:
        try:
            outcome.append(_check(address, where, timeout, python, keep_session))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=check, name="etl-spark-connect-check", daemon=True)
    thread.start()
    thread.join(bound)
    if not outcome:
        raise ClusterStartError(f"the Spark Connect server at {where} did not answer a session's first query "
                                f"within {bound:.0f} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _check(address: str, where: str, timeout: float, python: bool, keep_session: bool) -> dict:
    try:
        spark = connect(address)
    except Exception as exc:  # noqa: BLE001 - gRPC and pyspark errors of many kinds
        raise ClusterStartError(f"cannot open a Spark Connect session on {where}: {_error_line(exc)}") from None
    _few_retries(spark, timeout)
    try:
        t0 = time.monotonic()
        with warnings.catch_warnings():  # the client warns before raising; the error says it all
            warnings.filterwarnings("ignore", message=r"\[RETRIES_EXCEEDED\]")
            try:
                if python:  # the probe is itself the first query: one round of server warm-up instead of two
                    from include.etl.engines.spark import probe_python_workers

                    probe_python_workers(spark)
                else:
                    spark.range(1).count()
            except Exception as exc:  # noqa: BLE001
                from pyspark.errors import PythonException

                if isinstance(exc, PythonException):  # the query ran; its Python worker failed
                    raise ClusterStartError(
                        f"the Spark Connect server at {where} cannot run the job code in its Python workers (they "
                        f"need pandas, pyarrow and this project on PYTHONPATH): {_error_line(exc)}"
                    ) from None
                raise ClusterStartError(f"the Spark Connect server at {where} does not answer queries: {_error_line(exc)}") from None
        info = {"spark_version": spark.version, ("python_workers_s" if python else "query_s"): round(time.monotonic() - t0, 2)}
        if keep_session:
            info["session_id"] = spark.session_id
            spark.release_session_on_close = False
    except BaseException:
        spark.release_session_on_close = True
        raise
    finally:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"\[RETRIES_EXCEEDED\]")
                spark.stop()
        except Exception:  # noqa: BLE001 - releasing the session is best effort
            pass
    return info


def _log_since(logfile: Path, offset: int) -> str:
    """What the server wrote to ``logfile`` after ``offset`` (a retried start appends to the same log)."""
    try:
        with open(logfile, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _reported_port(logfile: Path, offset: int) -> int | None:
    text = _log_since(logfile, offset)
    found = re.findall(r"Spark Connect server started at: \S+:(\d+)", text)
    return int(found[-1]) if found else None


def _ui_url(logfile: Path, offset: int) -> str | None:
    """The Spark UI address the server reports (the configured port may have been taken)."""
    text = _log_since(logfile, offset)
    hosts = re.findall(r"Start Jetty (\S+?):\d+ for SparkUI", text)
    ports = re.findall(r"Successfully started service 'SparkUI' on port (\d+)", text)
    if not ports:
        return None
    return f"http://{hosts[-1] if hosts else '127.0.0.1'}:{ports[-1]}"


# ---------------------------------------------------------------- class-data sharing (AppCDS)
# Before its first query a Spark JVM loads, parses and verifies about 15,000 classes from the 277
# jars of pyspark. A dynamic class-data archive (Java 13+: one JVM run with
# -XX:ArchiveClassesAtExit, later JVMs with -XX:SharedArchiveFile) maps them ready-made instead:
# a one-off run's session starts about 2-3 s sooner and its first jobs run faster (docs/runtime.md,
# "Spark's class-data archive"). bin/install makes it (make_cds_archive); every Spark JVM the
# platform starts from this pyspark (a one-off run's session, the runtime's server) then uses it,
# when it exists and matches. Java itself ignores, with a one-line warning, an archive of other
# jars or of another JDK build; but a truncated archive crashes the JVM (SIGBUS, Java 17), so an
# archive is written under a temporary name, renamed once complete, and used only while its size
# and its jars match the record beside it.
CDS_SUFFIX = ".jsa"
CDS_RECORD_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xlog:cds*=error"  # the recording JVM's JIT/GC do not matter
_CDS_OWN = re.compile(r"-Xshare|SharedArchiveFile|ArchiveClassesAtExit|AOTCache")  # options that decide it themselves
# The collector of the Spark JVMs started here, unless ETL_SPARK_JAVA_OPTIONS picks one: at 5 M rows the
# server's JVM peaked at 966-998 MiB resident and ran the chain in 23.9-24.6 s, against G1 (the JVM's
# default) 1,070-1,091 MiB (G1's own structures) and 25.3-26.1 s (docs/runtime.md, ETL_SPARK_DRIVER_MEMORY).
DEFAULT_GC = "-XX:+UseParallelGC"
_GC_CHOSEN = re.compile(r"-XX:[+-]Use\w*GC\b")


def cds_dir() -> Path:
    """Where the archives are kept: the venv's cache (they belong to its pyspark), else the user's cache."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "cache" / "spark-cds"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "etl-platform" / "spark-cds"


def java_build(env: dict[str, str] | None = None) -> str:
    """The full version of the Java that Spark will use (``17.0.15+6-Debian-1deb12u1``)."""
    env = dict(os.environ if env is None else env)
    java_home = env.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java", path=env.get("PATH"))
    if java not in _JAVA_BUILDS:
        check_java(env)
    return _JAVA_BUILDS.get(java, "unknown")


def cds_archive_path(home: Path, env: dict[str, str] | None = None) -> Path:
    """The archive of this pyspark (``home``) and this Java: keyed by both versions."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        spark = version("pyspark")
    except PackageNotFoundError:
        spark = "unknown"
    key = re.sub(r"[^\w.+-]", "_", f"spark-{spark}-java-{java_build(env)}")
    return cds_dir() / f"{key}{CDS_SUFFIX}"


def _jars(home: Path) -> str:
    """What the archive depends on besides the JDK: the jars (Java refuses an archive whose jars changed)."""
    stats = [p.stat() for p in (home / "jars").glob("*.jar")]
    return f"{len(stats)} jars, {sum(s.st_size for s in stats)} bytes, mtime {max((s.st_mtime_ns for s in stats), default=0)}"


def cds_archive(home: Path, env: dict[str, str] | None = None) -> Path | None:
    """The usable archive for Spark from ``home``, or None: missing, incomplete, or made for other jars."""
    archive = cds_archive_path(home, env)
    try:
        record = json.loads(archive.with_suffix(".json").read_text())
        usable = (record.get("size") == archive.stat().st_size and record.get("jars") == _jars(home)
                  and record.get("spark_home") == str(home))
    except (OSError, ValueError, AttributeError):
        return None
    if not usable:
        log.info("Ignoring the Spark class-data archive %s: made for other jars (make it again: "
                 "python -m include.etl.clusters.spark_local --cds-archive)", archive)
        return None
    return archive


def java_options(settings: Settings, home: Path | None = None) -> str:
    """A Spark JVM's options on this machine: the class-data archive when there is one, the parallel
    collector, then ``ETL_SPARK_JAVA_OPTIONS`` (whose own -Xshare / archive / GC options win)."""
    user = settings.spark_java_options
    cds = ""
    if not _CDS_OWN.search(user):
        try:
            archive = cds_archive(home or spark_home())
        except (ClusterStartError, OSError):
            archive = None
        if archive is not None and not re.search(r"\s", str(archive)):  # JVM options are split on blanks
            cds = f"-Xshare:auto -XX:SharedArchiveFile={archive}"
    gc = "" if _GC_CHOSEN.search(user) else DEFAULT_GC
    return " ".join(part for part in (cds, gc, user) if part)


def jvm_options(settings: Settings, log4j: Path, home: Path | None = None) -> str:
    """The driver JVM's options: logging, then :func:`java_options`."""
    return " ".join(part for part in (f"-Dlog4j2.configurationFile=file:{log4j}", java_options(settings, home)) if part)


def make_cds_archive(force: bool = False, timeout: float = 600.0) -> tuple[Path, bool]:
    """Make this pyspark's class-data archive (unless a usable one exists): (its path, whether made now).

    A child process runs a one-off run's session with ``-XX:ArchiveClassesAtExit`` through a small
    ingest, join and group-by (``spark_in_process._sample_jobs``: no data needed), so the classes of
    a real run are the ones recorded; its JVM writes them when it exits. About 40 s on 2 cores; a failure raises
    :class:`ClusterStartError` naming its log, and leaves no archive.
    """
    from include.etl.settings import PROJECT_ROOT

    home = spark_home()
    check_java()
    archive = cds_archive_path(home)
    if not force and cds_archive(home) == archive:
        return archive, False
    archive.parent.mkdir(parents=True, exist_ok=True)
    record = archive.with_suffix(".json")
    record.unlink(missing_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
    logfile = archive.with_suffix(".log")
    env = {k: v for k, v in os.environ.items() if k != "ETL_SPARK_JAVA_OPTIONS"}
    t0 = time.monotonic()
    try:
        with open(logfile, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "include.etl.clusters.spark_in_process", "--record-classes",
                                     str(partial)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=PROJECT_ROOT, start_new_session=True)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # the child and its JVM (one process group)
                proc.wait()
                raise ClusterStartError(f"making the Spark class-data archive took over {timeout:.0f} s; see {logfile}") from None
        if code != 0 or not partial.is_file() or partial.stat().st_size == 0:
            raise ClusterStartError(f"could not make the Spark class-data archive (exit code {code}); its log {logfile} "
                                    f"ends with:\n{log_tail(logfile)}")
        size = partial.stat().st_size
        os.replace(partial, archive)
        record.write_text(json.dumps({"size": size, "jars": _jars(home), "spark_home": str(home),
                                      "java": java_build(), "seconds": round(time.monotonic() - t0, 1)}))
    finally:
        partial.unlink(missing_ok=True)
    for old in archive.parent.glob(f"spark-*{CDS_SUFFIX}"):  # those of earlier pyspark or Java versions
        if old != archive:
            for path in (old, old.with_suffix(".json"), old.with_suffix(".log")):
                path.unlink(missing_ok=True)
    return archive, True


# Spark's default INFO logging writes ~100 lines per query; keep warnings and errors, plus the
# lines that say where the server and its UI listen.
LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.utils.name = org.apache.spark.util.Utils
logger.utils.level = info
logger.jettyutils.name = org.apache.spark.ui.JettyUtils
logger.jettyutils.level = info
logger.server.name = org.apache.spark.sql.connect.service.SparkConnectServer
logger.server.level = info
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
logger.parquet.name = org.apache.parquet.CorruptStatistics
logger.parquet.level = error
"""


def server_command(settings: Settings, workdir: Path, port: int, ui_port: int, home: Path) -> list[str]:
    host = settings.bind_host
    threads = settings.local_workers * settings.local_threads
    conf = {
        "spark.connect.grpc.binding.address": host,
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": host,
        "spark.driver.bindAddress": host,
        "spark.ui.port": str(ui_port),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(SHUFFLE_PARTITIONS),
        "spark.connect.execute.reattachable.senderMaxStreamDuration": DETACHED_TIMEOUT,
        "spark.connect.execute.manager.detachedTimeout": DETACHED_TIMEOUT,
        "spark.connect.execute.manager.maintenanceInterval": "1s",
        "spark.sql.warehouse.dir": str(workdir / "spark-warehouse"),
        "spark.local.dir": str(workdir / "spark-local"),
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    log4j = workdir / "log4j2.properties"
    log4j.write_text(LOG4J2)
    args = [str(home / "bin" / "spark-submit"), "--class", SERVER_CLASS, "--name", f"Spark Connect server ({workdir})",
            "--master", f"local[{threads},{TASK_ATTEMPTS}]", "--driver-java-options", jvm_options(settings, log4j, home),
            "--driver-memory", f"{settings.spark_driver_memory >> 20}m"]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    return args


class _PortTaken(ClusterStartError):
    """Another process bound the chosen port between :func:`free_port` and the server's bind."""


def start_local_spark_connect(settings: Settings, workdir: Path, timeout: float = 120.0,
                              attempts: int = 3) -> ClusterHandle:
    """Start a Spark Connect server bound to ``settings.bind_host`` and wait until it answers a query.

    Spark Connect does not move to another port when its port is taken, it exits: the start is tried
    again with fresh ports, up to ``attempts`` times.
    """
    for attempt in range(1, attempts + 1):
        try:
            return _start_spark_connect(settings, workdir, timeout)
        except _PortTaken as exc:
            if attempt == attempts:
                raise
            log.warning("%s; starting it again on other ports (attempt %d of %d)", exc, attempt + 1, attempts)
    raise AssertionError("unreachable")


def _start_spark_connect(settings: Settings, workdir: Path, timeout: float) -> ClusterHandle:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    check_java()
    home = spark_home()
    host = settings.bind_host
    try:
        port, ui_port = free_port(host), free_port(host)
    except OSError as exc:
        raise ClusterStartError(f"cannot listen on {host} (ETL_BIND_HOST) on this machine: {exc}") from None
    logfile = workdir / LOG_NAME
    env = worker_env()  # the project importable, so Python workers can load the job code
    # ETL_CLUSTER_WORKDIR, inherited by the JVM and its Python workers, identifies every process of this cluster.
    env.update(SPARK_HOME=str(home), SPARK_LOCAL_IP=host, PYSPARK_PYTHON=sys.executable,
               ETL_CLUSTER_WORKDIR=str(workdir))
    env.pop("SPARK_CONF_DIR", None)
    args = server_command(settings, workdir, port, ui_port, home)
    log.info("Starting a Spark Connect server on %s:%s: %s", host, port, " ".join(args))
    started: list[int] = []
    t0 = time.monotonic()
    log_offset = logfile.stat().st_size if logfile.exists() else 0
    try:
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=workdir, start_new_session=True,
                                    preexec_fn=die_with_parent)
        started.append(proc.pid)
        import pyspark.sql.connect.session  # noqa: F401 - the client's imports take seconds: overlap them with the JVM's

        deadline = t0 + timeout
        while True:
            # Only the server's own log line says where it listens: the chosen port may have been taken
            # by another process between free_port() and the bind (the server then moves to the next
            # port), so an open port proves nothing (seen in CI: an HTTP server had taken it).
            reported = _reported_port(logfile, log_offset)
            if reported:
                port = reported
                break
            if proc.poll() is not None:
                if "java.net.BindException" in _log_since(logfile, log_offset):
                    raise _PortTaken(f"the Spark Connect server could not bind {host}:{port} or {host}:{ui_port} "
                                     "(taken by another process after it was chosen)")
                raise ClusterStartError(
                    f"the Spark Connect server exited with code {proc.returncode} while starting; "
                    f"its log {logfile} ends with:\n{log_tail(logfile)}"
                )
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"the Spark Connect server did not listen on {host}:{port} within {timeout:.0f} s; "
                    f"its log {logfile} ends with:\n{log_tail(logfile)}"
                )
            time.sleep(0.2)
        address = f"sc://{host}:{port}"
        listening = time.monotonic()
        ui = _ui_url(logfile, log_offset) or f"http://{host}:{ui_port}"
        try:
            info = check_spark_connect(address, timeout=max(1.0, deadline - time.monotonic()), keep_session=True)
        except ClusterStartError as exc:
            raise ClusterStartError(f"{exc}\nits log {logfile} ends with:\n{log_tail(logfile)}") from None
        ready = time.monotonic()
        extra = {**info, "log": str(logfile), "listening_s": round(listening - t0, 2), "ready_s": round(ready - t0, 2)}
        handle = ClusterHandle(
            backend="spark", address=address, owned=True, pids=started, workdir=str(workdir), dashboard_url=ui,
            extra=extra,
        )
        log.info("Spark Connect server %s up in %.1f s (listening after %.1f s), UI %s, pid %s",
                 address, ready - t0, listening - t0, handle.dashboard_url, proc.pid)
        return handle
    except BaseException:
        kill_groups(started, MARKER, grace=5)
        raise


def stop_local_spark_connect(handle: ClusterHandle, timeout: float = 10.0) -> list[int]:
    """Kill the process group of a server this platform started (JVM and its Python workers). Idempotent."""
    if not handle.owned:
        raise ValueError(
            f"refusing to stop the Spark Connect server at {handle.address}: it was attached, not started here"
        )
    close_clients(handle.address)
    if not any(is_alive(p, MARKER) for p in handle.pids):
        return []
    return kill_groups(handle.pids, MARKER, grace=timeout)


if __name__ == "__main__":  # python -m include.etl.clusters.spark_local --cds-archive [--force] (bin/install)
    import argparse

    parser = argparse.ArgumentParser(description="Make the class-data archive of Spark's JVMs (AppCDS).")
    parser.add_argument("--cds-archive", action="store_true", required=True)
    parser.add_argument("--force", action="store_true", help="make it again even if a usable one exists")
    parser.add_argument("--quiet", action="store_true", help="say nothing when it is up to date")
    cli = parser.parse_args()
    t = time.monotonic()
    try:
        path, made = make_cds_archive(force=cli.force)
    except (ClusterStartError, OSError) as exc:
        sys.exit(f"Spark class-data archive: {exc}")
    if made or not cli.quiet:
        print(f"Spark class-data archive {path} ({path.stat().st_size >> 20} MiB) "
              + (f"made in {time.monotonic() - t:.0f} s" if made else "is up to date"))
