"""Landing zones: one input file per day, a deadline for it, and the empty partitions of a day without one.

A pipeline that receives one file per day (``{landing_dir}/{ds}.csv``) waits for it until a
deadline after the day ends (:func:`deadline_for`). A day whose deadline passed without a file
is a day without data: the pipeline still publishes a partition of each of its tables for that
day, empty but with the tables' columns (:func:`publish_empty`), so that readers of a period
(a month of partitions) find every day and read one schema.

Nothing here imports pandas, Dask or PySpark; pyarrow only inside :func:`publish_empty`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from include.etl import lake as lakelib

log = logging.getLogger(__name__)

# ((column, Arrow type as text), ...): "string", "int64", "double", "bool", "date32",
# "timestamp[us]", "decimal128(12, 3)".
ColumnTypes = Sequence[tuple[str, str]]


def landing_file(landing_dir: str | Path, ds: str, pattern: str = "{ds}.csv") -> str:
    """The day's file in a landing directory (``{landing_dir}/{ds}.csv`` by default)."""
    lakelib.check_ds(ds)
    return str(Path(landing_dir) / pattern.format(ds=ds))


def deadline_for(ds: str, hours_after_day: float, tz: dt.tzinfo = dt.UTC) -> dt.datetime:
    """When the file of day ``ds`` is given up on: the end of that day (in ``tz``) plus ``hours_after_day``."""
    lakelib.check_ds(ds)
    if hours_after_day < 0:
        raise ValueError(f"the deadline must not be before the end of the day: {hours_after_day} h")
    day = dt.date.fromisoformat(ds)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return end + dt.timedelta(hours=hours_after_day)


def arrow_type(text: str) -> Any:
    """An Arrow type from its text form (``"decimal128(12, 3)"``, ``"timestamp[us]"``, ``"int64"``)."""
    import pyarrow as pa

    text = text.strip()
    if m := re.fullmatch(r"decimal128\((\d+),\s*(\d+)\)", text):
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    if m := re.fullmatch(r"timestamp\[(s|ms|us|ns)\]", text):
        return pa.timestamp(m.group(1))
    simple = {"string": pa.string(), "large_string": pa.large_string(), "int64": pa.int64(), "int32": pa.int32(),
              "double": pa.float64(), "float64": pa.float64(), "bool": pa.bool_(), "date32": pa.date32()}
    try:
        return simple[text]
    except KeyError:
        raise ValueError(f"unknown Arrow type {text!r}; use one of {', '.join(simple)}, decimal128(p, s), "
                         "timestamp[unit]") from None


def schema(columns: ColumnTypes) -> Any:
    import pyarrow as pa

    return pa.schema([pa.field(name, arrow_type(kind)) for name, kind in columns])


def publish_empty(lake: lakelib.Lake, ds: str, tables: Mapping[str, ColumnTypes]) -> dict[str, str]:
    """Publish an empty partition (one Parquet file of zero rows with the table's columns) of
    every table in ``tables`` for ``ds``, replacing what was there; returns ``{table: uri}``.

    Each table's commit records ``empty_day``: readers tell "no data that day" (an empty
    partition) from "not processed yet" (no partition).
    """
    for table, columns in tables.items():
        lake.commit(table, ds, None, schema=schema(columns), metadata={"empty_day": "true"})
    log.info("published empty partitions ds=%s of %s", ds, ", ".join(tables))
    return {table: lake.table_uri(table) for table in tables}
