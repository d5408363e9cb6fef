"""Create the secrets of a new AIRFLOW_HOME (idempotent; prints nothing on reuse).

Writes, readable by the owner only:
- ``$AIRFLOW_HOME/secrets.env``: the Fernet key, the JWT secret and the API secret key;
- ``$AIRFLOW_HOME/simple_auth_manager_passwords.json``: the generated ``admin`` password.
Nothing here is ever committed or logged; ``make run`` prints where the password is.

It also writes a minimal ``airflow.cfg`` into a new home, naming this project's ``dags/`` and
``plugins/`` folders, so that plain ``airflow`` commands (and Airflow's own sys.path set-up)
find the project even without ``bin/airflow``'s environment.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def main() -> int:
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    env_file = home / "secrets.env"
    if not env_file.exists():
        from cryptography.fernet import Fernet

        lines = [
            f"AIRFLOW__CORE__FERNET_KEY={Fernet.generate_key().decode()}",
            f"AIRFLOW__API_AUTH__JWT_SECRET={secrets.token_urlsafe(48)}",
            f"AIRFLOW__API__SECRET_KEY={secrets.token_urlsafe(32)}",
        ]
        _write_private(env_file, "\n".join(lines) + "\n")
    cfg = home / "airflow.cfg"
    if not cfg.exists():
        root = Path(__file__).resolve().parents[1]
        cfg.write_text(
            "# Written by bin/bootstrap.py; Airflow fills in every other option with its default.\n"
            f"[core]\ndags_folder = {root / 'dags'}\nplugins_folder = {root / 'plugins'}\nload_examples = False\n"
        )
    pw_file = home / "simple_auth_manager_passwords.json"
    if not pw_file.exists():
        _write_private(pw_file, json.dumps({"admin": secrets.token_urlsafe(12)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
