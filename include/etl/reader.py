"""Reading a declared CSV input: a block of whole records -> typed rows and rejects (one Arrow table).

Every engine reads a file the same way: :func:`include.etl.csvfile.read_header` checks the
header, :func:`include.etl.csvfile.plan_blocks` splits the data into blocks of whole records
(each knowing its first physical line), and :func:`parse_block` turns one block into a table
of the dataset's typed columns followed by the reject bookkeeping columns ``_source``,
``_line`` (the physical line where the record starts), ``_raw`` (the record's text as in the
file) and ``_reason`` (null for accepted rows). Nothing is dropped but blank lines.

Fields are split by pyarrow's CSV reader for the lines that are whole records on their own
(almost all); the others (quoted line breaks, stray quotes, bytes invalid in the encoding) are
read one record at a time by the ``csv`` module. Typing and checks are
:func:`include.etl.convert.convert`, the one definition of a valid row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.etl.csvfile import Block, Header, read_header  # noqa: F401 - part of this module's interface
from include.etl.errors import InputFileError  # noqa: F401 - raised by read_header

if TYPE_CHECKING:
    from include.etl.contract import Dataset

REJECT_COLUMNS = ("_source", "_line", "_raw", "_reason")


def output_schema(dataset: Dataset) -> Any:
    """Arrow schema of :func:`parse_block`'s table."""
    import pyarrow as pa

    from include.etl.convert import arrow_type

    fields = [pa.field(c.name, arrow_type(c)) for c in dataset.columns]
    fields += [pa.field("_source", pa.string()), pa.field("_line", pa.int64()),
               pa.field("_raw", pa.string()), pa.field("_reason", pa.string())]
    return pa.schema(fields)


def spark_ddl(dataset: Dataset) -> str:
    """Spark DDL of :func:`parse_block`'s table."""
    from include.etl.convert import spark_type

    cols = [f"`{c.name}` {spark_type(c)}" for c in dataset.columns]
    return ", ".join(cols + ["`_source` string", "`_line` bigint", "`_raw` string", "`_reason` string"])


def empty_table(dataset: Dataset) -> Any:
    return output_schema(dataset).empty_table()


def _encoding_ok(data: bytes, codec: str) -> bool:
    if codec == "latin-1":
        return True
    if data.isascii():  # cheap, and valid in every supported encoding
        return True
    if codec == "ascii":
        return False
    try:
        data.decode(codec)
    except UnicodeDecodeError:
        return False
    return True


def _invalid_text(codec: str) -> str:
    return {"utf-8": "not valid UTF-8", "ascii": "not valid ASCII"}.get(codec, f"not valid {codec}")


def parse_block(path: str, block: Block, header: Header, dataset: Dataset, ds: str | None = None) -> Any:
    """One block of ``path`` -> a pyarrow Table with :func:`output_schema` (runs on the cluster)."""
    from include.etl.csvfile import read_block_bytes

    data, lookahead = read_block_bytes(path, block)
    nonsimple = None if block.nonsimple is None else [o - block.offset for o in block.nonsimple]
    return parse_bytes(data, block.first_line, path, header, dataset, ds, nonsimple, lookahead)


def parse_bytes(block: bytes, first_line: int, source: str, header: Header, dataset: Dataset,
                ds: str | None = None, nonsimple: list[int] | None = None, lookahead: Any = None) -> Any:
    """:func:`parse_block` of the bytes ``block`` (whole records).

    ``nonsimple``: offsets (in ``block``) of the lines :func:`include.etl.csvfile.nonsimple_lines`
    would find, when already known; ``lookahead()``: the bytes after the block, which a record
    scan may look at (see :data:`include.etl.csvfile.RECORD_WINDOW`).
    """
    import numpy as np
    import pyarrow as pa

    from include.etl.convert import Reasons, convert
    from include.etl.csvfile import RECORD_WINDOW, line_spans, nonsimple_lines, scan_record

    fmt = dataset.format
    codec = fmt.python_encoding
    buf = np.frombuffer(block, dtype=np.uint8)
    starts, ends, nexts = line_spans(buf, block)
    n_lines = len(starts)
    # Records read by the csv module: (start line, last line, fields or None, error or None)
    complex_records: list[tuple[int, int, list[str] | None, str | None]] = []
    consumed = np.zeros(n_lines, dtype=bool)
    resume = 0
    odd = nonsimple_lines(buf, starts, fmt) if nonsimple is None else np.searchsorted(starts, nonsimple)
    data = block
    if len(odd) and lookahead is not None and int(starts[odd[-1]]) + RECORD_WINDOW > len(block):
        data = block + lookahead()  # a record scan may look past the block's end, as the planner's did
    for i in map(int, odd):
        if i < resume:
            continue
        start = int(starts[i])
        record = scan_record(data[start : start + RECORD_WINDOW], fmt)
        last = i + max(record.lines, 1) - 1
        consumed[i : last + 1] = True
        resume = last + 1
        complex_records.append((i, last, record.fields, record.error))
    simple = (starts != ends) & ~consumed
    if not _encoding_ok(block, codec):  # find the simple lines that do not decode
        for i in map(int, np.flatnonzero(simple)):
            if not _encoding_ok(data[starts[i] : ends[i]], codec):
                simple[i] = False
                complex_records.append((i, i, None, _invalid_text(codec)))
    for k, (i, last, fields, error) in enumerate(complex_records):
        if fields is not None and not _encoding_ok(data[starts[i] : ends[last]], codec):
            complex_records[k] = (i, last, None, _invalid_text(codec))

    simple_idx = np.flatnonzero(simple)
    all_simple = not complex_records and codec in ("utf-8", "ascii")
    if all_simple:
        body = block
    else:
        body = b"\n".join(data[starts[i] : ends[i]] for i in simple_idx)
        if codec not in ("utf-8", "ascii"):
            body = body.decode(codec).encode("utf-8")
    table, invalid = _read_fields(body, header, dataset)
    # pyarrow's rows: the simple non-empty lines in order, less the invalid ones (numbered among the non-empty).
    bad_simple: dict[int, str] = {}
    for number, count, _text in invalid:
        bad_simple[int(simple_idx[number - 1])] = f"expected {len(header.names)} fields, found {count}"
    # Records in file order: (start line, source kind, index into that source).
    good_simple = simple_idx if not bad_simple else np.array([i for i in simple_idx if int(i) not in bad_simple],
                                                              dtype=np.int64)
    if len(good_simple) != table.num_rows:
        raise RuntimeError(f"{source}: pyarrow read {table.num_rows} rows from {len(good_simple)} lines; "
                           "please report this file")
    extra_starts = list(bad_simple)
    extra_starts += [c[0] for c in complex_records]
    n_fast = table.num_rows
    record_lines = np.concatenate([good_simple, np.array(extra_starts, dtype=np.int64)])
    order = np.argsort(record_lines, kind="stable")
    record_lines = record_lines[order]
    n = len(record_lines)

    slow_fields: list[list[str] | None] = []  # records read by the csv module or rejected by pyarrow
    slow_errors: list[str | None] = []
    last_lines: list[int] = []
    for i, reason in bad_simple.items():
        slow_fields.append(None)
        slow_errors.append(reason)
        last_lines.append(i)
    for i, last, fields, error in complex_records:
        if fields is not None and len(fields) != len(header.names):
            error, fields = f"expected {len(header.names)} fields, found {len(fields)}", None
        slow_fields.append(fields)
        slow_errors.append(error)
        last_lines.append(last)
    errors = np.array([None] * n_fast + slow_errors, dtype=object)[order]
    raw: dict[str, Any] = {}
    take = pa.array(order, pa.int64())
    for col in dataset.columns:
        pos = header.positions[col.name]
        fast = table.column(f"f{pos}").combine_chunks() if n_fast else pa.array([], pa.string())
        slow = pa.array([None if f is None else f[pos] for f in slow_fields], pa.string())
        raw[col.name] = pa.concat_arrays([fast.cast(pa.string()), slow]).take(take) if slow_fields else fast
    reasons = Reasons(n, errors)
    typed = convert(dataset, raw, reasons, ds)

    # The rejected records' text as in the file.
    raw_text = np.full(n, None, dtype=object)
    rejected = np.flatnonzero(reasons.has)
    if len(rejected):
        last_of = np.concatenate([good_simple, np.array(last_lines, dtype=np.int64)])[order]
        for r in rejected:
            a, b = int(starts[record_lines[r]]), int(ends[last_of[r]])
            raw_text[r] = data[a:b].decode(codec, errors="replace")
    columns = dict(typed)
    columns["_source"] = pa.array([source] * n, pa.string()) if n else pa.array([], pa.string())
    columns["_line"] = pa.array(record_lines + first_line, pa.int64())
    columns["_raw"] = pa.array(raw_text, pa.string())
    columns["_reason"] = pa.array(reasons.text, pa.string())
    return pa.table(columns, schema=output_schema(dataset))


def _read_fields(body: Any, header: Header, dataset: Dataset) -> tuple[Any, list[tuple[int, int, str]]]:
    """pyarrow's CSV reader over whole single-line records: (string columns f<position>, invalid rows)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    fmt = dataset.format
    names = [f"f{i}" for i in range(len(header.names))]
    wanted = sorted({header.positions[c.name] for c in dataset.columns})
    invalid: list[tuple[int, int, str]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    if len(body) == 0:
        return pa.table({f"f{i}": pa.array([], pa.string()) for i in wanted}), invalid
    table = pacsv.read_csv(
        pa.py_buffer(body),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 26),
        parse_options=pacsv.ParseOptions(delimiter=fmt.delimiter, quote_char=fmt.quote, double_quote=True,
                                         escape_char=False, newlines_in_values=False, ignore_empty_lines=True,
                                         invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, null_values=[],
                                             strings_can_be_null=False, quoted_strings_can_be_null=False,
                                             include_columns=[f"f{i}" for i in wanted], check_utf8=False),
    )
    return table, invalid


def to_pandas(table: Any) -> Any:
    """The frame the Dask engine works with: Arrow-backed columns, nulls kept as nulls."""
    import pandas as pd

    return table.to_pandas(types_mapper=pd.ArrowDtype)
