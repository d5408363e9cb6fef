"""The publish step of a run: every table the run staged becomes visible at once, or none does.

A DAG whose job tasks lead to a :class:`LakePublishOperator` publishes per run, not per task
(write, audit, publish): its job tasks stage their tables and pass their quality gates, and
their commits wait for this step (:meth:`include.etl.lake.Lake.publish_run`). A run that fails,
is killed or times out before it leaves every published table as it was: same Delta version,
same rows. This step runs in the task's own process (no cluster) and takes a second or so.

While it runs, a reader may see some of the run's tables published and others not yet (one
commit per table, each atomic). A retry commits what an earlier try did not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from etl_platform.operators.job import run_identity


def publishes_per_run(task: BaseOperator) -> bool:
    """True when a :class:`LakePublishOperator` is downstream of ``task`` (its commits wait for it)."""
    return any(isinstance(t, LakePublishOperator) for t in task.get_flat_relatives(upstream=False))


class LakePublishOperator(BaseOperator):
    """Commit every table the run staged in ``pipeline``'s lake, then emit the outlets' asset events.

    The asset events carry what the run's job summaries say about each table (``asset_events``
    and ``alias_events``, see :mod:`etl_platform.operators.partitioned`), gathered from every
    upstream task's XCom, and the run's partition (its partition key, else its day).

    :param pipeline: the pipeline whose lake the run wrote.
    """

    template_fields: Sequence[str] = ("pipeline",)
    ui_color = "#d4edda"

    def __init__(self, *, pipeline: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline

    def execute(self, context: Any) -> dict[str, Any]:
        from etl_platform.operators.partitioned import partition_day, record_outlet_events
        from include.etl.lake import Lake
        from include.etl.settings import Settings

        ti = context["ti"]
        run = run_identity(context)
        lake = Lake(Settings.from_env().lake_uri, self.pipeline, run={**run, "publish": "run"})
        published = lake.publish_run(publisher={"task_id": run["task_id"], "try_number": run["try_number"]})
        for p in published:
            self.log.info("Published %s ds=%s: %s rows (version %s)", p["table"], p["ds"], p["rows"], p["version"])
        if not published:
            self.log.warning("The run staged nothing to publish in %s", lake.root.join(self.pipeline))
        merged: dict[str, Any] = {"asset_events": {}, "alias_events": {}}
        for task_id in sorted(self.get_flat_relative_ids(upstream=True)):
            summary = ti.xcom_pull(task_ids=task_id)
            if isinstance(summary, dict):
                merged["asset_events"].update(summary.get("asset_events") or {})
                for alias, events in (summary.get("alias_events") or {}).items():
                    merged["alias_events"].setdefault(alias, []).extend(events)
        if self.outlets:
            partition = context.get("partition_key") or partition_day(context)
            record_outlet_events(self, context, partition, merged)
        return {"published": published}
