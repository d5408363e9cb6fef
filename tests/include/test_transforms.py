"""The Olympics narwhals transformations on tiny pandas frames (include/pipelines/olympics/transforms.py)."""

from __future__ import annotations

import math

import narwhals as nw
import pandas as pd
import pytest

from include.pipelines.olympics.transforms import (
    AVG_AGE_COLUMNS,
    MEDALS_COLUMNS,
    avg_age_by_year,
    enrich_athletes,
    medals_by_region,
)


def lazy(df: pd.DataFrame) -> nw.LazyFrame:
    return nw.from_native(df).lazy()


@pytest.fixture
def frames():
    athletes = pd.DataFrame(
        {
            "ID": pd.array([1, 2, 3, 4, 5, 6], dtype="Int64"),
            "Age": pd.array([20, None, 31, None, None, 40], dtype="Int64"),
            "NOC": ["CHN", "CHN", "SGP", "ROT", "CHN", "CHN"],
            "Year": pd.array([2000, 2000, 2000, 1896, 1896, 2000], dtype="Int64"),
            "Season": ["Summer", "Summer", "Summer", "Summer", "Summer", "Winter"],
            "City": ["Sydney", "Sydney", "Sydney", "Athina", "Athina", "Nowhere"],
            "Medal": ["Gold", None, "Silver", "Bronze", "Gold", None],
        }
    )
    regions = pd.DataFrame({"NOC": ["CHN", "ROT"], "region": ["China", None], "notes": [None, "Refugee Olympic Team"]})
    venues = pd.DataFrame(
        {"Year": pd.array([2000, 1896], dtype="Int64"), "Season": ["Summer", "Summer"], "City": ["Sydney", "Athina"],
         "lon": [151.2, 23.7], "lat": [-33.9, 37.9]}
    )
    return athletes, regions, venues


def test_enrich_keeps_every_row_and_adds_region_and_location(frames):
    out = enrich_athletes(*map(lazy, frames)).collect().to_native().sort_values("ID").reset_index(drop=True)
    assert out["ID"].tolist() == [1, 2, 3, 4, 5, 6]
    assert out.loc[0, "region"] == "China" and out.loc[0, "lon"] == 151.2
    assert pd.isna(out.loc[2, "region"])  # SGP is not in the regions table
    assert pd.isna(out.loc[3, "region"])  # ROT's region is NA
    assert pd.isna(out.loc[5, "lon"])  # no venue row for this Games


def test_avg_age_mean_over_present_ages_and_null_when_none(frames):
    enriched = enrich_athletes(*map(lazy, frames))
    out = avg_age_by_year(enriched).collect().to_native()
    assert tuple(out.columns) == AVG_AGE_COLUMNS
    rows = {(r.year, r.season): (r.avg_age, r.n) for r in out.itertuples()}
    assert rows[(2000, "Summer")] == (25.5, 2)
    assert rows[(2000, "Winter")] == (40.0, 1)
    avg, n = rows[(1896, "Summer")]  # a Games without any ages
    assert n == 0 and (avg is None or avg is pd.NA or (isinstance(avg, float) and math.isnan(avg)))
    assert len(rows) == 3


def test_medals_by_region_falls_back_to_noc(frames):
    out = medals_by_region(enrich_athletes(*map(lazy, frames))).collect().to_native()
    assert tuple(out.columns) == MEDALS_COLUMNS
    got = {(r.year, r.season, r.region): (r.gold, r.silver, r.bronze, r.total) for r in out.itertuples()}
    assert got == {
        (2000, "Summer", "China"): (1, 0, 0, 1),
        (2000, "Summer", "SGP"): (0, 1, 0, 1),  # NOC absent from regions
        (1896, "Summer", "ROT"): (0, 0, 1, 1),  # region NA
        (1896, "Summer", "China"): (1, 0, 0, 1),
    }
