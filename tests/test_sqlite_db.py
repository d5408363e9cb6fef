"""The SQLite metadata DB waits for its lock long enough (bin/env.sh + include/etl/sqlite_db.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT


def _env_sh(**env: str) -> str:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "AIRFLOW_HOME": "/nonexistent", **env}
    out = subprocess.run(["bash", "-c", f". {ROOT}/bin/env.sh && printf %s \"${{AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS-unset}}\""],
                         env=base, capture_output=True, text=True, check=True, cwd="/")
    return out.stdout


@pytest.mark.parametrize("conn", [None, "sqlite:////tmp/airflow.db"])
def test_sqlite_gets_the_long_lock_timeout(conn):
    env = {} if conn is None else {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn}
    assert _env_sh(**env) == "include.etl.sqlite_db.CONNECT_ARGS"


def test_postgres_and_an_explicit_setting_are_left_alone():
    assert _env_sh(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://postgres@127.0.0.1/x") == "unset"
    assert _env_sh(AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS="my.module.ARGS") == "my.module.ARGS"


def test_airflow_applies_it_as_sqlite_busy_timeout(tmp_path):
    """A real Airflow engine on a SQLite file built with these settings waits 60 s for a lock."""
    code = (
        "from airflow import settings\n"
        "settings.configure_orm()\n"
        "c = settings.engine.raw_connection()\n"
        "print(settings.engine.dialect.name, c.driver_connection.execute('pragma busy_timeout').fetchone()[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__DATABASE")}
    env.update(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS="include.etl.sqlite_db.CONNECT_ARGS",
               PYTHONPATH=str(ROOT), AIRFLOW_HOME=str(tmp_path))
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["sqlite", "60000"], out.stdout
