"""The NZ trade marts' quality checks, run on the staged marts before they are published.

A failed check blocks publishing (the platform's quality gate,
:func:`include.etl.jobs.steps.publish_checked`, raises
:class:`~include.etl.errors.QualityCheckFailed`): the previous partitions stay readable and
unchanged. The marts are small (a few thousand rows), so the checks run on pandas frames and
are the same whichever engine computed them.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.pipelines.nz_trade.transforms import KEYS, MONTHLY_COLUMNS, YEARLY_COLUMNS

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Source:
    """What the marts were computed from: ``enriched``'s row count and its first and last ``Date``."""

    rows: int
    first: dt.date | None
    last: dt.date | None


def _as_date(value) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value  # pandas gives Timestamps or dates


def _keys(name: str, frame: pd.DataFrame, keys: tuple[str, ...]) -> list[str]:
    problems = []
    nulls = {k: int(frame[k].isna().sum()) for k in keys if frame[k].isna().any()}
    if nulls:
        problems.append(f"{name}: null keys {nulls}")
    dups = int(frame.duplicated(subset=list(keys)).sum())
    if dups:
        problems.append(f"{name}: {dups} duplicated keys {keys}")
    return problems


def check_monthly(monthly: pd.DataFrame, source: Source) -> list[str]:
    """``monthly_trade``: keys unique, values >= 0, 1 <= days <= days in the month, months within
    the input's dates, and every row of ``enriched`` counted once (sum of ``days`` = its rows)."""
    problems = []
    missing = [c for c in MONTHLY_COLUMNS if c not in monthly.columns]
    if missing:
        return [f"monthly_trade: missing columns {missing}"]
    if monthly.empty:
        problems.append(f"monthly_trade: no rows (enriched has {source.rows})")
    problems += _keys("monthly_trade", monthly, (*KEYS, "month"))
    negative = int((monthly["value"] < 0).sum())
    if negative:
        problems.append(f"monthly_trade: {negative} negative values")
    months = [_as_date(m) for m in monthly["month"]]
    capacity = [calendar.monthrange(m.year, m.month)[1] for m in months]
    bad_days = int(((monthly["days"] < 1) | (monthly["days"] > capacity)).sum())
    if bad_days:
        problems.append(f"monthly_trade: {bad_days} rows with days outside [1, days in the month]")
    not_first = sum(m.day != 1 for m in months)
    if not_first:
        problems.append(f"monthly_trade: {not_first} months that are not the first day of a month")
    if source.first is not None and months:
        lo, hi = source.first.replace(day=1), source.last
        outside = [m for m in months if not lo <= m <= hi]
        if outside:
            problems.append(f"monthly_trade: {len(outside)} months outside the input's dates "
                            f"{source.first}..{source.last}, e.g. {min(outside)}")
    counted = int(monthly["days"].sum())
    if counted != source.rows:
        problems.append(f"monthly_trade: counts {counted} rows, enriched has {source.rows}")
    return problems


def check_yearly(yearly: pd.DataFrame, monthly: pd.DataFrame, source: Source) -> list[str]:
    """``yearly_change``: keys unique, values >= 0, years within the input's dates, each year's
    value = the sum of its months in ``monthly_trade``, and ``change_pct`` null exactly when
    ``previous_value`` is null or 0."""
    problems = []
    missing = [c for c in YEARLY_COLUMNS if c not in yearly.columns]
    if missing:
        return [f"yearly_change: missing columns {missing}"]
    if yearly.empty:
        problems.append("yearly_change: no rows")
    problems += _keys("yearly_change", yearly, (*KEYS, "year"))
    for column in ("value", "previous_value"):
        negative = int((yearly[column].dropna() < 0).sum())
        if negative:
            problems.append(f"yearly_change: {negative} negative {column}")
    if source.first is not None:
        outside = yearly[(yearly["year"] < source.first.year) | (yearly["year"] > source.last.year)]
        if len(outside):
            problems.append(f"yearly_change: {len(outside)} years outside {source.first.year}..{source.last.year}")
    if not monthly.empty and not yearly.empty:
        by_year = monthly.assign(year=[_as_date(m).year for m in monthly["month"]])
        sums = by_year.groupby([*KEYS, "year"])["value"].sum()
        mine = yearly.set_index([*KEYS, "year"])["value"]
        differ = int((sums.reindex(mine.index) != mine).sum()) + len(sums.index.difference(mine.index))
        if differ:
            problems.append(f"yearly_change: {differ} years whose value is not the sum of their months")
    expect_null = yearly["previous_value"].isna() | (yearly["previous_value"] == 0)
    wrong = int((expect_null != yearly["change_pct"].isna()).sum())
    if wrong:
        problems.append(f"yearly_change: {wrong} rows where change_pct is null but previous_value is not null or 0, "
                        "or the reverse")
    return problems


def check_marts(tables: Mapping[str, pd.DataFrame], source: Source) -> list[str]:
    """Every problem found in the two staged marts (empty list: publishable)."""
    monthly, yearly = tables["monthly_trade"], tables["yearly_change"]
    problems = check_monthly(monthly, source)
    if not any(p.startswith("monthly_trade: missing columns") for p in problems):
        problems += check_yearly(yearly, monthly, source)
    return problems
