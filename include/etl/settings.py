"""The one place that reads the platform's deployment configuration.

Every other module receives a :class:`Settings` (or plain values taken from it); none of
them reads environment variables itself. Values come from environment variables so that
the same code is configured identically by ``bin/airflow``, ``.env`` and docker-compose.

=========================  =====================================================  ==========================
variable                   meaning                                                default
=========================  =====================================================  ==========================
``ETL_LAKE_URI``           where the lake lives: ``file:///path`` or               ``file://<project>/lake``
                           ``s3://bucket/prefix`` (any S3-compatible store)
``ETL_LAKE_ROOT``          a local lake directory (used when ETL_LAKE_URI is      (unset)
                           not set; the form before object storage)
``ETL_LAKE_CONN_ID``       Airflow connection (type ``aws``) with the S3 lake's   ``lake_default``
                           keys, endpoint and region
``ETL_LAKE_RETENTION_DAYS`` how long ``lake_maintenance`` keeps the files of     ``7``
                           replaced versions (time travel reaches that far back)
``ETL_DATA_DIR``           the shared data root: pipelines resolve their default  ``../shared/data`` beside the
                           inputs under it (``<pipeline>/<file>``)                project if it exists, else
                                                                                  ``<project>/data``
``ETL_DATA_DIR_<PIPELINE>`` the data root of one pipeline (``ETL_DATA_DIR_SALES``     ``ETL_DATA_DIR``
                           for ``sales``): its default inputs resolve under
                           it instead, in the same layout; the other pipelines
                           keep ``ETL_DATA_DIR``
``ETL_DEFAULT_BACKEND``    backend a run uses unless its trigger form says other  ``dask``
``ETL_BIND_HOST``          interface that locally started clusters listen on      ``127.0.0.1``
``ETL_LOCAL_WORKERS``      size of a locally started engine: Dask worker          ``2``
                           processes; Spark runs ``local[workers x threads]``
``ETL_LOCAL_THREADS``      threads per local Dask worker (see above for Spark)    ``1``
``ETL_DASK_MEMORY_LIMIT``  memory limit per local Dask worker                     ``4GiB``
``ETL_RUNTIME_DIR``        where the runtime's engines write their handles; runs  unset (``bin/run``:
                           without a connection attach to them                    ``$AIRFLOW_HOME/runtime``)
``ETL_RUNTIME_ENGINES``    the engines ``make run`` starts and owns               ``dask,spark``
``ETL_SPARK_JAVA_OPTIONS`` extra JVM options of every Spark JVM the platform      (none: the JVM's defaults
                           starts (local server, a one-off run's session, spark-  with ``-XX:+UseParallel
                           submit drivers and executors), e.g. ``-XX:TieredStop   GC``; a one-off run's
                           AtLevel=1 -XX:+UseSerialGC``: half the CPU of small    session: ``-XX:TieredStop
                           jobs on a small machine (docs/runtime.md); with        AtLevel=1 -XX:+UseSerial
                           ``-Xshare...`` no class-data archive is added, with    GC``)
                           a ``-XX:+Use...GC`` not the parallel collector
``ETL_SPARK_DRIVER_MEMORY`` heap of the local Spark server's JVM and of a one-off ``640MiB`` (Spark's own
                           run's session, which run Spark's tasks (local mode)    default is 1 GiB)
``ETL_DASK_THIN_TASKS``    Dask jobs run their driver on a cluster worker, so     ``true``
                           the task process imports only ``distributed``
``ETL_LANDING_POKE_INTERVAL`` how often a deferred landing-file sensor looks for   ``60`` (seconds)
                           its file (in the triggerer)
``ETL_MAX_REJECT_RATIO``   share of rejected rows above which an ingest fails     ``0.01``
``ETL_INGEST_BLOCK_BYTES`` most bytes of input per parse block (partition)        ``64MiB`` (bytes, or with a
                                                                                  ``KiB``/``MiB``/``GiB`` suffix)
=========================  =====================================================  ==========================

``ETL_DASK_WORKERS`` and ``ETL_DASK_THREADS``, the names before they sized Spark too, are still
read (with a warning) when the new names are not set.

A pipeline's own input paths are not settings: the pipeline declares them relative to its data
root (:meth:`Settings.pipeline_data_dir`, see :class:`include.etl.jobs.Pipeline`), and its DAG's
trigger form overrides the root (``data_dir``) or any file (``*_path``, :func:`data_path`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("dask", "spark")
# The shared data sets sit beside the checkout (CI and the dev machines); a project without
# them keeps its inputs in <project>/data.
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
# ETL_DATA_DIR_<PIPELINE>: one pipeline's data root (the pipeline's name in capitals).
PIPELINE_DATA_DIR = "ETL_DATA_DIR_{PIPELINE}"
DEFAULT_BLOCK_BYTES = 64 * 1024 * 1024
MIN_BLOCK_BYTES = 4 * 1024  # small blocks are for tests; a block must hold a whole record
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


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


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not value > 0:
        raise ConfigError(f"{name}={env.get(name)!r} must be a number of seconds > 0")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _float(env, name, default)
    if value != int(value) or value < 1:
        raise ConfigError(f"{name}={env.get(name)!r} must be a whole number >= 1")
    return int(value)


def _lake_uri(env: Mapping[str, str]) -> str:
    """The lake's URI, normalised; a malformed one is kept as given, so that DAGs still parse and
    a run fails in its first task naming it (``StartClusterOperator.check_lake``)."""
    from include.etl.lake.location import LakeConfigError, normalize_uri

    if env.get("ETL_LAKE_URI"):
        try:
            return normalize_uri(env["ETL_LAKE_URI"])
        except LakeConfigError:
            return env["ETL_LAKE_URI"].strip()
    return normalize_uri(_path(env, "ETL_LAKE_ROOT", PROJECT_ROOT / "lake"), "ETL_LAKE_ROOT")


def _path(env: Mapping[str, str], name: str, default: Path) -> Path:
    """A path setting; relative values are taken from the project root, not the process's cwd."""
    raw = env.get(name)
    path = Path(raw).expanduser() if raw else default
    return path if path.is_absolute() else PROJECT_ROOT / path


def _bytes(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    """A size in bytes: a whole number, optionally with a unit (``64MiB``, ``500kB``, ``1GiB``)."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", raw)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{name}={raw!r} is not a size in bytes (e.g. 67108864 or 64MiB)")
    value = int(match.group(1)) * _UNITS[unit]
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is below the minimum of {minimum} bytes")
    return value


def default_data_dir() -> Path:
    """``../shared/data`` beside the project when it exists, else ``<project>/data``."""
    return SHARED_DATA_DIR if SHARED_DATA_DIR.is_dir() else PROJECT_ROOT / "data"


def pipeline_data_dir_var(pipeline: str) -> str:
    """The setting of ``pipeline``'s own data root: ``ETL_DATA_DIR_DAILY_SALES`` for ``daily_sales``."""
    return PIPELINE_DATA_DIR.format(PIPELINE=pipeline.upper())


def data_path(data_dir: str | Path, path: str | Path) -> str:
    """An input path as a run uses it: ``path`` itself when absolute (or ``~/...``), else under
    ``data_dir`` (itself taken from the project root when relative, like ``ETL_DATA_DIR``).

    The DAGs render their inputs with it (``{{ data_path(params.data_dir, params.x_path) }}``):
    no I/O, so it is safe at parse time and in templates.
    """
    file = Path(str(path).strip()).expanduser()
    if file.is_absolute():
        return str(file)
    root = Path(str(data_dir).strip()).expanduser()
    return str((root if root.is_absolute() else PROJECT_ROOT / root) / file)


def _engines(value: str) -> tuple[str, ...]:
    """``ETL_RUNTIME_ENGINES``: a comma-separated subset of the backends (empty: none)."""
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ConfigError(f"ETL_RUNTIME_ENGINES={value!r}: unknown engine(s) {unknown}; expected a comma-separated "
                          f"subset of {', '.join(BACKENDS)}")
    return tuple(dict.fromkeys(names))


def check_backend(backend: str, source: str = "backend") -> str:
    """Return ``backend`` normalised, or raise naming where the bad value came from."""
    name = (backend or "").strip().lower()
    if name not in BACKENDS:
        raise ConfigError(f"{source}={backend!r} is not a known backend; choose one of {', '.join(BACKENDS)}")
    return name


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={env.get(name)!r} is not a boolean (true/false)")


RENAMED = {"ETL_DASK_WORKERS": "ETL_LOCAL_WORKERS", "ETL_DASK_THREADS": "ETL_LOCAL_THREADS"}


def _renamed(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` with each setting set under its old name only (:data:`RENAMED`) under its new name too."""
    old = [name for name in RENAMED if env.get(name) and not env.get(RENAMED[name])]
    if not old:
        return env
    for name in old:
        log.warning("%s is deprecated: it sizes both engines now, set %s instead", name, RENAMED[name])
    return {**env, **{RENAMED[name]: env[name] for name in old}}


@dataclass(frozen=True)
class Settings:
    lake_uri: str
    data_dir: Path
    default_backend: str = "dask"
    bind_host: str = "127.0.0.1"
    local_workers: int = 2
    local_threads: int = 1
    dask_memory_limit: str = "4GiB"
    runtime_dir: Path | None = None  # ETL_RUNTIME_DIR: the runtime's engines (include.etl.clusters.runtime)
    runtime_engines: tuple[str, ...] = ("dask", "spark")
    spark_java_options: str = ""
    spark_driver_memory: int = 640 * 2**20
    dask_thin_tasks: bool = True
    landing_poke_interval: float = 60.0
    max_reject_ratio: float = 0.01
    ingest_block_bytes: int = DEFAULT_BLOCK_BYTES
    lake_conn_id: str = "lake_default"
    lake_retention_days: float = 7.0
    # (pipeline, root) of every ETL_DATA_DIR_<PIPELINE> set: the pipelines with a data root of their own.
    pipeline_data_dirs: tuple[tuple[str, Path], ...] = ()

    def pipeline_data_dir(self, pipeline: str) -> Path:
        """The data root of ``pipeline``: ``ETL_DATA_DIR_<PIPELINE>`` when set, else ``ETL_DATA_DIR``."""
        return dict(self.pipeline_data_dirs).get(pipeline.lower(), self.data_dir)

    @property
    def lake_root(self) -> Path:
        """The lake's directory when it is on local disk (``file://``); an error for an object-store lake."""
        if not self.lake_uri.startswith("file://"):
            raise ConfigError(f"the lake is at {self.lake_uri}, not on local disk")
        return Path(self.lake_uri[len("file://"):])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = _renamed(os.environ if env is None else env)
        ratio = _float(env, "ETL_MAX_REJECT_RATIO", 0.01)
        if not 0 <= ratio <= 1:
            raise ConfigError(f"ETL_MAX_REJECT_RATIO={ratio} must be between 0 and 1")
        return cls(
            lake_uri=_lake_uri(env),
            data_dir=_path(env, "ETL_DATA_DIR", default_data_dir()),
            default_backend=check_backend(env.get("ETL_DEFAULT_BACKEND") or "dask", "ETL_DEFAULT_BACKEND"),
            bind_host=env.get("ETL_BIND_HOST") or "127.0.0.1",
            local_workers=_int(env, "ETL_LOCAL_WORKERS", 2),
            local_threads=_int(env, "ETL_LOCAL_THREADS", 1),
            dask_memory_limit=env.get("ETL_DASK_MEMORY_LIMIT") or "4GiB",
            runtime_dir=Path(env["ETL_RUNTIME_DIR"]).expanduser() if env.get("ETL_RUNTIME_DIR") else None,
            runtime_engines=_engines(env.get("ETL_RUNTIME_ENGINES", "dask,spark")),
            spark_java_options=(env.get("ETL_SPARK_JAVA_OPTIONS") or "").strip(),
            spark_driver_memory=_bytes(env, "ETL_SPARK_DRIVER_MEMORY", 640 * 2**20, 512 * 2**20),
            dask_thin_tasks=_bool(env, "ETL_DASK_THIN_TASKS", True),
            landing_poke_interval=_positive(env, "ETL_LANDING_POKE_INTERVAL", 60.0),
            max_reject_ratio=ratio,
            ingest_block_bytes=_bytes(env, "ETL_INGEST_BLOCK_BYTES", DEFAULT_BLOCK_BYTES, MIN_BLOCK_BYTES),
            lake_conn_id=env.get("ETL_LAKE_CONN_ID") or "lake_default",
            lake_retention_days=_positive(env, "ETL_LAKE_RETENTION_DAYS", 7.0),
            pipeline_data_dirs=_pipeline_data_dirs(env),
        )


def _pipeline_data_dirs(env: Mapping[str, str]) -> tuple[tuple[str, Path], ...]:
    """Every non-empty ``ETL_DATA_DIR_<PIPELINE>`` as ``(pipeline, root)``, e.g. ``("daily_sales", Path(...))``."""
    prefix = PIPELINE_DATA_DIR.format(PIPELINE="")
    return tuple((name[len(prefix):].lower(), _path(env, name, Path()))
                 for name in sorted(env) if name.startswith(prefix) and len(name) > len(prefix) and env[name].strip())
