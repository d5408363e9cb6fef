"""Jobs for a run's partition (Airflow 3.3 partitioned runs), and the asset events that say what was published.

A partitioned DAG run (``CronPartitionTimetable``, ``PartitionedAssetTimetable``) has a
``partition_key`` and a ``partition_date`` but no logical date, so the ``ds`` that
``SparkJobOperator`` takes from the context does not exist there. The operators here resolve
the run's day with :func:`partition_day` instead: the partition key when it is a date, else the
partition's date, else the logical date (``airflow dags test DAG 2011-12-05`` or a run
triggered with a logical date), and they record on each outlet asset's event the partition
it is for and, in its ``extra``, what the job's summary says about that table (row counts,
rejects, whether the day was empty).

How a job's summary becomes asset events (nothing else in the summary is read):

* ``summary["asset_events"][table]``: the ``extra`` of the event of each outlet
  ``Asset("lake://<pipeline>/<table>")`` (the event is emitted in any case; the key is the
  run's day);
* ``summary["alias_events"][alias]``: a list of ``{"uri": ..., "extra": {...}}``, events the
  task emits through its outlet ``AssetAlias(alias)`` only when the job asks for them (an
  outlet ``Asset`` always gets an event; an alias lets a job emit one only sometimes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from etl_platform.operators.job import SparkJobOperator, log_job_failure, run_identity

ASSET_SCHEME = "lake://"


def partition_day(context: Any) -> str:
    """The run's day (``YYYY-MM-DD``): its partition key if that is a date, else its partition date, else its logical date."""
    key = context.get("partition_key")
    if key:
        try:
            return dt.date.fromisoformat(str(key)).isoformat()
        except ValueError:
            pass
    for name in ("partition_date", "logical_date"):
        value = context.get(name)
        if value is not None:
            return value.strftime("%Y-%m-%d")
    from airflow.sdk.exceptions import AirflowFailException

    # A run's key and dates are fixed: a retry would get the same answer, so no retries.
    raise AirflowFailException(f"the run has no day: partition key {key!r} is not a date and it has neither a "
                               "partition date nor a logical date; trigger a new run with a partition key (the "
                               "trigger form's Advanced Options -> Partition Key)")


def table_of(asset: Any) -> str | None:
    """``<table>`` of an asset ``lake://<pipeline>/<table>``, else None."""
    uri = getattr(asset, "uri", "") or ""
    if not uri.startswith(ASSET_SCHEME):
        return None
    return uri[len(ASSET_SCHEME):].split("/", 1)[-1] or None


def record_outlet_events(task: BaseOperator, context: Any, partition: str | None, summary: dict[str, Any]) -> None:
    """Put ``partition`` and the summary's extras on the outlet events of ``task`` (see the module doc)."""
    from airflow.sdk import Asset, AssetAlias

    extras = (summary or {}).get("asset_events") or {}
    alias_events = (summary or {}).get("alias_events") or {}
    events = context["outlet_events"]
    for outlet in task.outlets:
        if isinstance(outlet, Asset):
            accessor = events[outlet]
            accessor.extra.update(extras.get(table_of(outlet), {}))
            if partition:
                accessor.add_partitions(partition)
        elif isinstance(outlet, AssetAlias):
            for event in alias_events.get(outlet.name, []):
                task.log.info("Emitting an event for %s through alias %s: %s", event["uri"], outlet.name, event["extra"])
                events[outlet].add(Asset(event["uri"]), extra=event.get("extra") or {})


class PartitionedJobOperator(SparkJobOperator):
    """:class:`SparkJobOperator` for a run's partition: the job runs for ``ds`` (templated; by
    default :func:`partition_day`), and the task's outlet events carry ``partition_key``
    (templated; default: the run's partition key, or ``ds`` when the run has none) and the
    extras the job's summary gives (see the module doc)."""

    template_fields: Sequence[str] = (*SparkJobOperator.template_fields, "ds", "partition_key")

    def __init__(self, *, ds: str | None = None, partition_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ds = ds
        self.partition_key = partition_key

    def execute(self, context: Any) -> dict[str, Any]:
        from include.etl.lake import check_ds

        ds = check_ds(self.ds or partition_day(context))
        summary = super().execute({**context, "ds": ds})
        record_outlet_events(self, context, self.partition_key or context.get("partition_key") or ds, summary)
        return summary


class LocalJobOperator(BaseOperator):
    """Run a registered job in the task's own process, without a cluster (``ctx.engine`` is None).

    For jobs that need no engine: publishing the empty partitions of a day without data,
    checking which partitions of a period exist. Data errors, and a run without a day (no partition
    key, partition date or logical date), fail the task without retries.

    :param job: registered job name (``<pipeline>.<job>``).
    :param job_kwargs: keyword arguments of the job (templated).
    :param ds: the partition (templated; default :func:`partition_day`).
    :param skip_unless: a key of the job's summary; when its value is false the task ends
        *skipped* (and with it every task downstream that needs it), logging the summary's
        ``reason``.
    """

    template_fields: Sequence[str] = ("job_kwargs", "ds")
    template_fields_renderers = {"job_kwargs": "json"}
    ui_color = "#e9ecef"

    def __init__(self, *, job: str, job_kwargs: dict[str, Any] | None = None, ds: str | None = None,
                 skip_unless: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.job_kwargs = job_kwargs or {}
        self.ds = ds
        self.skip_unless = skip_unless

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from include.etl.jobs import get_job
        from include.etl.lake import check_ds
        from include.etl.settings import Settings

        try:
            ds = check_ds(self.ds or partition_day(context))
        except ValueError as exc:  # the run's partition key and dates are fixed: a retry gets the same answer
            raise AirflowFailException(f"{exc}. Retrying cannot change that: trigger a new run with a partition key "
                                       "(the trigger form's Advanced Options -> Partition Key)") from exc
        registered = get_job(self.job)
        s = Settings.from_env()
        from etl_platform.operators.lake import publishes_per_run

        run = {**run_identity(context), **({"publish": "run"} if publishes_per_run(self) else {})}
        ctx = registered.context(engine=None, lake_root=s.lake_uri, ds=ds, run=run,
                                 max_reject_ratio=s.max_reject_ratio,
                                 block_bytes=s.ingest_block_bytes)
        self.log.info("Running job %s for ds=%s in this process with %s", self.job, ds, self.job_kwargs)
        try:
            summary = registered(ctx, **self.job_kwargs)
        except Exception as exc:
            if log_job_failure(self.log, self.job, exc):
                raise AirflowFailException(str(exc)) from exc
            raise
        self.log.info("Job %s done: %s", self.job, summary)
        if self.skip_unless and not summary.get(self.skip_unless):
            raise AirflowSkipException(str(summary.get("reason") or f"{self.skip_unless} is false"))
        record_outlet_events(self, context, context.get("partition_key") or ds, summary)
        return summary
