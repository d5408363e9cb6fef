"""Find the processes a test started, through the environment they inherited."""

from __future__ import annotations

import os
from pathlib import Path


def processes_with_env(prefix: str, var: str = "ETL_CLUSTER_WORKDIR") -> list[int]:
    """Pids of live (non-zombie) processes whose ``var`` starts with ``prefix``."""
    found = []
    needle = f"{var}={prefix}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if "State:\tZ" in (entry / "status").read_text():
                continue
        except OSError:
            continue
        if any(item.startswith(needle) for item in environ.split(b"\0")):
            found.append(int(entry.name))
    return found
