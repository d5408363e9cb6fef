"""The Olympics marts' quality checks, run on the staged marts before they are published.

A failed check blocks publishing (the platform's quality gate,
:func:`include.etl.jobs.steps.publish_checked`, raises
:class:`~include.etl.errors.QualityCheckFailed`): the previous partitions stay readable and
unchanged. The checks work on the small, already computed marts (pandas frames), so they cost
nothing next to the jobs and are the same whichever engine computed the marts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from include.etl.errors import QualityCheckFailed

if TYPE_CHECKING:
    import pandas as pd

# Mean age of a Games' athletes outside this range means a units or parsing problem.
PLAUSIBLE_AVG_AGE = (10.0, 70.0)

__all__ = ["PLAUSIBLE_AVG_AGE", "QualityCheckFailed", "check_marts"]


def check_marts(avg_age: pd.DataFrame, medals: pd.DataFrame, enriched_rows: int) -> list[str]:
    """Every problem found in the two marts (empty list: publishable)."""
    problems: list[str] = []
    if enriched_rows == 0 or avg_age.empty:
        problems.append(f"no rows: enriched has {enriched_rows} rows, avg_age_by_year has {len(avg_age)}")
    for name, frame, keys in (
        ("avg_age_by_year", avg_age, ("year", "season")),
        ("medals_by_region", medals, ("year", "season", "region")),
    ):
        nulls = {k: int(frame[k].isna().sum()) for k in keys if frame[k].isna().any()}
        if nulls:
            problems.append(f"{name}: null keys {nulls}")
        dups = int(frame.duplicated(subset=list(keys)).sum())
        if dups:
            problems.append(f"{name}: {dups} duplicated keys {keys}")
    lo, hi = PLAUSIBLE_AVG_AGE
    present = avg_age["avg_age"].dropna()
    implausible = avg_age.loc[present.index[(present < lo) | (present > hi)]]
    if len(implausible):
        first = implausible.iloc[0]
        problems.append(
            f"avg_age_by_year: {len(implausible)} averages outside the plausible [{lo:g}, {hi:g}], "
            f"e.g. {first['year']} {first['season']}: {first['avg_age']:.2f}"
        )
    if (avg_age["n"] < 0).any():
        problems.append("avg_age_by_year: negative n")
    counts = medals[["gold", "silver", "bronze", "total"]]
    if (counts < 0).any().any():
        problems.append("medals_by_region: negative counts")
    if (counts["gold"] + counts["silver"] + counts["bronze"] != counts["total"]).any():
        problems.append("medals_by_region: gold + silver + bronze != total")
    medal_rows = int(counts["total"].sum())
    if medal_rows > enriched_rows:
        problems.append(f"medals_by_region: {medal_rows} medals counted but enriched has only {enriched_rows} rows")
    return problems
