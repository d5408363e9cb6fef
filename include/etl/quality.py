"""The quality gate: checks run on staged outputs before they are published.

A pipeline writes its check as a plain function over the staged tables (small pandas frames,
the same whichever engine computed them) returning the problems it found; the generic step
:func:`include.etl.jobs.steps.publish_checked` stages the tables, calls the check and publishes
only when it found nothing. A failed check raises :class:`~include.etl.errors.QualityCheckFailed`
(a data error: never retried) and leaves the previous partitions readable and unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from include.etl.errors import QualityCheckFailed

if TYPE_CHECKING:
    import pandas as pd

# A check: staged tables by name -> the problems found (empty: publishable).
Check = Callable[[Mapping[str, "pd.DataFrame"]], list[str]]

__all__ = ["Check", "QualityCheckFailed", "gate"]


def gate(problems: list[str], *, ds: str) -> None:
    """Raise :class:`QualityCheckFailed` listing ``problems``, if any, for the run's ``ds``."""
    if problems:
        raise QualityCheckFailed(
            f"quality checks failed for ds={ds}, nothing published (the previous marts stay): " + "; ".join(problems)
        )
