"""Quality checks on tiny marts (include/pipelines/olympics/quality.py) and the platform's gate."""

from __future__ import annotations

import pandas as pd
import pytest

from include.etl.errors import DataError, QualityCheckFailed
from include.etl.quality import gate
from include.pipelines.olympics.quality import check_marts


def marts(avg_rows, medal_rows):
    avg = pd.DataFrame(avg_rows, columns=["year", "season", "avg_age", "n"])
    medals = pd.DataFrame(medal_rows, columns=["year", "season", "region", "gold", "silver", "bronze", "total"])
    return avg, medals


def test_good_marts_pass():
    avg, medals = marts([(2000, "Summer", 25.5, 2), (1896, "Summer", None, 0)], [(2000, "Summer", "China", 1, 0, 0, 1)])
    assert check_marts(avg, medals, enriched_rows=5) == []


def test_each_problem_is_reported():
    avg, medals = marts(
        [(2000, "Summer", 250.0, 2), (None, "Summer", 20.0, 1), (2000, "Summer", 30.0, -1)],
        [(2000, "Summer", None, 5, 0, 0, 4), (2000, "Winter", "X", -1, 0, 0, -1)],
    )
    problems = " | ".join(check_marts(avg, medals, enriched_rows=2))
    assert "avg_age_by_year: null keys {'year': 1}" in problems
    assert "avg_age_by_year: 1 duplicated keys" in problems
    assert "1 averages outside the plausible [10, 70], e.g. 2000.0 Summer: 250.00" in problems
    assert "avg_age_by_year: negative n" in problems
    assert "medals_by_region: null keys {'region': 1}" in problems
    assert "medals_by_region: negative counts" in problems
    assert "gold + silver + bronze != total" in problems
    assert "3 medals counted but enriched has only 2 rows" in problems


def test_no_rows_at_all():
    avg, medals = marts([], [])
    assert check_marts(avg, medals, enriched_rows=0) == ["no rows: enriched has 0 rows, avg_age_by_year has 0"]


def test_gate_raises_a_data_error_listing_every_problem():
    gate([], ds="2024-07-07")  # nothing found: publishable
    with pytest.raises(QualityCheckFailed, match=r"quality checks failed for ds=2024-07-07, nothing published "
                                                 r"\(the previous marts stay\): a; b"):
        gate(["a", "b"], ds="2024-07-07")
    assert issubclass(QualityCheckFailed, DataError)
