"""The one place that reads the platform's deployment configuration.

Every other module receives a :class:`Settings` (or plain values taken from it); none of
them reads environment variables itself. Values come from environment variables so that
the same code is configured identically by ``bin/airflow``, ``.env`` and docker-compose.

=========================  =====================================================  ==========================
variable                   meaning                                                default
=========================  =====================================================  ==========================
``ETL_LAKE_ROOT``          root directory of the lake (shared by every worker)    ``<project>/lake``
``ETL_DATA_DIR``           where the default Olympics inputs live                 ``<project>/data/olympics``
``ETL_ATHLETES_PATH``     default athletes input (trigger form can override)     ``$ETL_DATA_DIR/athlete_events_head.csv``
``ETL_REGIONS_PATH``      default regions input                                  ``$ETL_DATA_DIR/noc_regions.csv``
``ETL_VENUES_PATH``       default venues input                                   ``$ETL_DATA_DIR/host_city_locations.csv``
``ETL_DEFAULT_BACKEND``    backend a run uses unless its trigger form says other  ``dask``
``ETL_BIND_HOST``          interface that locally started clusters listen on      ``127.0.0.1``
``ETL_DASK_WORKERS``       worker processes of a locally started Dask cluster     ``2``
``ETL_DASK_THREADS``       threads per local Dask worker                          ``1``
``ETL_DASK_MEMORY_LIMIT``  memory limit per local Dask worker                     ``4GiB``
``ETL_CLUSTER_IDLE_TIMEOUT`` a started cluster stops itself after this long idle  ``3600`` (seconds)
``ETL_MAX_REJECT_RATIO``   share of rejected rows above which an ingest fails     ``0.01``
=========================  =====================================================  ==========================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("dask", "spark")


class ConfigError(ValueError):
    """A setting has a value the platform cannot use; the message names the setting."""


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _float(env, name, default)
    if value != int(value) or value < 1:
        raise ConfigError(f"{name}={env.get(name)!r} must be a whole number >= 1")
    return int(value)


def _path(env: Mapping[str, str], name: str, default: Path) -> Path:
    """A path setting; relative values are taken from the project root, not the process's cwd."""
    raw = env.get(name)
    path = Path(raw).expanduser() if raw else default
    return path if path.is_absolute() else PROJECT_ROOT / path


def check_backend(backend: str, source: str = "backend") -> str:
    """Return ``backend`` normalised, or raise naming where the bad value came from."""
    name = (backend or "").strip().lower()
    if name not in BACKENDS:
        raise ConfigError(f"{source}={backend!r} is not a known backend; choose one of {', '.join(BACKENDS)}")
    return name


@dataclass(frozen=True)
class Settings:
    lake_root: Path
    data_dir: Path
    default_backend: str = "dask"
    bind_host: str = "127.0.0.1"
    dask_workers: int = 2
    dask_threads: int = 1
    dask_memory_limit: str = "4GiB"
    cluster_idle_timeout: float = 3600.0
    max_reject_ratio: float = 0.01
    athletes_path: str = ""
    regions_path: str = ""
    venues_path: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        ratio = _float(env, "ETL_MAX_REJECT_RATIO", 0.01)
        if not 0 <= ratio <= 1:
            raise ConfigError(f"ETL_MAX_REJECT_RATIO={ratio} must be between 0 and 1")
        data_dir = _path(env, "ETL_DATA_DIR", PROJECT_ROOT / "data" / "olympics")
        return cls(
            lake_root=_path(env, "ETL_LAKE_ROOT", PROJECT_ROOT / "lake"),
            data_dir=data_dir,
            athletes_path=str(_path(env, "ETL_ATHLETES_PATH", data_dir / "athlete_events_head.csv")),
            regions_path=str(_path(env, "ETL_REGIONS_PATH", data_dir / "noc_regions.csv")),
            venues_path=str(_path(env, "ETL_VENUES_PATH", data_dir / "host_city_locations.csv")),
            default_backend=check_backend(env.get("ETL_DEFAULT_BACKEND") or "dask", "ETL_DEFAULT_BACKEND"),
            bind_host=env.get("ETL_BIND_HOST") or "127.0.0.1",
            dask_workers=_int(env, "ETL_DASK_WORKERS", 2),
            dask_threads=_int(env, "ETL_DASK_THREADS", 1),
            dask_memory_limit=env.get("ETL_DASK_MEMORY_LIMIT") or "4GiB",
            cluster_idle_timeout=_float(env, "ETL_CLUSTER_IDLE_TIMEOUT", 3600.0),
            max_reject_ratio=ratio,
        )
