"""Where the lake lives: a ``file://`` directory or an ``s3://bucket/prefix`` on any S3-compatible store.

``ETL_LAKE_URI`` names it; for S3, the endpoint, region and keys come from the Airflow connection
``ETL_LAKE_CONN_ID`` (default ``lake_default``, type ``aws``: login = access key id, password =
secret, extra ``{"endpoint_url": ..., "region_name": ...}``), taken from ``AIRFLOW_CONN_<ID>``,
else (inside a running task) from Airflow, else from the standard ``AWS_*`` variables. A
:class:`LakeLocation` turns that into what each library wants: ``storage_options`` for delta-rs
and a pyarrow filesystem for the engines' Parquet reads and writes. Its ``repr`` never shows a
secret. :func:`check_lake` is the preflight a run makes before it starts any cluster.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

DEFAULT_CONN_ID = "lake_default"
SCHEMES = ("file", "s3")
CONN_EXAMPLE = ('{"conn_type": "aws", "login": "<access key id>", "password": "<secret>", '
                '"extra": {"endpoint_url": "https://...", "region_name": "us-east-1"}}')
# How a store's refusal shows in pyarrow's S3 errors (AWS SDK error names, S3 error codes).
_KEYS_REFUSED = ("ACCESS_DENIED", "AccessDenied", "SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch",
                 "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "UNRECOGNIZED_CLIENT", "EXPIRED_TOKEN")
_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "REQUEST_TIMEOUT")
_NO_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket")


class LakeConfigError(ValueError):
    """The lake's URI or connection cannot be used (a configuration error: never retried)."""


def normalize_uri(value: str | Path, setting: str = "ETL_LAKE_URI") -> str:
    """``value`` as ``file:///abs/path`` or ``s3://bucket/prefix`` (no trailing slash); a plain path is a local lake."""
    text = str(value).strip()
    if not text:
        raise LakeConfigError(f"{setting} is empty: give file:///path/to/lake or s3://bucket/prefix")
    if "://" not in text:
        return "file://" + str(Path(text).expanduser().resolve())
    parts = urlsplit(text)
    if "@" in parts.netloc:  # keys in the URI: never echo them
        text = text.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1], 1)
    if parts.scheme not in SCHEMES:
        raise LakeConfigError(f"{setting}={text!r}: unsupported scheme {parts.scheme!r}; use file:// or s3://")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise LakeConfigError(f"{setting}={text!r}: a file:// URI has no host (file:///absolute/path)")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise LakeConfigError(f"{setting}={text!r}: a file:// URI needs an absolute path (file:///absolute/path)")
        return "file://" + str(Path(path).resolve())
    if not parts.netloc or "@" in parts.netloc or ":" in parts.netloc:
        raise LakeConfigError(f"{setting}={text!r}: an s3:// URI is s3://bucket/prefix (no keys or endpoint in it: "
                              "they belong in the connection)")
    return f"s3://{parts.netloc}{parts.path.rstrip('/')}"


def connection_from_env(conn_id: str, env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The connection ``conn_id`` from ``AIRFLOW_CONN_<ID>`` (Airflow's JSON form), or None."""
    env = os.environ if env is None else env
    raw = env.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if not raw:
        return None
    try:
        conn = json.loads(raw)
    except json.JSONDecodeError:
        raise LakeConfigError(f"AIRFLOW_CONN_{conn_id.upper()} is not JSON: give the connection as "
                              '{"conn_type": "aws", "login": ..., "password": ..., "extra": {...}}') from None
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra) if extra.strip() else {}
    return {**conn, "extra": extra}


def connection_from_airflow(conn_id: str) -> dict[str, Any] | None:
    """The connection ``conn_id`` through Airflow's task SDK when this runs inside a task; else None.

    Outside a task (no supervisor to ask), without Airflow, or when Airflow does not know the
    connection, this quietly gives None.
    """
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    if getattr(runner, "SUPERVISOR_COMMS", None) is None:
        return None
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        return None
    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    return {"conn_type": conn.conn_type, "host": conn.host, "port": conn.port, "login": conn.login,
            "password": conn.password, "extra": conn.extra_dejson}


def connection_from_aws_env(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """An ``aws`` connection from ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (both needed),
    ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL`` and ``AWS_REGION``; None without keys."""
    env = os.environ if env is None else env
    if not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        return None
    extra = {"endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
             "region_name": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
             "aws_session_token": env.get("AWS_SESSION_TOKEN")}
    return {"conn_type": "aws", "login": env["AWS_ACCESS_KEY_ID"], "password": env["AWS_SECRET_ACCESS_KEY"],
            "extra": {k: v for k, v in extra.items() if v}}


def lake_connection(uri: str, conn_id: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection of the S3 lake ``uri``: ``AIRFLOW_CONN_<ID>``, else Airflow's (in a task), else
    the ``AWS_*`` variables; a :class:`LakeConfigError` saying how to give one when there is none."""
    conn = connection_from_env(conn_id, env) or connection_from_airflow(conn_id) or connection_from_aws_env(env)
    if conn is None:
        raise LakeConfigError(
            f"the lake {uri} needs the Airflow connection {conn_id!r} (ETL_LAKE_CONN_ID), which is not defined: "
            f"create it in Airflow or set AIRFLOW_CONN_{conn_id.upper()}='{CONN_EXAMPLE}' "
            "(or set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL)")
    _mask(conn.get("password"), (conn.get("extra") or {}).get("aws_session_token"))
    return conn


def _mask(*secrets: Any) -> None:
    """In an Airflow process, have Airflow's log masker hide these values wherever they would appear."""
    import sys

    if "airflow.sdk" not in sys.modules:  # not in Airflow (a cluster worker): nothing logs through its masker
        return
    from airflow.sdk.log import mask_secret

    for secret in secrets:
        if secret:
            mask_secret(str(secret))


def s3_storage_options(conn: Mapping[str, Any] | None) -> dict[str, str]:
    """delta-rs (object_store) options for an ``aws`` connection: keys, endpoint, region, safe concurrent commits."""
    conn = conn or {}
    extra = conn.get("extra") or {}
    options = {"conditional_put": "etag"}  # concurrent commits to one table: none lost (checked on SeaweedFS)
    if conn.get("login"):
        options["AWS_ACCESS_KEY_ID"] = str(conn["login"])
    if conn.get("password"):
        options["AWS_SECRET_ACCESS_KEY"] = str(conn["password"])
    if extra.get("aws_session_token"):
        options["AWS_SESSION_TOKEN"] = str(extra["aws_session_token"])
    endpoint = extra.get("endpoint_url") or extra.get("host")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    options["AWS_REGION"] = str(extra.get("region_name") or "us-east-1")
    return options


@dataclass(frozen=True)
class LakeLocation:
    """The lake's root URI and the options to reach it (secrets stay out of ``repr``)."""

    uri: str
    conn_id: str = DEFAULT_CONN_ID
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def resolve(cls, value: str | Path | LakeLocation, conn_id: str | None = None,
                env: Mapping[str, str] | None = None) -> LakeLocation:
        """The location of ``value`` (a URI or a path); an S3 lake's options from :func:`lake_connection`
        (``conn_id`` default: ``ETL_LAKE_CONN_ID``, read through the settings)."""
        if isinstance(value, LakeLocation):
            return value
        uri = normalize_uri(value)
        if conn_id is None:
            from include.etl.settings import Settings

            conn_id = Settings.from_env(env).lake_conn_id if uri.startswith("s3://") else DEFAULT_CONN_ID
        if uri.startswith("s3://"):
            return cls(uri, conn_id, s3_storage_options(lake_connection(uri, conn_id, env)))
        return cls(uri, conn_id, {})

    @property
    def is_local(self) -> bool:
        return self.uri.startswith("file://")

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"the lake {self.uri} is not on local disk")
        return Path(self.uri[len("file://"):])

    def join(self, *parts: str) -> str:
        return "/".join([self.uri, *(p.strip("/") for p in parts if p)])

    def fs_path(self, uri: str) -> str:
        """``uri`` (under this lake) as a path of :attr:`filesystem`: a local path or ``bucket/key``."""
        if uri.startswith("file://"):
            return uri[len("file://"):]
        if uri.startswith("s3://"):
            return uri[len("s3://"):]
        return uri

    def filesystem(self, timeout: float | None = None) -> Any:
        """A pyarrow filesystem for this lake (local, or S3 with the connection's endpoint and keys).

        ``timeout``: seconds to connect and per request, one attempt each (for quick checks).
        """
        import pyarrow.fs as pafs

        if self.is_local:
            return pafs.LocalFileSystem()
        o = self.storage_options
        endpoint = o.get("AWS_ENDPOINT_URL", "")
        scheme = "http" if endpoint.startswith("http://") else "https"
        limits: dict[str, Any] = {"connect_timeout": 5, "request_timeout": 30}
        if timeout is not None:
            limits = {"connect_timeout": timeout, "request_timeout": timeout,
                      "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=1)}
        return pafs.S3FileSystem(
            access_key=o.get("AWS_ACCESS_KEY_ID"), secret_key=o.get("AWS_SECRET_ACCESS_KEY"),
            session_token=o.get("AWS_SESSION_TOKEN"), region=o.get("AWS_REGION", "us-east-1"),
            endpoint_override=endpoint.split("://", 1)[-1] or None, scheme=scheme,
            allow_bucket_creation=False, **limits,
        )


def check_lake(location: LakeLocation | str | Path, timeout: float = 3.0) -> None:
    """Raise :class:`LakeConfigError` unless the lake can be reached, listed and written.

    Local: the directory can be created and a file written in it. S3: the endpoint accepts a
    connection (within ``timeout`` s), the bucket exists, and the keys may list the lake and
    write and delete a marker object in it. The message names the lake URI, the connection and
    what is wrong, never a secret.
    """
    location = LakeLocation.resolve(location)
    marker = f".lake-check-{uuid.uuid4().hex}"
    if location.is_local:
        path = location.local_path
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / marker).write_bytes(b"")
            (path / marker).unlink()
        except OSError as exc:
            raise LakeConfigError(f"the lake {location.uri} cannot be created or written: "
                                  f"{exc.strerror or exc} ({exc.filename or path})") from None
        return
    _check_s3(location, marker, timeout)


def _check_s3(location: LakeLocation, marker: str, timeout: float) -> None:
    import pyarrow.fs as pafs

    endpoint = location.storage_options.get("AWS_ENDPOINT_URL", "")
    where = endpoint or "AWS S3"
    if endpoint:
        parts = urlsplit(endpoint)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
        except (OSError, ValueError) as exc:
            _lake_error(location, f"the endpoint {endpoint} is unreachable ({_reason(exc)})")
    fs = location.filesystem(timeout=timeout)
    base = location.fs_path(location.uri)
    bucket = base.split("/", 1)[0]
    step = f"looking up the bucket {bucket!r}"
    try:
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            _lake_error(location, f"the bucket {bucket!r} does not exist at {where}")
        step = f"listing {location.uri}"
        fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        step = f"writing a marker object in {location.uri}"
        with fs.open_output_stream(f"{base}/{marker}") as out:
            out.write(b"lake check\n")
        step = f"deleting the marker object {location.uri}/{marker}"
        fs.delete_file(f"{base}/{marker}")
    except OSError as exc:
        text = str(exc)
        if any(code in text for code in _KEYS_REFUSED):
            problem = (f"the keys were refused by {where} ({step}: access denied): check the connection's login "
                       "(access key id), password (secret key) and their permissions on the bucket")
        elif any(code in text for code in _UNREACHABLE):
            problem = f"the endpoint {where} is unreachable ({step}: {text})"
        elif any(code in text for code in _NO_BUCKET):
            problem = f"the bucket {bucket!r} does not exist at {where}"
        else:
            problem = f"{step} failed: {text}"
        _lake_error(location, problem)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _lake_error(location: LakeLocation, problem: str) -> NoReturn:
    """Raise the :class:`LakeConfigError` of ``problem``, naming the lake and its connection, secrets masked."""
    text = f"the lake {location.uri} (Airflow connection {location.conn_id!r}, ETL_LAKE_CONN_ID): {problem}"
    for key in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if location.storage_options.get(key):
            text = text.replace(location.storage_options[key], "***")
    raise LakeConfigError(text) from None
