"""The retail landing files' contract: one file of invoice lines per trading day (see README.md here).

``CustomerID`` is written as a float (``17850.0``) and read as an integer; ``UnitPrice`` is a
decimal with up to 3 places and never negative (the two bad-debt adjustment lines of
2011-08-12 with a price of -11062.06 are rejected for it); every line's ``InvoiceDate`` must
fall on the run's day (the partition). Exact duplicate lines are real lines and are kept.
"""

from __future__ import annotations

from include.etl.contract import Column, Dataset, FileFormat, on_partition_day

INVOICE_LINES = Dataset(
    "invoice_lines",
    (
        Column("InvoiceNo", required=True),
        Column("StockCode", required=True),
        Column("Description"),
        Column("Quantity", "integer", required=True),
        Column("InvoiceDate", "timestamp", required=True, format="%Y-%m-%d %H:%M:%S"),
        Column("UnitPrice", "decimal", required=True, precision=12, scale=3, range=(0, None)),
        Column("CustomerID", "integer", whole_float=True),
        Column("Country", required=True),
    ),
    format=FileFormat(encoding="utf-8", null_values=("",)),
    rules=(on_partition_day("InvoiceDate"),),
    description="the invoice lines of one trading day",
)

DATASETS = {INVOICE_LINES.name: INVOICE_LINES}
# The landing directory, relative to ETL_DATA_DIR: one file per day, {landing_dir}/{ds}.csv.
LANDING_DIR = "retail/by-day"
