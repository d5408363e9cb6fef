"""The retail pipeline's contracts: the landing files (one file of invoice lines per trading day)
and the country reference the pipeline ships (see README.md here).

``CustomerID`` is written as a float (``17850.0``) and read as an integer; ``UnitPrice`` is a
decimal with up to 3 places and never negative (the two bad-debt adjustment lines of
2011-08-12 with a price of -11062.06 are rejected for it); every line's ``InvoiceDate`` must
fall on the run's day (the partition). Exact duplicate lines are real lines and are kept.

The schemas of the tables the pipeline publishes are declared here too (:data:`TABLE_SCHEMAS`),
as Arrow types written as text: a day without trading publishes an empty partition of every
table with exactly these columns; the engines write text as Arrow ``string`` on both engines, and
the rollup reads a period's partitions with these types (``Engine.read_parquets``), so a month of
partitions always reads as one table (``tests/e2e/test_retail_month.py`` checks every file).
"""

from __future__ import annotations

from pathlib import Path

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

# The country reference shipped with the pipeline: the data set's 38 country names (as the
# retailer writes them: EIRE, RSA, USA, ...) with an ISO 3166-1 alpha-2 code (none for the
# Channel Islands, which have two, and for "Unspecified"; EU is ISO's reserved code for the
# European Union) and a region. Only "" is null here: "NA" would be Namibia.
COUNTRIES = Dataset(
    "countries",
    (
        Column("country", required=True),
        Column("iso_code"),
        Column("region", required=True),
    ),
    format=FileFormat(encoding="utf-8", null_values=("",)),
    key=("country",),
    reference=True,
    description="country name as written in the landing files -> ISO code and region",
)
COUNTRIES_FILE = Path(__file__).with_name("countries.csv")

# Inputs read by ingest (the landing file of the day); the reference is read by enrich.
DATASETS = {INVOICE_LINES.name: INVOICE_LINES}
# The landing directory, relative to the pipeline's data root (ETL_DATA_DIR_RETAIL, else ETL_DATA_DIR):
# one file per day, {landing_dir}/{ds}.csv.
LANDING_DIR = "retail/by-day"

LINE_KINDS = ("sale", "cancellation", "adjustment", "other")

# Every published table: name -> ((column, Arrow type), ...). ``_rejects/invoice_lines`` is the
# platform's reject table (include.etl.reader.REJECT_COLUMNS).
_LINES = (
    ("InvoiceNo", "string"), ("StockCode", "string"), ("Description", "string"), ("Quantity", "int64"),
    ("InvoiceDate", "timestamp[us]"), ("UnitPrice", "decimal128(12, 3)"), ("CustomerID", "int64"),
    ("Country", "string"),
)
TABLE_SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "invoice_lines": _LINES,
    "_rejects/invoice_lines": (("_source", "string"), ("_line", "int64"), ("_raw", "string"), ("_reason", "string")),
    "enriched_lines": _LINES + (("line_total", "double"), ("line_kind", "string"), ("iso_code", "string"),
                                ("region", "string")),
    "sales_by_country": (("country", "string"), ("invoices", "int64"), ("customers", "int64"), ("units", "int64"),
                         ("revenue", "double"), ("cancelled_lines", "int64"), ("cancelled_value", "double")),
    "sales_by_product": (("stock_code", "string"), ("units", "int64"), ("revenue", "double"), ("invoices", "int64")),
}
DAILY_TABLES = tuple(TABLE_SCHEMAS)
DAILY_MARTS = ("sales_by_country", "sales_by_product")
