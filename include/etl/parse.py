"""Row-level parsing and validation of raw CSV fields: the ingest logic shared by all engines.

:func:`parse_frame` takes a pandas frame of raw strings (one partition, as an engine read it)
and returns the typed columns plus the reject bookkeeping columns. Engines apply it per
partition (``map_partitions`` on Dask, ``mapInPandas`` on Spark), so both engines accept and
reject exactly the same rows. No row is dropped: a row that cannot be used gets a reason.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from include.etl.schemas import NA_TOKENS, REJECT_COLUMNS, Column, TableSchema

if TYPE_CHECKING:
    import pandas as pd

# Strings are Arrow-backed: stripping and comparing them runs in Arrow's compute kernels, not
# once per value in Python (that was most of the ingest time, see docs/benchmarks/).
PANDAS_DTYPES = {"int": "Int64", "float": "Float64", "str": "string[pyarrow]"}


def _raw_lines(raw: pd.DataFrame, names: tuple[str, ...]) -> list[str]:
    """Re-serialise raw rows as CSV text, for the rejects dataset."""
    out = []
    for values in raw[list(names)].astype(object).where(raw[list(names)].notna(), None).itertuples(index=False, name=None):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(["" if v is None else v for v in values])
        out.append(buf.getvalue())
    return out


def _typed(col: Column, values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Convert one column; return (typed values, reason per row or None)."""
    import pandas as pd

    missing = values.isna() | values.str.strip().isin(NA_TOKENS)
    reason = pd.Series(None, index=values.index, dtype="object")
    if col.required:
        reason = reason.mask(missing, f"missing required {col.name}")
    if col.type == "str":
        typed = values.mask(missing)
        if col.domain is not None:
            bad = ~missing & ~typed.isin(col.domain)
            reason = reason.mask(bad & reason.isna(), f"{col.name} not in {'/'.join(col.domain)}")
        return typed, reason

    stripped = values.mask(missing).str.strip()
    number = pd.to_numeric(stripped, errors="coerce")
    unparsable = ~missing & number.isna()
    reason = reason.mask(unparsable & reason.isna(), f"{col.name} is not a number")
    if col.type == "int":
        fractional = number.notna() & (number != number.round())
        reason = reason.mask(fractional & reason.isna(), f"{col.name} is not a whole number")
        number = number.mask(fractional)
    if col.range is not None:
        lo, hi = col.range
        outside = number.notna() & ((number < lo) | (number > hi))
        reason = reason.mask(outside & reason.isna(), f"{col.name} outside [{lo:g}, {hi:g}]")
    typed = number.astype(PANDAS_DTYPES[col.type])
    return typed, reason


def parse_frame(raw: pd.DataFrame, schema: TableSchema, source: str) -> pd.DataFrame:
    """Type and validate one partition of raw string fields.

    Returns the schema's columns (typed; nulls for ``NA``) followed by ``_source``, ``_line``
    (1-based line in the source file where the engine knows it, else null), ``_raw`` (the row
    as CSV text, rejected rows only) and ``_reason`` (null for accepted rows).
    """
    import pandas as pd

    missing_cols = [n for n in schema.names if n not in raw.columns]
    if missing_cols:
        raise ValueError(f"{source}: columns {missing_cols} missing from the parsed frame")
    out = pd.DataFrame(index=raw.index)
    reason = pd.Series(None, index=raw.index, dtype="object")
    if "_error" in raw.columns:  # the line could not be split into fields (see tokenize)
        reason = raw["_error"].astype("object").where(raw["_error"].notna(), None)
    for col in schema.columns:
        values = raw[col.name].astype("string[pyarrow]")
        out[col.name], col_reason = _typed(col, values)
        reason = reason.where(reason.notna(), col_reason)
    if schema.key and len(out):
        dup = out.duplicated(subset=list(schema.key), keep="first") & reason.isna()
        reason = reason.mask(dup, f"duplicate key ({', '.join(schema.key)})")
    rejected = reason.notna()
    out["_source"] = pd.Series(source, index=raw.index, dtype="string")
    line = raw["_line"] if "_line" in raw.columns else pd.Series(pd.NA, index=raw.index)
    out["_line"] = line.astype("Int64")
    out["_raw"] = pd.Series(pd.NA, index=raw.index, dtype="string")
    if rejected.any():
        out.loc[rejected, "_raw"] = _raw_lines(raw.loc[rejected], schema.names)
        if "_rawline" in raw.columns:  # the original line text, where the engine kept it
            original = raw["_rawline"].astype("string")
            out.loc[rejected & original.notna(), "_raw"] = original[rejected & original.notna()]
    out["_reason"] = reason.astype("string")
    return out


def empty_parsed(schema: TableSchema) -> pd.DataFrame:
    """An empty frame with exactly the columns and dtypes :func:`parse_frame` returns."""
    import pandas as pd

    cols = {c.name: pd.Series(dtype=PANDAS_DTYPES[c.type]) for c in schema.columns}
    cols.update({"_source": pd.Series(dtype="string"), "_line": pd.Series(dtype="Int64")})
    cols.update({"_raw": pd.Series(dtype="string"), "_reason": pd.Series(dtype="string")})
    assert tuple(cols)[-len(REJECT_COLUMNS):] == REJECT_COLUMNS
    return pd.DataFrame(cols)


class InputFileError(ValueError):
    """A whole input file is unusable (missing, empty, wrong header); the message names the file."""


def check_header(path: str, schema: TableSchema) -> list[str]:
    """Read the header line of ``path`` and check it has every column of ``schema``.

    Returns the header's column names. Raises :class:`InputFileError` naming the file and the
    problem: missing file, empty file, missing columns (listing those found), or a delimiter
    other than a comma.
    """
    import os

    if not os.path.exists(path):
        raise InputFileError(f"{schema.name} input {path}: file does not exist")
    if os.path.isdir(path):
        raise InputFileError(f"{schema.name} input {path}: is a directory, expected a CSV file")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        first = next(csv.reader(f), None)
    if not first or all(not c.strip() for c in first):
        raise InputFileError(f"{schema.name} input {path}: file is empty (no header line)")
    found = [c.strip().lstrip("\ufeff") for c in first]
    missing = [n for n in schema.names if n not in found]
    if missing:
        hint = ""
        if len(found) == 1:
            for sep in (";", "\t", "|"):
                if sep in found[0]:
                    hint = f"; the header looks {sep!r}-delimited, expected ','"
        raise InputFileError(
            f"{schema.name} input {path}: header is missing required columns {missing}; "
            f"found columns {found}{hint}"
        )
    return found


# ---------------------------------------------------------------------------------------
# Tokenizing: text lines -> raw string fields, the same way on every engine.
# Engines deliver the file's text (Dask: byte blocks split on newlines; Spark: text lines),
# decoded as UTF-8 with invalid bytes replaced by U+FFFD. Each physical line is one record:
# quoted fields may contain commas and doubled quotes but not newlines (the Olympics files
# have none), so an unterminated quote spoils only its own line, never the rest of the file.

INVALID_UTF8 = "\ufffd"


def _fast_tokenize(text: str, header: list[str], n_lines: int):
    """pandas' C parser over the whole text; None when any line needs the careful path."""
    import pandas as pd

    if INVALID_UTF8 in text:
        return None
    try:
        raw = pd.read_csv(
            io.StringIO(text), header=None, names=header, dtype=str, keep_default_na=False,
            na_filter=False, skip_blank_lines=False, quotechar='"', doublequote=True, engine="c",
        )
    except (ValueError, pd.errors.ParserError):  # too many fields, a bad quote ...
        return None
    if len(raw) != n_lines or raw.isna().to_numpy().any():  # a quote spanning lines, short rows
        return None
    return raw


def _careful_tokenize(lines: list[str], header: list[str]):
    """One line at a time with the csv module: every bad line gets a reason."""
    import pandas as pd

    rows, errors = [], []
    n = len(header)
    for line in lines:
        error = None
        fields: list[str] = []
        if INVALID_UTF8 in line:
            error = "not valid UTF-8"
        else:
            try:
                fields = next(csv.reader([line], strict=True), [])
            except csv.Error as exc:
                error = f"malformed CSV line ({exc})"
            else:
                if len(fields) != n:
                    error = f"expected {n} fields, found {len(fields)}"
        rows.append(fields if error is None else [None] * n)
        errors.append(error)
    raw = pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(columns=header, dtype=object)
    raw["_error"] = pd.Series(errors, index=raw.index, dtype=object)
    raw["_rawline"] = pd.Series(lines, index=raw.index, dtype=object)
    return raw


def tokenize(text: str, header: list[str], first_line: int | None):
    """Split ``text`` (complete lines, no header) into raw string fields named by ``header``.

    Returns one row per non-blank line with ``_line`` (``first_line`` + offset, when known),
    ``_error`` (null, or why the line could not be split into ``len(header)`` fields) and
    ``_rawline`` (the line's text, for rejects).
    """
    import pandas as pd

    lines = text.splitlines()
    numbers = list(range(len(lines)))
    if any(not ln.strip() for ln in lines):
        keep = [i for i, ln in enumerate(lines) if ln.strip()]
        lines, numbers = [lines[i] for i in keep], keep
        text = "\n".join(lines)
    raw = _fast_tokenize(text, header, len(lines)) if lines else None
    if raw is None:
        raw = _careful_tokenize(lines, header)
    else:
        raw["_error"] = pd.Series(None, index=raw.index, dtype=object)
        raw["_rawline"] = pd.Series(None, index=raw.index, dtype=object)
    if first_line is not None:
        raw["_line"] = pd.Series([first_line + i for i in numbers], index=raw.index, dtype="Int64")
    return raw


def skip_first_line(text: str) -> str:
    """``text`` without its first line (the header), whatever its line ending."""
    for i, ch in enumerate(text):
        if ch == "\n":
            return text[i + 1 :]
        if ch == "\r":
            return text[i + 2 :] if text[i + 1 : i + 2] == "\n" else text[i + 1 :]
    return ""
