"""Spark application that runs one registered job: what ``spark-submit`` executes on a
Spark standalone (or YARN, Kubernetes) cluster reached through the provider's SparkSubmitHook.

    spark-submit include/etl/spark_submit_app.py --spec '{"job": "<pipeline>.ingest", "ds": "2024-07-07",
        "lake_root": "/lake", "job_kwargs": {"table": "...", "source": "..."}, ...}' --summary /tmp/summary.json

``--spec`` is the task's :class:`~include.etl.jobs.spec.JobSpec` as JSON.

The job code is the same as on Spark Connect (``SparkEngine`` over a classic session), on the
lake of the job's pipeline. The summary, or the error, is written as JSON to ``--summary`` for
the submitting task to read: ``{"summary": {...}}``, or the error as every job path encodes it
(:func:`include.etl.jobs.errors.encode`: class, module, message, whole traceback, data-error
class) plus ``"error"``: its class name. On an error the application exits 1; the submitting
hook re-raises a data error as such, so it is not retried (``etl_platform.hooks.spark_submit.submit_result``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def error_report(exc: BaseException) -> dict[str, Any]:
    """What the submitting task needs to re-raise ``exc``: its encoding, and ``"error"``: its class name."""
    from include.etl.jobs.errors import encode

    return {"error": type(exc).__name__, **encode(exc)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the job's JobSpec as JSON (include.etl.jobs.spec)")
    parser.add_argument("--summary", required=True)
    args = parser.parse_args(argv)

    # A process that once opened a Spark Connect session leaves these set for its children
    # (pyspark's builder.remote() exports them); this application is a classic Spark driver.
    for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
        os.environ.pop(var, None)

    from pyspark.sql import SparkSession

    from include.etl.engines.spark import SparkEngine
    from include.etl.jobs.spec import JobSpec

    spec = JobSpec.from_dict(json.loads(args.spec))
    session = SparkSession.builder.appName(f"{spec.job} {spec.ds}").getOrCreate()
    try:
        try:
            result: dict[str, Any] = {"summary": spec.run_on(SparkEngine(session))}
            code = 0
        except Exception as exc:  # noqa: BLE001 - reported to the submitting task, which re-raises it
            result = error_report(exc)
            code = 1
        Path(args.summary).write_text(json.dumps(result))
        return code
    finally:
        session.stop()


if __name__ == "__main__":
    sys.exit(main())
