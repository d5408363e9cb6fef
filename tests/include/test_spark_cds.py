"""Spark's class-data archive (AppCDS, ``include/etl/clusters/spark_local.py``): used when it is there
and matches, never a reason for a Spark JVM not to start.

The first tests fake the pyspark jars and the archive (no JVM); the last two start real in-process
sessions in child processes: one on this venv's real archive (``make_cds_archive``, as ``bin/install``
makes it: a no-op when it is up to date) checks that the JVM maps Spark's classes from it, the other
on a garbage archive whose record matches checks that Java ignores it and Spark still runs a query
(and that a one-off session without ``ETL_SPARK_JAVA_OPTIONS`` gets its own JVM options).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from include.etl.clusters import spark_local
from include.etl.clusters.spark_in_process import ONE_OFF_JAVA_OPTIONS
from include.etl.clusters.spark_local import DEFAULT_GC, cds_archive, cds_archive_path, jvm_options, make_cds_archive
from include.etl.settings import PROJECT_ROOT, Settings

LOG4J = Path("/tmp/log4j2.properties")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake pyspark home (two jars), the archive directory under tmp_path, and a fixed Java build."""
    home = tmp_path / "pyspark"
    (home / "jars").mkdir(parents=True)
    for name in ("spark-core.jar", "spark-sql.jar"):
        (home / "jars" / name).write_bytes(b"PK" + name.encode())
    monkeypatch.setattr(spark_local, "cds_dir", lambda: tmp_path / "cds")
    monkeypatch.setattr(spark_local, "java_build", lambda env=None: "17.0.15+6-Debian-1deb12u1")
    return home


def _record(home: Path, content: bytes = b"archive" * 100) -> Path:
    """An archive and its record, as make_cds_archive leaves them."""
    archive = cds_archive_path(home)
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(content)
    archive.with_suffix(".json").write_text(json.dumps(
        {"size": len(content), "jars": spark_local._jars(home), "spark_home": str(home)}))
    return archive


def test_the_archive_is_keyed_by_the_pyspark_and_java_versions(fake):
    from importlib.metadata import version

    path = cds_archive_path(fake)
    assert path.name == f"spark-{version('pyspark')}-java-17.0.15+6-Debian-1deb12u1.jsa"


def test_a_recorded_archive_goes_into_the_jvm_options_before_the_users(fake):
    archive = _record(fake)
    user = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    opts = jvm_options(Settings.from_env({"ETL_SPARK_JAVA_OPTIONS": user}), LOG4J, fake)
    assert opts == f"-Dlog4j2.configurationFile=file:{LOG4J} -Xshare:auto -XX:SharedArchiveFile={archive} {user}"
    assert jvm_options(Settings.from_env({}), LOG4J, fake).endswith(f"-XX:SharedArchiveFile={archive} {DEFAULT_GC}")
    # The runtime's server gets the same
    command = spark_local.server_command(Settings.from_env({"ETL_SPARK_JAVA_OPTIONS": user}), fake, 15002, 4040, fake)
    assert command[command.index("--driver-java-options") + 1] == opts.replace(str(LOG4J), str(fake / "log4j2.properties"))


def test_no_archive_no_option(fake):
    assert jvm_options(Settings.from_env({}), LOG4J, fake) == f"-Dlog4j2.configurationFile=file:{LOG4J} {DEFAULT_GC}"


@pytest.mark.parametrize("damage", ["truncated", "no record", "bad record", "jar replaced", "jar added"])
def test_an_archive_that_does_not_match_its_record_or_its_jars_is_not_used(fake, damage):
    # A truncated archive crashes a Java 17 JVM (SIGBUS) instead of being ignored: never pass one.
    archive = _record(fake)
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:100])
    elif damage == "no record":
        archive.with_suffix(".json").unlink()
    elif damage == "bad record":
        archive.with_suffix(".json").write_text("{not json")
    elif damage == "jar replaced":
        jar = fake / "jars" / "spark-core.jar"
        jar.write_bytes(b"PK other")
        os.utime(jar, ns=(1, 1))
    else:
        (fake / "jars" / "spark-extra.jar").write_bytes(b"PK")
    assert cds_archive(fake) is None
    assert "SharedArchiveFile" not in jvm_options(Settings.from_env({}), LOG4J, fake)


@pytest.mark.parametrize("own", ["-Xshare:off", "-XX:SharedArchiveFile=/elsewhere.jsa", "-XX:ArchiveClassesAtExit=/x.jsa"])
def test_the_users_own_sharing_options_win(fake, own):
    _record(fake)
    opts = jvm_options(Settings.from_env({"ETL_SPARK_JAVA_OPTIONS": own}), LOG4J, fake)
    assert opts == f"-Dlog4j2.configurationFile=file:{LOG4J} {DEFAULT_GC} {own}"


# A child process: an in-process session (as `airflow dags test` starts it), one query, the JVM
# options it got; the archive directory can be redirected (argv[1], "" for the venv's own).
SESSION = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from include.etl.clusters import spark_local
    if sys.argv[1]:
        spark_local.cds_dir = lambda: Path(sys.argv[1])
    from include.etl.clusters.spark_in_process import session_of, start_in_process_spark, stop_in_process_spark
    from include.etl.settings import Settings
    handle = start_in_process_spark(Settings.from_env())
    session = session_of(handle)
    rows = session.range(0, 1000, numPartitions=2).selectExpr("sum(id) AS s").collect()[0]["s"]
    opts = session.sparkContext.getConf().get("spark.driver.extraJavaOptions")
    stop_in_process_spark(handle)
    print("RESULT " + json.dumps({"sum": rows, "opts": opts}))
""")


def _session(tmp_path: Path, cds_dir: str, java_options: str) -> tuple[dict, str]:
    env = {**os.environ, "ETL_SPARK_JAVA_OPTIONS": java_options, "ETL_LAKE_ROOT": str(tmp_path / "lake")}
    out = subprocess.run([sys.executable, "-c", SESSION, cds_dir], env=env, cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert result, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(result[-1][len("RESULT "):]), out.stdout + out.stderr


@pytest.mark.slow
def test_a_one_off_session_maps_sparks_classes_from_the_archive(tmp_path):
    archive, _ = make_cds_archive()  # bin/install's: made here if it is not there yet (about 30 s)
    classes = tmp_path / "classes.log"
    result, _ = _session(tmp_path, "", f"{os.environ.get('ETL_SPARK_JAVA_OPTIONS', '')} "
                                       f"-Xlog:class+load=info:file={classes}")
    assert result["sum"] == 499500
    assert f"-XX:SharedArchiveFile={archive}" in result["opts"]
    log = classes.read_text()
    shared = log.count("source: shared objects file (top)")  # the dynamic archive (the JDK's own is the base)
    assert shared > 5000, f"only {shared} classes came from {archive}"
    assert "org.apache.spark.SparkContext source: shared objects file (top)" in log


@pytest.mark.slow
def test_a_garbage_archive_that_passes_the_record_check_is_ignored_by_java(tmp_path):
    from include.etl.clusters.spark_local import spark_home

    home = spark_home()
    cds = tmp_path / "cds"
    cds.mkdir()
    real = cds_archive_path(home)  # the same name, under tmp_path: written as make_cds_archive would
    archive = cds / real.name
    garbage = b"not a class-data archive\n" * 4000
    archive.write_bytes(garbage)
    archive.with_suffix(".json").write_text(json.dumps(
        {"size": len(garbage), "jars": spark_local._jars(home), "spark_home": str(home)}))
    result, _ = _session(tmp_path, str(cds), "")  # unset: a one-off session's own JVM options
    assert f"-XX:SharedArchiveFile={archive}" in result["opts"]  # it was given to the JVM...
    assert result["sum"] == 499500  # ...which ignored it and ran the query
    assert result["opts"].endswith(ONE_OFF_JAVA_OPTIONS)
