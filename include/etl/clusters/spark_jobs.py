"""The Spark side of the job endpoint (:mod:`include.etl.clusters.job_server`) beside the runtime's Spark Connect server.

The server's owner imports the Spark Connect client, pandas, pyarrow and the job registry once
(:meth:`SparkRunner.warm`), so a Spark job task imports no pyspark. Per job, the job's thread opens
a client session of its own *joining* the run's server-side session ``spec.session_id`` (a new
session when that one is gone or none is given), tags its operations with the job's key and runs
the job on ``SparkEngine(session)``. Closing the job's client never releases the run's session
(the run's teardown does); a session the job had to open for itself is released. Cancelling
interrupts the job's tagged operations only: other jobs in the same session (other tasks of the
run) or on the same server (other runs) keep running.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from include.etl.clusters.job_server import Job, JobCancelled, first_line
from include.etl.jobs.spec import run_spec

log = logging.getLogger("etl.spark_jobs")


class SparkRunner:
    """Runs the endpoint's jobs on the Spark Connect server at ``address``."""

    def __init__(self, address: str) -> None:
        self.address = address

    def warm(self) -> None:
        """Import what every job needs, then warm a client in the background."""
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
        import pyspark.sql.connect.dataframe  # noqa: F401
        import pyspark.sql.connect.functions  # noqa: F401
        import pyspark.sql.connect.session  # noqa: F401

        import include.etl.engines.spark  # noqa: F401
        import include.etl.jobs  # noqa: F401
        import include.etl.reader  # noqa: F401

        threading.Thread(target=self.warm_client, name="etl-warm-client", daemon=True).start()

    def warm_client(self) -> None:
        """One tiny query through a client of this process (best effort), so that the first job does not pay
        for the client's first plan, gRPC channel and result decoding."""
        from include.etl.clusters.spark_local import connect

        t0 = time.perf_counter()
        try:
            session = connect(self.address)  # a session of its own, released right after
            try:
                session.range(1).count()
            finally:
                session.stop()
            log.info("client warmed up in %.2f s", time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - only an optimisation
            log.info("warming up a client failed (%s); the first job will do it", first_line(exc))

    def check_server(self) -> None:
        """:class:`ClusterStartError` naming the address when nothing answers on the server's port."""
        from include.etl.clusters import ClusterStartError
        from include.etl.clusters.spark_local import port_open, split_address

        host, port = split_address(self.address)
        if not port_open(host, port, 5.0):
            raise ClusterStartError(f"cannot reach the Spark Connect server at {self.address}: nothing answers "
                                    f"on {host}:{port} (its job endpoint still runs)")

    def open_session(self, session_id: str | None) -> Any:
        """A new client on the server: joining ``session_id`` if that session is usable, else a new session."""
        from include.etl.clusters.spark_local import connect

        self.check_server()
        if session_id:
            session = connect(self.address, session_id)
            try:
                session.conf.get("spark.sql.shuffle.partitions")  # one cheap round trip
                return session
            except Exception as exc:  # noqa: BLE001 - SESSION_CLOSED, SESSION_NOT_FOUND, ...
                log.warning("the run's Spark Connect session %s is no longer usable (%s); opening a new session",
                            session_id, first_line(exc))
                session.stop()
        return connect(self.address)

    def run(self, job: Job) -> dict[str, Any]:
        """The job's driver, in its own thread: :func:`run_spec`'s answer, with ``session_id`` on success."""
        opened: list[Any] = []

        def engine() -> Any:
            from include.etl.engines.spark import SparkEngine

            session = self.open_session(job.spec.session_id)
            opened.append(session)
            job.handle = session
            session.addTag(job.key)  # tags are per client thread: this thread runs every operation of the job
            if job.cancelled.is_set():
                raise JobCancelled(f"job {job.key} was cancelled before it started ({job.why})")
            return SparkEngine(session)

        try:
            result = run_spec(job.spec, engine_factory=engine, on_error=job.error)
        finally:
            job.handle = None
            for session in opened:
                try:
                    session.stop()  # a joined session stays on the server (release_session_on_close is off)
                except Exception as exc:  # noqa: BLE001 - closing is best effort
                    log.info("closing the client of job %s failed: %s", job.key, exc)
        if "summary" in result:
            result["session_id"] = getattr(opened[0], "session_id", None)
        return result

    def interrupt(self, job: Job) -> None:
        """Interrupt the job's running operations (those tagged with its key)."""
        session = job.handle
        if session is not None:
            session.interruptTag(job.key)

    def close(self) -> None:
        """Nothing to release: each job closes its own client."""
