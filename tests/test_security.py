"""Security defaults: generated secrets stay private, nothing secret is committed, loopback by default."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

from tests.conftest import ROOT


def _bootstrap(home):
    env = dict(os.environ, AIRFLOW_HOME=str(home))
    subprocess.run([sys.executable, str(ROOT / "bin" / "bootstrap.py")], env=env, check=True, timeout=60)


def test_generated_secrets_are_owner_only_and_stable(tmp_path):
    from cryptography.fernet import Fernet

    _bootstrap(tmp_path)
    secrets_env, passwords = tmp_path / "secrets.env", tmp_path / "simple_auth_manager_passwords.json"
    for path in (secrets_env, passwords):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    values = dict(line.split("=", 1) for line in secrets_env.read_text().splitlines())
    assert set(values) == {"AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"}
    Fernet(values["AIRFLOW__CORE__FERNET_KEY"].encode())  # a valid key
    assert len(values["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 40
    password = json.loads(passwords.read_text())["admin"]
    assert len(password) >= 12
    before = (secrets_env.read_text(), passwords.read_text())
    _bootstrap(tmp_path)  # a second start reuses them
    assert (secrets_env.read_text(), passwords.read_text()) == before
    other = tmp_path / "other"
    _bootstrap(other)  # another home gets its own
    assert json.loads((other / "simple_auth_manager_passwords.json").read_text())["admin"] != password


def test_no_secret_is_committed():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert not [f for f in files if re.search(r"(^|/)(\.env|secrets\.env|.*passwords.*\.json)$", f)], files
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if not line.startswith("#") and re.search(r"PASSWORD|SECRET|FERNET|TOKEN", key):
            assert value == "", f".env.example must hold placeholders only: {line}"


def test_servers_default_to_loopback():
    env_sh = (ROOT / "bin" / "env.sh").read_text()
    assert 'AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"' in env_sh
    from include.etl.settings import Settings

    assert Settings.from_env({}).bind_host == "127.0.0.1"


def test_bin_airflow_exports_the_generated_secrets_whole(airflow_home):
    """A Fernet key ends in '=' padding: bin/airflow must pass it on unchanged (deferred tasks need it)."""
    from tests.e2e.airflow_env import bin_airflow

    out = bin_airflow(airflow_home, "config", "get-value", "core", "fernet_key", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    values = dict(line.split("=", 1) for line in (airflow_home / "secrets.env").read_text().splitlines())
    assert values["AIRFLOW__CORE__FERNET_KEY"].endswith("=")
    assert out.stdout.strip().splitlines()[-1] == values["AIRFLOW__CORE__FERNET_KEY"]
