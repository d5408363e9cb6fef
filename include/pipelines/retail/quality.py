"""The retail marts' quality checks, run on the staged marts before they are published.

A failed check blocks publishing (:func:`include.etl.jobs.steps.publish_checked` raises
:class:`~include.etl.errors.QualityCheckFailed`, a data error: never retried); the previous
partitions stay readable and unchanged. The checks work on the small, already computed marts
(pandas frames), the same whichever engine computed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _milli(values) -> int:
    """A sum of pounds as whole thousandths (the marts' money is exact to the thousandth)."""
    return int(round(float(values.sum()) * 1000))


def _keys(problems: list[str], name: str, frame: pd.DataFrame, keys: Iterable[str]) -> None:
    keys = list(keys)
    nulls = {k: int(frame[k].isna().sum()) for k in keys if frame[k].isna().any()}
    if nulls:
        problems.append(f"{name}: null keys {nulls}")
    dups = int(frame.duplicated(subset=keys).sum())
    if dups:
        problems.append(f"{name}: {dups} duplicated keys {tuple(keys)}")


def _not_negative(problems: list[str], name: str, frame: pd.DataFrame, columns: Iterable[str]) -> None:
    for column in columns:
        if (frame[column] < 0).any():
            problems.append(f"{name}: negative {column} ({int((frame[column] < 0).sum())} rows)")


def check_daily_marts(marts: Mapping[str, pd.DataFrame], lines: int) -> list[str]:
    """Problems of a day's ``sales_by_country`` and ``sales_by_product`` (empty: publishable).

    ``lines``: the day's accepted invoice lines.
    """
    problems: list[str] = []
    country, product = marts["sales_by_country"], marts["sales_by_product"]
    if lines > 0 and country.empty:
        problems.append(f"sales_by_country has no rows for {lines} invoice lines")
    _keys(problems, "sales_by_country", country, ["country"])
    _keys(problems, "sales_by_product", product, ["stock_code"])
    _not_negative(problems, "sales_by_country", country, ("invoices", "customers", "units", "revenue", "cancelled_lines"))
    _not_negative(problems, "sales_by_product", product, ("units", "revenue", "invoices"))
    if int(country["units"].sum()) != int(product["units"].sum()):
        problems.append(f"units differ: {int(country['units'].sum())} by country, {int(product['units'].sum())} by product")
    if _milli(country["revenue"]) != _milli(product["revenue"]):
        problems.append(f"revenue differs: {country['revenue'].sum():.3f} by country, {product['revenue'].sum():.3f} by product")
    sold = country[country["units"] > 0]
    if (sold["invoices"] < 1).any():
        problems.append("sales_by_country: units sold without an invoice")
    if int(country["cancelled_lines"].sum()) > lines:
        problems.append(f"more cancelled lines ({int(country['cancelled_lines'].sum())}) than lines ({lines})")
    return problems


def check_period_mart(name: str, mart: pd.DataFrame, daily: pd.DataFrame) -> list[str]:
    """Problems of a period's mart against the period's daily ``sales_by_country`` partitions.

    ``daily``: the daily marts of the period's days, concatenated. Units and revenue are sums,
    so per country they must equal the sums of the daily rows; distinct counts over the period
    lie between the largest daily count and the sum of the daily counts.
    """
    problems: list[str] = []
    _keys(problems, name, mart, ["country"])
    _not_negative(problems, name, mart, ("invoices", "customers", "units", "revenue"))
    by_country = mart.set_index("country")
    sums = daily.groupby("country")[["units", "invoices", "customers"]].sum() if len(daily) else None
    peaks = daily.groupby("country")[["invoices", "customers"]].max() if len(daily) else None
    if set(by_country.index) != set(daily["country"]):
        problems.append(f"{name}: countries {sorted(set(by_country.index) ^ set(daily['country']))} are in only one of "
                        "the period mart and its daily marts")
        return problems
    for country, row in by_country.iterrows():
        day_rows = daily[daily["country"] == country]
        if int(row["units"]) != int(sums.loc[country, "units"]):
            problems.append(f"{name}: {country} units {int(row['units'])} != {int(sums.loc[country, 'units'])} over its days")
        if _milli(row[["revenue"]]) != _milli(day_rows["revenue"]):
            problems.append(f"{name}: {country} revenue {row['revenue']:.3f} != {day_rows['revenue'].sum():.3f} over its days")
        for column in ("invoices", "customers"):
            low, high = int(peaks.loc[country, column]), int(sums.loc[country, column])
            if not low <= int(row[column]) <= high:
                problems.append(f"{name}: {country} {column} {int(row[column])} outside [{low}, {high}] of its days")
    return problems


def unknown_countries(countries: Iterable[str], reference: Iterable[str]) -> list[str]:
    """Countries of the data missing from the shipped reference (they get no ISO code or region)."""
    known = set(reference)
    return sorted({c for c in countries if c not in known})
