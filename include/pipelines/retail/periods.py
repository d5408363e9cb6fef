"""The rollup periods: a calendar month (the production rollup) or an ISO week (Monday to Sunday).

Pure Python (the DAG factory uses it at parse time). The period's partition in the lake is
``ds=<first day>``; its label in the mart is ``2011-01`` for a month, ``2011-01-03`` (the
Monday) for a week. A rollup run's partition key names its period: ``2011-01`` (a month),
``2010-12-06 (W49)`` (a week), with `` re-run`` appended for a run caused by a re-run day.
"""

from __future__ import annotations

import calendar
import datetime as dt

PERIODS = ("month", "week")


def check_period(period: str) -> str:
    if period not in PERIODS:
        raise ValueError(f"period {period!r} is not one of {', '.join(PERIODS)}")
    return period


def period_start(period: str, day: str | dt.date) -> dt.date:
    """First day of the ``period`` that contains ``day``."""
    check_period(period)
    day = dt.date.fromisoformat(day) if isinstance(day, str) else day
    return day.replace(day=1) if period == "month" else day - dt.timedelta(days=day.weekday())


def period_days(period: str, day: str | dt.date) -> list[str]:
    """Every day (ISO) of the ``period`` that contains ``day``."""
    start = period_start(period, day)
    n = calendar.monthrange(start.year, start.month)[1] if period == "month" else 7
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(n)]


def period_label(period: str, day: str | dt.date) -> str:
    start = period_start(period, day)
    return start.strftime("%Y-%m") if period == "month" else start.isoformat()


def key_start(period: str, key: str | None) -> str:
    """First day (ISO) of the period a rollup run's partition key names; ``''`` when it names none.

    ``2011-11`` and ``2011-11 re-run`` -> ``2011-11-01``; ``2010-12-06 (W49)`` and its re-run ->
    ``2010-12-06`` (a week key naming another day of the week -> its Monday).
    """
    check_period(period)
    head = (key or "").strip()[: 7 if period == "month" else 10]
    try:
        day = dt.date.fromisoformat(f"{head}-01" if period == "month" else head)
    except ValueError:
        return ""
    return period_start(period, day).isoformat()


def day_ranges(days: list[str]) -> str:
    """ISO days as runs of consecutive days: ``2011-11-01 .. 2011-11-04, 2011-11-09`` (sorted)."""
    runs: list[list[dt.date]] = []
    for day in sorted({dt.date.fromisoformat(d) for d in days}):
        if runs and day - runs[-1][-1] == dt.timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(r[0].isoformat() if len(r) == 1 else f"{r[0].isoformat()} .. {r[-1].isoformat()}" for r in runs)


def period_column(period: str) -> str:
    return check_period(period)


def mart_table(period: str) -> str:
    """The rollup's table: ``monthly_sales_by_country`` or ``weekly_sales_by_country``."""
    return f"{check_period(period)}ly_sales_by_country"
