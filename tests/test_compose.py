"""docker-compose.yaml checked statically (no Docker engine runs here).

The same topology is exercised natively by the production end-to-end test; this test makes
sure the compose file describes it completely and consistently with .env.example and the code.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


def documented(name: str) -> bool:
    return re.search(rf"^#?\s*{re.escape(name)}=", ENV_EXAMPLE, re.MULTILINE) is not None


def default_of(value: str) -> str:
    """A compose value with its ``${VAR:-default}`` form resolved to the default."""
    m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", value)
    return m.group(1) if m else value


def command(service: str) -> str:
    cmd = SERVICES[service].get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else cmd


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_image_and_healthcheck(name):
    svc = SERVICES[name]
    assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
    test = svc.get("healthcheck", {}).get("test")
    assert test and test != ["NONE"], f"{name} has no health check"


def test_every_variable_is_documented_in_env_example():
    used = set(VAR.findall((ROOT / "docker-compose.yaml").read_text()))
    missing = sorted(v for v in used if not documented(v))
    assert not missing, f"variables used by docker-compose.yaml but not in .env.example: {missing}"


def test_every_setting_the_code_reads_is_documented():
    settings = (ROOT / "include" / "etl" / "settings.py").read_text()
    read = set(re.findall(r'"(ETL_[A-Z_]+)"', settings))
    assert {"ETL_LAKE_URI", "ETL_LAKE_ROOT", "ETL_LAKE_CONN_ID", "ETL_LAKE_RETENTION_DAYS", "ETL_DEFAULT_BACKEND"} <= read
    missing = sorted(v for v in read if not documented(v))
    assert not missing, f"settings read by the code but not in .env.example: {missing}"


def test_secrets_are_required_not_defaulted():
    text = (ROOT / "docker-compose.yaml").read_text()
    for secret in ("POSTGRES_PASSWORD", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD"):
        assert re.search(rf"\$\{{{secret}:\?", text), f"{secret} must use ${{{secret}:?...}} (required)"
        assert re.search(rf"^{secret}=$", ENV_EXAMPLE, re.MULTILINE), f"{secret} must be an empty placeholder"


def test_airflow_components_and_executor():
    assert command("airflow-apiserver") == "api-server"
    assert command("airflow-scheduler") == "scheduler"
    assert command("airflow-dag-processor") == "dag-processor"
    assert command("airflow-triggerer") == "triggerer"
    assert command("airflow-worker") == "celery worker"
    assert "airflow db migrate" in command("airflow-init")
    env = COMPOSE["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")


def test_clusters_are_services_and_airflow_attaches_to_them():
    env = COMPOSE["x-airflow-common"]["environment"]
    assert env["AIRFLOW_CONN_DASK_DEFAULT"] == "tcp://dask-scheduler:8786"
    assert env["AIRFLOW_CONN_SPARK_CONNECT_DEFAULT"] == "sc://spark-connect:15002"
    assert "ETL_DEFAULT_BACKEND" in env and "ETL_LAKE_ROOT" not in env  # the lake is ETL_LAKE_URI (S3)
    assert command("dask-scheduler").startswith("dask scheduler") and "--port 8786" in command("dask-scheduler")
    assert command("dask-worker").startswith("dask worker tcp://dask-scheduler:8786")
    for dask_service in ("dask-scheduler", "dask-worker"):  # warm imports: the first job pays none (docs/benchmarks)
        assert "--preload include.etl.clusters.dask_local" in command(dask_service)
    assert "org.apache.spark.deploy.master.Master" in command("spark-master")
    assert "org.apache.spark.deploy.worker.Worker" in command("spark-worker") and "spark://spark-master:7077" in command("spark-worker")
    connect = command("spark-connect")
    assert "SparkConnectServer" in connect and "--master spark://spark-master:7077" in connect and "15002" in connect
    # The connection names match what the hooks look up.
    from etl_platform.hooks.dask_cluster import DaskClusterHook
    from etl_platform.hooks.spark import SparkClusterHook

    assert f"AIRFLOW_CONN_{DaskClusterHook.default_conn_name.upper()}" in env
    assert f"AIRFLOW_CONN_{SparkClusterHook.default_conn_name.upper()}" in env


def test_one_image_and_only_the_ui_published():
    images = {svc.get("image") for name, svc in SERVICES.items() if name not in ("postgres", "redis")}
    assert images == {"${ETL_IMAGE:-olympics-etl:latest}"}
    published = {name: svc["ports"] for name, svc in SERVICES.items() if svc.get("ports")}
    assert list(published) == ["airflow-apiserver"]
    assert published["airflow-apiserver"] == ["${AIRFLOW_UI_BIND:-127.0.0.1}:${AIRFLOW_UI_PORT:-8080}:8080"]


def test_the_lake_is_the_s3_service_for_every_airflow_and_cluster_service():
    """One object store (SeaweedFS from the project image), and every process that reads or writes
    the lake gets the same URI and connection; no service shares a lake volume any more."""
    s3 = SERVICES["s3"]
    assert "weed" in command("s3") and "mini" in command("s3") and "-bucket=lake" in command("s3")
    assert "-s3.config=" in command("s3") and "LAKE_S3_SECRET_KEY:?" in s3["environment"]["S3_IDENTITIES"]
    users = [n for n in SERVICES if n.startswith(("airflow-", "dask-", "spark-worker", "spark-connect"))]
    assert len(users) >= 9
    for name in users:
        env = SERVICES[name].get("environment") or {}
        assert default_of(str(env.get("ETL_LAKE_URI", ""))) == "s3://lake/etl", f"{name} does not use the S3 lake"
        conn = json.loads(env["AIRFLOW_CONN_LAKE_DEFAULT"])
        assert conn["conn_type"] == "aws" and conn["extra"]["endpoint_url"] == "${LAKE_S3_ENDPOINT:-http://s3:8333}"
        assert conn["login"].startswith("${LAKE_S3_ACCESS_KEY:?") and conn["password"].startswith("${LAKE_S3_SECRET_KEY:?")
        assert env["ETL_LAKE_CONN_ID"] == "lake_default"
        targets = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in SERVICES[name].get("volumes", [])]
        assert "/lake" not in targets, f"{name} still mounts a local lake"
    assert SERVICES["airflow-scheduler"]["depends_on"]["s3"]["condition"] == "service_healthy"
    # The connection's fields are what include.etl.lake.location reads.
    from include.etl.lake.location import s3_storage_options

    options = s3_storage_options({"login": "k", "password": "s", "extra": {"endpoint_url": "http://s3:8333"}})
    assert options["AWS_ENDPOINT_URL"] == "http://s3:8333" and options["AWS_ALLOW_HTTP"] == "true"


def test_start_order_waits_for_health():
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), (name, dep)
    assert SERVICES["airflow-scheduler"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
