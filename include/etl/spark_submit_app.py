"""Spark application that runs one registered job: what ``spark-submit`` executes on a
Spark standalone (or YARN, Kubernetes) cluster reached through the provider's SparkSubmitHook.

    spark-submit include/etl/spark_submit_app.py --job olympics.ingest --ds 2024-07-07 \\
        --lake /lake --max-reject-ratio 0.01 --kwargs '{"table": "venues", "source": "..."}' \\
        --summary /tmp/summary.json

The job code is the same as on Spark Connect (``SparkEngine`` over a classic session). The
summary (or the error) is written as JSON to ``--summary`` for the submitting task to read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True)
    parser.add_argument("--ds", required=True)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--max-reject-ratio", type=float, default=0.01)
    parser.add_argument("--kwargs", default="{}")
    parser.add_argument("--summary", required=True)
    args = parser.parse_args(argv)

    # A process that once opened a Spark Connect session leaves these set for its children
    # (pyspark's builder.remote() exports them); this application is a classic Spark driver.
    for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
        os.environ.pop(var, None)

    from pyspark.sql import SparkSession

    from include.etl.engines.spark import SparkEngine
    from include.etl.jobs import JobContext, resolve_job
    from include.etl.lake import Lake

    session = SparkSession.builder.appName(f"{args.job} {args.ds}").getOrCreate()
    try:
        ctx = JobContext(SparkEngine(session), Lake(Path(args.lake)), args.ds, args.max_reject_ratio)
        try:
            result = {"summary": resolve_job(args.job)(ctx, **json.loads(args.kwargs))}
            code = 0
        except Exception as exc:  # noqa: BLE001 - reported to the submitting task, which re-raises it
            result = {"error": type(exc).__name__, "message": str(exc)}
            code = 1
        Path(args.summary).write_text(json.dumps(result))
        return code
    finally:
        session.stop()


if __name__ == "__main__":
    sys.exit(main())
