"""The NZ trade narwhals transformations and quality checks on tiny pandas frames (no cluster).

The frames use Arrow-backed dtypes, as the ingested Parquet tables do when an engine reads them.
"""

from __future__ import annotations

import datetime as dt
import math

import narwhals as nw
import pandas as pd
import pyarrow as pa
import pytest

from include.pipelines.nz_trade.quality import Source, check_marts
from include.pipelines.nz_trade.transforms import (
    ENRICHED_EXTRA,
    MONTHLY_COLUMNS,
    YEARLY_COLUMNS,
    enrich_trade,
    monthly_trade,
    yearly_change,
)

D = dt.date
CHINA_MEAT = ("Exports", "$", "China", "Meat and edible offal", "All")
TOTAL = ("Exports", "$", "All", "All", "All")


def lazy(df: pd.DataFrame) -> nw.LazyFrame:
    return nw.from_native(df).lazy()


def trade_frame(rows: list[tuple]) -> pd.DataFrame:
    """Typed ``trade`` rows from (series, date, value) as ingest writes them (Arrow dtypes)."""
    records = [
        {"Direction": s[0], "Year": d.year, "Date": d, "Weekday": d.strftime("%A"), "Country": s[2],
         "Commodity": s[3], "Transport_Mode": s[4], "Measure": s[1], "Value": v, "Cumulative": v}
        for s, d, v in rows
    ]
    types = {"Year": pa.int64(), "Date": pa.date32(), "Value": pa.int64(), "Cumulative": pa.int64()}
    frame = pd.DataFrame.from_records(records)
    return frame.astype({c: pd.ArrowDtype(types.get(c, pa.string())) for c in frame.columns})


@pytest.fixture
def trade() -> pd.DataFrame:
    return trade_frame([
        (TOTAL, D(2019, 12, 31), 70),
        (TOTAL, D(2020, 1, 1), 100),
        (TOTAL, D(2020, 1, 31), 20),
        (TOTAL, D(2020, 2, 29), 5),
        (TOTAL, D(2021, 1, 4), 0),
        (CHINA_MEAT, D(2020, 1, 15), 7),
        (CHINA_MEAT, D(2021, 3, 1), 0),  # a previous year with value 0 in 2022
        (CHINA_MEAT, D(2022, 3, 1), 9),
        (("Imports", "Tonnes", "All", "All", "Sea"), D(2021, 6, 30), 3),
    ])


def native(frame: nw.LazyFrame) -> pd.DataFrame:
    return frame.collect().to_native()


def marts(trade: pd.DataFrame) -> dict[str, pd.DataFrame]:
    enriched = enrich_trade(lazy(trade))
    return {"monthly_trade": native(monthly_trade(enriched)), "yearly_change": native(yearly_change(enriched))}


def source_of(trade: pd.DataFrame) -> Source:
    return Source(rows=len(trade), first=min(trade["Date"]), last=max(trade["Date"]))


def test_enrich_keeps_every_row_and_adds_month_total_and_breakdown(trade):
    out = native(enrich_trade(lazy(trade)))
    assert list(out.columns) == [*trade.columns, *ENRICHED_EXTRA]
    assert len(out) == len(trade)
    assert out["month"].tolist() == [D(2019, 12, 1), D(2020, 1, 1), D(2020, 1, 1), D(2020, 2, 1), D(2021, 1, 1),
                                     D(2020, 1, 1), D(2021, 3, 1), D(2022, 3, 1), D(2021, 6, 1)]
    assert out["is_total"].tolist() == [True] * 5 + [False] * 4
    assert out["breakdown"].tolist() == ["total"] * 5 + ["country_commodity"] * 3 + ["transport_mode"]
    other = trade_frame([(("Exports", "$", "China", "All", "All"), D(2020, 1, 1), 1),
                         (("Exports", "$", "All", "Fruit", "All"), D(2020, 1, 1), 1)])
    assert native(enrich_trade(lazy(other)))["breakdown"].tolist() == ["country", "commodity"]


def test_monthly_trade_sums_values_and_counts_rows_per_series_and_month(trade):
    out = marts(trade)["monthly_trade"]
    assert tuple(out.columns) == MONTHLY_COLUMNS
    rows = {tuple(r[:6]): (r[6], r[7]) for r in out.itertuples(index=False)}
    assert rows == {
        (*TOTAL, D(2019, 12, 1)): (70, 1),
        (*TOTAL, D(2020, 1, 1)): (120, 2),
        (*TOTAL, D(2020, 2, 1)): (5, 1),
        (*TOTAL, D(2021, 1, 1)): (0, 1),
        (*CHINA_MEAT, D(2020, 1, 1)): (7, 1),
        (*CHINA_MEAT, D(2021, 3, 1)): (0, 1),
        (*CHINA_MEAT, D(2022, 3, 1)): (9, 1),
        ("Imports", "Tonnes", "All", "All", "Sea", D(2021, 6, 1)): (3, 1),
    }


def test_yearly_change_against_the_previous_calendar_year(trade):
    out = marts(trade)["yearly_change"]
    assert tuple(out.columns) == YEARLY_COLUMNS

    def na(x):
        return None if pd.isna(x) else x

    rows = {tuple(r[:6]): (r[6], na(r[7]), na(r[8])) for r in out.itertuples(index=False)}
    assert rows.keys() == {(*TOTAL, 2019), (*TOTAL, 2020), (*TOTAL, 2021), (*CHINA_MEAT, 2020), (*CHINA_MEAT, 2021),
                           (*CHINA_MEAT, 2022), ("Imports", "Tonnes", "All", "All", "Sea", 2021)}
    assert rows[(*TOTAL, 2019)] == (70, None, None)  # no previous year
    value, previous, pct = rows[(*TOTAL, 2020)]
    assert (value, previous) == (125, 70) and math.isclose(pct, 100 * (125 - 70) / 70)
    assert rows[(*TOTAL, 2021)] == (0, 125, -100.0)
    assert rows[(*CHINA_MEAT, 2021)] == (0, 7, -100.0)
    assert rows[(*CHINA_MEAT, 2022)] == (9, 0, None)  # previous value 0: no percentage
    assert rows[("Imports", "Tonnes", "All", "All", "Sea", 2021)] == (3, None, None)


def test_a_gap_year_has_no_previous_value():
    out = marts(trade_frame([(TOTAL, D(2018, 5, 1), 10), (TOTAL, D(2020, 5, 1), 30)]))["yearly_change"]
    assert sorted(out["year"]) == [2018, 2020]
    assert out["previous_value"].isna().all() and out["change_pct"].isna().all()


def test_checks_pass_on_correct_marts(trade):
    assert check_marts(marts(trade), source_of(trade)) == []


def _staged(trade: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The marts as the quality gate sees them: read back from Parquet by pandas (NumPy dtypes)."""
    import io

    out = {}
    for name, frame in marts(trade).items():
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        out[name] = pd.read_parquet(io.BytesIO(buf.getvalue()))
    return out


def test_checks_pass_on_marts_read_back_from_parquet(trade):
    assert check_marts(_staged(trade), source_of(trade)) == []


@pytest.mark.parametrize(
    ("table", "change", "problem"),
    [
        ("monthly_trade", lambda m: m.assign(value=m["value"].where(m.index != 0, -1)), "monthly_trade: 1 negative values"),
        ("monthly_trade", lambda m: m.assign(days=m["days"].where(m.index != 0, 0)),
         "monthly_trade: 1 rows with days outside [1, days in the month]"),
        ("monthly_trade", lambda m: m.assign(days=m["days"].where(m.index != 0, 32)),
         "monthly_trade: 1 rows with days outside [1, days in the month]"),
        ("monthly_trade", lambda m: pd.concat([m, m.iloc[:1]]), "monthly_trade: 1 duplicated keys"),
        ("monthly_trade", lambda m: m.assign(month=m["month"].where(m.index != 0, D(2030, 1, 1))),
         "monthly_trade: 1 months outside the input's dates 2019-12-31..2022-03-01, e.g. 2030-01-01"),
        ("monthly_trade", lambda m: m.assign(month=m["month"].where(m.index != 0, D(2020, 1, 2))),
         "monthly_trade: 1 months that are not the first day of a month"),
        ("monthly_trade", lambda m: m.iloc[1:], "monthly_trade: counts"),
        ("monthly_trade", lambda m: m.iloc[:0], "monthly_trade: no rows"),
        ("monthly_trade", lambda m: m.drop(columns="days"), "monthly_trade: missing columns ['days']"),
        ("yearly_change", lambda y: y.assign(value=y["value"] + 1), "years whose value is not the sum of their months"),
        ("yearly_change", lambda y: pd.concat([y, y.iloc[:1]]), "yearly_change: 1 duplicated keys"),
        ("yearly_change", lambda y: y.assign(change_pct=0.0), "rows where change_pct is null but previous_value"),
        ("yearly_change", lambda y: y.assign(year=y["year"] + 10), "years outside 2019..2022"),
        ("yearly_change", lambda y: y.assign(country=None), "yearly_change: null keys {'country': 7}"),
    ],
)
def test_checks_find_each_problem(trade, table, change, problem):
    tables = _staged(trade)
    tables[table] = change(tables[table].reset_index(drop=True))
    problems = check_marts(tables, source_of(trade))
    assert any(problem in p for p in problems), problems
