"""Row-level parsing and validation of raw CSV fields: the ingest logic shared by all engines.

:func:`parse_frame` takes a pandas frame of raw strings (one partition, as an engine read it)
and returns the typed columns plus the reject bookkeeping columns. Engines apply it per
partition (``map_partitions`` on Dask, ``mapInPandas`` on Spark), so both engines accept and
reject exactly the same rows. No row is dropped: a row that cannot be used gets a reason.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
from typing import TYPE_CHECKING, Any

from include.etl.schemas import NA_TOKENS, REJECT_COLUMNS, Column, TableSchema

if TYPE_CHECKING:
    import pandas as pd

# Strings are Arrow-backed: stripping and comparing them runs in Arrow's compute kernels, not
# once per value in Python (that was most of the ingest time, see docs/benchmarks/).
log = logging.getLogger(__name__)

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


def _fast_tokenize(text: str, header: list[str], lines: list[str]):
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
    if len(raw) != len(lines) or raw.isna().to_numpy().any():  # a quote spanning lines
        return None
    if not isinstance(raw.index, pd.RangeIndex):  # every line had extra fields: pandas made them an index
        return None
    # The C parser pads a short row with empty strings: recount the lines whose last field is empty.
    for i in map(int, (raw[header[-1]] == "").to_numpy().nonzero()[0]):
        try:
            if len(next(csv.reader([lines[i]], strict=True), [])) != len(header):
                return None
        except csv.Error:
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
    raw = _fast_tokenize(text, header, lines) if lines else None
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


# ---------------------------------------------------------------------------------------
# Fast path: a block of bytes -> the same frame as ``parse_frame(tokenize(...))``.
#
# ``parse_block`` reads the fields with pyarrow's CSV reader and does the typing, domain and
# range checks and reject reasons in Arrow kernels. It only handles blocks whose every line
# provably splits the same way in pyarrow, in pandas' C parser and in the csv module (the
# careful path): no invalid UTF-8, no NUL, no line separator other than LF / CRLF / CR, and
# every quote where a well-formed quoted field puts it. Any other block goes through the
# careful path unchanged, so every bad-input case keeps exactly today's output. Within a
# handled block, lines with a wrong number of fields get their reason from the csv module,
# exactly as the careful path gives it, and numbers that pyarrow and pandas could read
# differently (exponents, more than 15 characters, "-0" in a float column, ...) send their
# column through the careful typing (:func:`_typed`).

# Bytes that make the careful path behave differently from pyarrow: NUL (the csv module
# refuses it), and line separators of ``str.splitlines`` other than LF / CR / CRLF
# (VT, FF, FS, GS, RS, NEL, LS, PS) and U+FFFD (the careful path rejects lines holding it).
_GUARD_BYTES = (0x00, 0x0B, 0x0C, 0x1C, 0x1D, 0x1E)
_GUARD_SEQUENCES = (  # (lead byte, sequences)
    (b"\xc2", (b"\xc2\x85",)),
    (b"\xe2", (b"\xe2\x80\xa8", b"\xe2\x80\xa9")),
    (b"\xef", (b"\xef\xbf\xbd",)),
)
_NUMBER_MAX_CHARS = 15  # <= 15 digits: exact in a double, one correctly rounded division in both parsers
_QUOTE, _COMMA, _LF, _CR = 34, 44, 10, 13


@functools.cache
def _lut(values: tuple[int, ...]) -> Any:
    """A 256-entry boolean table: ``_lut(v)[byte_array]`` tells which bytes are in ``v``."""
    import numpy as np

    lut = np.zeros(256, dtype=bool)
    lut[list(values)] = True
    return lut


_BOUNDARY = (_COMMA, _LF, _CR, _QUOTE)  # what may precede an opening / follow a closing quote


def _careful_block(data: bytes, schema: TableSchema, source: str, header: list[str], first_line: int | None,
                   skip_header: bool) -> pd.DataFrame:
    """The reference path: decode, skip the header, :func:`tokenize`, :func:`parse_frame`."""
    text = data.decode("utf-8", errors="replace")
    if skip_header:
        text = skip_first_line(text)
        first_line = None if first_line is None else first_line + 1
    return parse_frame(tokenize(text, header, first_line), schema, source)


def parse_block(data: bytes, schema: TableSchema, source: str, header: list[str], first_line: int | None,
                skip_header: bool = False) -> pd.DataFrame:
    """Parse a block of whole CSV lines: exactly ``parse_frame(tokenize(...))`` of its text, faster.

    ``first_line`` is the 1-based file line number of the block's first line (None: unknown,
    rows get no line numbers); with ``skip_header`` that first line is the header and is skipped.
    """
    fast = _fast_block(data, schema, source, header, first_line, skip_header)
    if fast is not None:
        return fast
    return _careful_block(data, schema, source, header, first_line, skip_header)


def _line_spans(buf):
    """(start, end) byte offsets of the lines of ``buf`` as ``str.splitlines`` splits them, or None.

    None when ``buf`` holds a control byte that the careful path treats differently from pyarrow:
    NUL (the csv module refuses it) or a line separator of ``str.splitlines`` other than LF,
    CR and CRLF (VT, FF, FS, GS, RS).
    """
    import numpy as np

    n = len(buf)
    ctrl = np.flatnonzero(buf < 32)  # one pass over the bytes for line ends and guard bytes
    kind = buf[ctrl]
    if _lut(_GUARD_BYTES)[kind].any():
        return None
    lf, cr = ctrl[kind == _LF], ctrl[kind == _CR]
    if len(cr):
        lf = lf[(lf == 0) | (buf[np.maximum(lf - 1, 0)] != _CR)]  # the LF of a CRLF ends nothing itself
        crlf = buf[np.minimum(cr + 1, n - 1)] == _LF
        crlf &= cr + 1 < n
        ends = np.concatenate([lf, cr])
        nexts = np.concatenate([lf + 1, cr + 1 + crlf])
        if len(lf):
            order = np.argsort(ends, kind="stable")
            ends, nexts = ends[order], nexts[order]
    else:
        ends, nexts = lf, lf + 1
    starts = np.concatenate([[0], nexts])
    ends = np.concatenate([ends, [n]])
    if starts[-1] == n:  # nothing after the last line end: no further line
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


def _quotes_well_formed(buf, ends) -> bool:
    """True when every quote of every line opens, closes or doubles inside a well-formed quoted field.

    Then pyarrow, pandas' C parser and the csv module split every line into the same fields.
    (They disagree on e.g. '"ab"c', 'ab"c"' and unterminated quotes, which fail this check.)
    """
    import numpy as np

    quotes = np.flatnonzero(buf == _QUOTE)
    if not len(quotes):
        return True
    if (np.searchsorted(quotes, ends) & 1).any():  # a line with an odd number of quotes: unterminated
        return False
    # Each line holds an even number of quotes, so quote i opens a quoted run iff i is even. An
    # opening quote starts a field (after a comma or at a line start) or, right after a closing
    # quote, makes a doubled quote; a closing quote ends the field or is followed by its double.
    opening, closing = quotes[0::2], quotes[1::2]
    if not _lut(_BOUNDARY)[buf[opening[opening > 0] - 1]].all():
        return False
    return bool(_lut(_BOUNDARY)[buf[closing[closing < len(buf) - 1] + 1]].all())


def _fast_block(data: bytes, schema: TableSchema, source: str, header: list[str], first_line: int | None,
                skip_header: bool) -> pd.DataFrame | None:
    """:func:`parse_block` by the fast path, or None when the block needs the careful path."""
    try:
        return _fast_block_or_none(data, schema, source, header, first_line, skip_header)
    except (UnicodeDecodeError, ValueError) as exc:  # invalid UTF-8 (pyarrow's errors are ValueErrors too)
        log.debug("a block of %s needs the careful path: %s", source, exc)
        return None


def _split_lines(data: bytes, skip_header: bool):
    """(offset of the first data line, its bytes as an array, line starts, line ends), or None.

    None when the block is empty after the header or holds anything for which the careful path
    and pyarrow could disagree (see :func:`_line_spans`, :func:`_quotes_well_formed`).
    """
    import numpy as np

    offset = 0
    if skip_header:  # the header ends at the first LF, CR or CRLF (as in skip_first_line)
        cut = min((i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0), default=-1)
        if cut < 0:
            return None
        offset = cut + (2 if data[cut : cut + 2] == b"\r\n" else 1)
    if offset >= len(data) or data.startswith(b"\xef\xbb\xbf", offset):
        return None
    # Multi-byte line separators (NEL, LS, PS) and U+FFFD; their lead bytes are rare, memchr finds them fast.
    if any(data.find(lead, offset) >= 0 and any(data.find(seq, offset) >= 0 for seq in seqs)
           for lead, seqs in _GUARD_SEQUENCES):
        return None
    buf = np.frombuffer(data, dtype=np.uint8, offset=offset)
    spans = _line_spans(buf)
    if spans is None or len(spans[0]) == 0 or not _quotes_well_formed(buf, spans[1]):
        return None
    return offset, buf, *spans


def _read_fields(body, header: list[str], schema: TableSchema):
    """pyarrow's CSV reader over ``body``: (table of the schema's columns as strings, invalid rows).

    Invalid rows (not ``len(header)`` fields) are skipped and listed as (1-based number among
    the non-empty lines, field count, text).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    invalid = []

    def on_invalid(row):
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    table = pacsv.read_csv(
        pa.py_buffer(body),
        read_options=pacsv.ReadOptions(column_names=header, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=",", quote_char='"', double_quote=True, escape_char=False,
                                         newlines_in_values=False, ignore_empty_lines=True,
                                         invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in header}, null_values=[],
                                             strings_can_be_null=False, quoted_strings_can_be_null=False,
                                             include_columns=list(schema.names), check_utf8=True),
    )
    return table, invalid


def _fast_block_or_none(data: bytes, schema: TableSchema, source: str, header: list[str], first_line: int | None,
                        skip_header: bool):
    import numpy as np
    import pyarrow as pa

    if len(header) < 2 or len(set(header)) != len(header) or any(n not in header for n in schema.names):
        return None
    split = _split_lines(data, skip_header)
    if split is None:
        return None
    offset, buf, starts, ends = split

    def line(i) -> str:
        return data[offset + starts[i] : offset + ends[i]].decode("utf-8")

    table, invalid = _read_fields(memoryview(data)[offset:], header, schema)
    nonempty = np.flatnonzero(starts != ends)  # the lines pyarrow reads (it skips empty ones)
    if table.num_rows + len(invalid) != len(nonempty):
        return None
    keep = np.ones(len(nonempty), dtype=bool)  # per non-empty line: a row of the output
    bad = np.zeros(len(nonempty), dtype=bool)  # per non-empty line: a row with a wrong field count
    for number, count, text in invalid:
        if line(nonempty[number - 1]) != text:  # pyarrow's numbering is not what we think: not ours to guess
            return None
        if count == 1 and not text.strip():  # blank: the careful path drops it
            keep[number - 1] = False
        else:
            bad[number - 1] = True
    rows, bad = nonempty[keep], bad[keep]  # rows: line index (in ``starts``) of every output row
    columns = {name: table.column(name) for name in schema.names}
    errors = None
    if bad.any():  # as the careful path: those lines get the csv module's reason, all rows their text
        take = np.full(len(rows), table.num_rows, dtype=np.int64)
        take[~bad] = np.arange(table.num_rows)
        columns = {name: pa.chunked_array([*arr.chunks, pa.nulls(1, arr.type)]).take(pa.array(take))
                   for name, arr in columns.items()}
        errors = np.full(len(rows), None, dtype=object)
        errors[bad] = _careful_tokenize([line(i) for i in rows[bad]], header)["_error"].to_numpy(dtype=object)
        if any(e is None for e in errors[bad]):  # the csv module split a line as pyarrow did not
            return None
    lines = None if first_line is None else rows + (first_line + (1 if skip_header else 0))

    def original(idx):  # text of output rows ``idx`` as in the file
        return [line(i) for i in rows[idx]]

    return _parse_arrow(columns, len(rows), schema, source, errors, lines, original if errors is not None else None)


def _typed_arrow(col: Column, values):
    """Arrow version of :func:`_typed`: (pandas typed array, [(row mask, reason), ...]) or None.

    None when a value could be read differently by pandas (then the caller uses :func:`_typed`).
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(values)
    missing = pc.or_(pc.is_null(values), pc.is_in(trimmed, value_set=pa.array(NA_TOKENS, values.type)))
    missing_np = missing.to_numpy(zero_copy_only=False)
    reasons = []
    if col.required:
        reasons.append((missing_np, f"missing required {col.name}"))
    if col.type == "str":
        typed = pc.if_else(missing, pa.scalar(None, values.type), values)
        if col.domain is not None:
            inside = pc.is_in(values, value_set=pa.array(col.domain, values.type)).to_numpy(zero_copy_only=False)
            reasons.append((~missing_np & ~inside, f"{col.name} not in {'/'.join(col.domain)}"))
        return pd.StringDtype("pyarrow").__from_arrow__(typed), reasons

    text = pc.if_else(missing, pa.scalar(None, values.type), trimmed)
    try:
        number = pc.cast(text, pa.float64())
    except pa.ArrowInvalid:  # not a number, for pyarrow: let pandas decide what it is
        return None
    # What pyarrow read is a plain decimal ([+-]digits[.digits] or [+-].digits) unless it has an
    # exponent, is inf or nan; those, and long numbers, are read by pandas' own rules.
    if (
        pc.max(pc.binary_length(text)).as_py() or 0
    ) > _NUMBER_MAX_CHARS or pc.any(pc.invert(pc.is_finite(number))).as_py() or any(
        pc.any(pc.match_substring(text, e)).as_py() for e in ("e", "E")
    ):
        return None
    if col.type == "float" and pc.any(pc.and_(pc.equal(number, 0.0), pc.starts_with(text, "-"))).as_py():
        return None  # -0: int or float in pandas depending on the rest of the column
    if col.type == "int":
        fractional = pc.fill_null(pc.not_equal(number, pc.floor(number)), False)
        reasons.append((fractional.to_numpy(zero_copy_only=False), f"{col.name} is not a whole number"))
        number = pc.if_else(fractional, pa.scalar(None, pa.float64()), number)
    if col.range is not None:
        lo, hi = col.range
        outside = pc.fill_null(pc.or_(pc.less(number, lo), pc.greater(number, hi)), False)
        reasons.append((outside.to_numpy(zero_copy_only=False), f"{col.name} outside [{lo:g}, {hi:g}]"))
    if col.type == "int":
        return pd.Int64Dtype().__from_arrow__(pc.cast(number, pa.int64())), reasons
    return pd.Float64Dtype().__from_arrow__(number), reasons


def _parse_arrow(columns: dict, n: int, schema: TableSchema, source: str, errors, lines, original) -> pd.DataFrame:
    """:func:`parse_frame` over Arrow string columns (nulls where a line had no fields).

    ``errors``: per-row tokenizer reasons (object array) or None; ``lines``: line numbers or
    None; ``original``: function giving rows' original text, or None to re-serialise their
    fields as :func:`parse_frame` does when the tokenizer kept no line text.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    index = pd.RangeIndex(n)
    reason = np.full(n, pd.NA, dtype=object)
    has = np.zeros(n, dtype=bool)
    if errors is not None:
        has = np.array([e is not None for e in errors], dtype=bool)
        reason[has] = errors[has]

    def add(mask, text):
        new = mask & ~has
        reason[new] = text
        has[new] = True

    # One chunk per column: Spark's mapInPandas converts each column with pa.Array.from_pandas,
    # which refuses string columns backed by several chunks (pyarrow reads in 1 MB chunks).
    columns = {name: arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr for name, arr in columns.items()}
    out = {}
    for col in schema.columns:
        result = _typed_arrow(col, columns[col.name])
        if result is None:  # the careful typing, on this column only
            values = pd.Series(pd.StringDtype("pyarrow").__from_arrow__(columns[col.name]), index=index)
            typed, col_reason = _typed(col, values)
            out[col.name] = typed.array
            mask = col_reason.notna().to_numpy() & ~has
            col_reason = col_reason.to_numpy(dtype=object)
            reason[mask] = col_reason[mask]
            has |= mask
            continue
        out[col.name], col_reasons = result
        for mask, text in col_reasons:
            add(mask, text)
    frame = pd.DataFrame(out, index=index)
    if schema.key and n:
        dup = frame.duplicated(subset=list(schema.key), keep="first").to_numpy() & ~has
        add(dup, f"duplicate key ({', '.join(schema.key)})")
    frame["_source"] = pd.Series(source, index=index, dtype="string")
    frame["_line"] = pd.array(lines, dtype="Int64") if lines is not None else pd.Series(pd.NA, index=index, dtype="Int64")
    raw = np.full(n, pd.NA, dtype=object)
    if has.any():
        idx = np.flatnonzero(has)
        if original is not None:
            raw[idx] = original(idx)
        else:
            fields = {name: columns[name].take(pa.array(idx)).to_pylist() for name in schema.names}
            raw[idx] = _raw_lines(pd.DataFrame(fields, dtype=object), schema.names)
    frame["_raw"] = pd.arrays.StringArray(raw)
    frame["_reason"] = pd.arrays.StringArray(reason)
    return frame
