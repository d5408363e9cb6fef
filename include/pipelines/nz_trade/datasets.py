"""The NZ trade input's contract: Stats NZ "Effects of COVID-19 on trade" (see README.md here).

Each row is one day of one series (``Direction, Country, Commodity, Transport_Mode, Measure``);
``Year`` and ``Weekday`` repeat what ``Date`` says, so rows where they disagree are rejected
with the rule they break. Columns a later release adds are left out of the table (and named
in the ingest's log and summary).
"""

from __future__ import annotations

from include.etl.contract import Column, Dataset, FileFormat, weekday_of, year_of

DIRECTIONS = ("Exports", "Imports", "Reimports")
MEASURES = ("$", "Tonnes")

TRADE = Dataset(
    "trade",
    (
        Column("Direction", required=True, allowed=DIRECTIONS),
        Column("Year", "integer", required=True),
        Column("Date", "date", required=True, format="%d/%m/%Y"),
        Column("Weekday", required=True),
        Column("Country", required=True),
        Column("Commodity", required=True),
        Column("Transport_Mode", required=True),
        Column("Measure", required=True, allowed=MEASURES),
        Column("Value", "integer", required=True, range=(0, None)),
        Column("Cumulative", "integer"),
    ),
    format=FileFormat(encoding="utf-8", null_values=("",)),
    rules=(year_of("Year", "Date"), weekday_of("Weekday", "Date")),
    description="one row per day and series; totals ('All') and breakdowns side by side",
)

DATASETS = {TRADE.name: TRADE}
# Default input, relative to ETL_DATA_DIR.
INPUTS = {"trade": "nz_trade/effects-of-covid-19-on-trade-at-15-december-2021-provisional.csv"}
