"""The rollup periods: a calendar month (the production rollup) or an ISO week (Monday to Sunday).

Pure Python (the DAG factory uses it at parse time). The period's partition in the lake is
``ds=<first day>``; its label in the mart is ``2011-01`` for a month, ``2011-01-03`` (the
Monday) for a week.
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


def period_column(period: str) -> str:
    return check_period(period)


def mart_table(period: str) -> str:
    """The rollup's table: ``monthly_sales_by_country`` or ``weekly_sales_by_country``."""
    return f"{check_period(period)}ly_sales_by_country"
