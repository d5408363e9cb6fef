"""A job endpoint on a local Dask scheduler's HTTP server, so a task process needs no Dask import at all.

``POST {scheduler http}/etl/jobs`` with a :class:`~include.etl.jobs.spec.JobSpec` (as JSON): the scheduler submits :func:`include.etl.clusters.dask_jobs.run_job_on_worker`
(through a client of its own, in its event loop) and answers once the job ended, with
``{"summary", "elapsed_s", "worker", "logs"}`` or ``{"error": {...}, "logs", ...}`` (the error as
:func:`include.etl.jobs.errors.encode` gives it: class, message, whole traceback, data error).
``DELETE {…}/etl/jobs/<key>`` cancels that job (``on_kill``); a client that disconnects before
the answer (a task process SIGKILLed) cancels its job too. Only that job's future is cancelled:
other jobs on the cluster keep running.

The endpoint is added by the scheduler's preload (:func:`include.etl.clusters.dask_local.dask_setup`)
to the HTTP server the scheduler already runs for its dashboard, bound to ``ETL_BIND_HOST``
(127.0.0.1): it adds no listening socket, and anyone who can reach it could already run code
through the scheduler's own port. The task side is :func:`call_job` (urllib and json only).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

JOBS_PATH = "/etl/jobs"


# ---- in the scheduler -------------------------------------------------------------------


def add_routes(scheduler: Any) -> None:
    """Add the job endpoint to ``scheduler``'s HTTP server (called by the scheduler's preload)."""
    import asyncio

    from tornado import web

    from include.etl.clusters.dask_jobs import run_job_on_worker
    from include.etl.jobs.errors import encode

    state: dict[str, Any] = {"client": None, "futures": {}}

    async def client():
        if state["client"] is None:
            from distributed import Client

            state["client"] = await Client(scheduler.address, asynchronous=True, name="etl-job-endpoint",
                                           set_as_default=False)
        return state["client"]

    async def cancel(key: str) -> bool:
        future = state["futures"].pop(key, None)
        if future is None:
            return False
        await future.cancel()
        log.info("cancelled job %s", key)
        return True

    class Jobs(web.RequestHandler):
        key: str | None = None

        def check_xsrf_cookie(self) -> None:  # a programmatic endpoint, no browser forms
            pass

        async def post(self) -> None:
            from include.etl.jobs.spec import JobSpec

            try:
                spec = JobSpec.from_dict(json.loads(self.request.body))
            except ValueError as exc:
                self.set_status(400)
                self.finish(json.dumps({"error": str(exc)}))
                return
            self.key = key = spec.key
            c = await client()
            future = c.submit(run_job_on_worker, spec.to_dict(), key=key, pure=False, retries=0)
            state["futures"][key] = future
            try:
                result = await future
            except BaseException as exc:  # noqa: BLE001 - cancelled, worker lost too often...
                result = {"error": encode(exc), "logs": []}
            finally:
                state["futures"].pop(key, None)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(result, default=str))

        def on_connection_close(self) -> None:
            if self.key in state["futures"]:  # the task process went away before the answer
                log.warning("the client of job %s disconnected: cancelling the job", self.key)
                asyncio.ensure_future(cancel(self.key))

        async def delete(self, key: str = "") -> None:
            found = await cancel(key)
            self.finish(json.dumps({"cancelled": found}))

    scheduler.http_application.add_handlers(r".*", [(JOBS_PATH, Jobs), (JOBS_PATH + r"/([^/]+)", Jobs)])


# ---- in the task process ---------------------------------------------------------------


class JobEndpointError(RuntimeError):
    """The job endpoint could not be reached or answered nonsense (retryable)."""


def call_job(url: str, spec: dict[str, Any]) -> dict[str, Any]:
    """POST the job to the endpoint at ``url`` and wait for its result (however long the job takes)."""
    req = urllib.request.Request(url, data=json.dumps(spec).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=None) as resp:  # noqa: S310 - our own loopback endpoint
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        raise JobEndpointError(f"the job endpoint {url} answered {exc.code}: {exc.read()[:2000]!r}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise JobEndpointError(f"cannot run the job through {url}: {exc}") from exc


def cancel_job(url: str, key: str, timeout: float = 5.0) -> bool:
    req = urllib.request.Request(f"{url}/{key}", method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return bool(json.load(resp).get("cancelled"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("could not cancel job %s through %s: %s", key, url, exc)
        return False
