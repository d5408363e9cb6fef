"""Wait for the day's landing file, deferred (no worker slot held), until a deadline; then branch.

Why not the standard provider's ``FileSensor(deferrable=True)``: its timeout *fails* the task
(or skips it with ``soft_fail``, and every task after it), while a landing zone needs a third
outcome: "the deadline passed without a file" is a day without data, which the pipeline
publishes as such. And its trigger never stops by itself: a deadline is a timeout.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.branch import BranchMixIn

from etl_platform.operators.partitioned import partition_day


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LandingFileSensor(BaseOperator, BranchMixIn):
    """Wait for ``{landing_dir}/{pattern}`` of the run's day until ``deadline_hours`` after the day ends.

    * The file is there: ``present``. Looked for at once; while it is not there and the
      deadline is ahead, the task defers to :class:`~etl_platform.triggers.landing.LandingFileTrigger`
      in the triggerer, which checks every ``poke_interval`` seconds.
    * The deadline passes without it, or had already passed when the task started (backfills,
      reruns of old days): ``absent``, decided at once. The task succeeds either way.

    The outcome ``{"day", "path", "present", "deadline", "decided"}`` is pushed as the XCom
    :attr:`xcom_key` (``landing``; a branching task's return value is not pushed) and returned.
    With ``if_present`` / ``if_absent`` (task ids) the sensor also branches: the other direct
    downstream tasks are skipped.

    :param landing_dir: directory of the landing files (templated).
    :param deadline_hours: hours after the end of the day (UTC) the file may still come (templated).
    :param day: the day (templated); default: the run's partition day.
    :param pattern: the file name, with ``{ds}`` for the day.
    """

    template_fields: Sequence[str] = ("landing_dir", "deadline_hours", "day")
    xcom_key = "landing"
    ui_color = "#fff3bf"
    inherits_from_skipmixin = True

    def __init__(self, *, landing_dir: str, deadline_hours: float | str = 6, day: str | None = None,
                 pattern: str = "{ds}.csv", poke_interval: float = 60.0, if_present: str | list[str] | None = None,
                 if_absent: str | list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.landing_dir = landing_dir
        self.deadline_hours = deadline_hours
        self.day = day
        self.pattern = pattern
        self.poke_interval = poke_interval
        self.if_present = if_present
        self.if_absent = if_absent

    def _target(self, context: Any) -> tuple[str, str, dt.datetime]:
        from include.etl.landing import deadline_for, landing_file

        day = self.day or partition_day(context)
        try:
            hours = float(self.deadline_hours)
        except (TypeError, ValueError):
            raise ValueError(f"deadline_hours={self.deadline_hours!r} is not a number of hours") from None
        return day, landing_file(self.landing_dir, day, self.pattern), deadline_for(day, hours)

    def execute(self, context: Any) -> dict[str, Any]:
        from etl_platform.triggers.landing import LandingFileTrigger

        day, path, deadline = self._target(context)
        if os.path.isfile(path):
            return self._decide(context, day, path, deadline, True, "found when the task started")
        now = _now()
        if now >= deadline:
            return self._decide(context, day, path, deadline, False,
                                f"the deadline had already passed when the task started ({now:%Y-%m-%d %H:%M} UTC)")
        self.log.info("No %s yet: deferring until it lands or until its deadline %s (%.1f h from now); "
                      "no worker slot is held meanwhile", path, deadline.isoformat(), (deadline - now).total_seconds() / 3600)
        self.defer(
            trigger=LandingFileTrigger(path=path, deadline=deadline.isoformat(), poke_interval=self.poke_interval),
            method_name="execute_complete",
            # A safety net only: the trigger itself fires at the deadline.
            timeout=deadline - now + dt.timedelta(seconds=max(300.0, 2 * self.poke_interval)),
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        day, path, deadline = self._target(context)
        present = bool(event and event.get("present")) or os.path.isfile(path)
        how = "it landed while the task was deferred" if present else "its deadline passed while the task was deferred"
        return self._decide(context, day, path, deadline, present, how)

    def _decide(self, context: Any, day: str, path: str, deadline: dt.datetime, present: bool, how: str) -> dict[str, Any]:
        if present:
            self.log.info("Landing file of %s present: %s (%s)", day, path, how)
        else:
            self.log.warning("No landing file for %s: %s does not exist and %s (deadline %s): a day without data",
                             day, path, how, deadline.isoformat())
        result = {"day": day, "path": path, "present": present, "deadline": deadline.isoformat(), "decided": how}
        context["ti"].xcom_push(key=self.xcom_key, value=result)
        if self.if_present is not None or self.if_absent is not None:
            branch = self.if_present if present else self.if_absent
            self.do_branch(context, branch if branch is not None else [])
        return result
