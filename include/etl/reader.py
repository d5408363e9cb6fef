"""Reading a declared CSV input: a block of whole records -> typed rows and rejects (one Arrow table).

Every engine reads a file the same way: :func:`include.etl.csvfile.read_header` checks the
header, :func:`include.etl.csvfile.plan_blocks` splits the data into blocks of whole records
(each knowing its first physical line), and :func:`parse_block` turns one block into a table
of the dataset's typed columns followed by the reject bookkeeping columns ``_source``,
``_line`` (the physical line where the record starts), ``_raw`` (the record's text as in the
file) and ``_reason`` (null for accepted rows; :data:`DROPPED` for an exact copy of an earlier
row that the contract drops, counted apart). Nothing else is dropped but blank lines. Typed
columns carry their output names (``Column.rename``).

Fields are split by pyarrow's CSV reader for the lines that are whole records on their own
(almost all); the others (quoted line breaks, stray quotes, bytes invalid in the encoding) are
read one record at a time by the ``csv`` module. Typing and checks are
:func:`include.etl.convert.convert`, the one definition of a valid row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.etl.convert import DROPPED  # noqa: F401 - part of this module's interface
from include.etl.csvfile import Block, Header, read_header  # noqa: F401 - part of this module's interface
from include.etl.errors import InputFileError  # noqa: F401 - raised by read_header

if TYPE_CHECKING:
    from include.etl.contract import Dataset

REJECT_COLUMNS = ("_source", "_line", "_raw", "_reason")


def output_schema(dataset: Dataset) -> Any:
    """Arrow schema of :func:`parse_block`'s table."""
    import pyarrow as pa

    from include.etl.convert import arrow_type

    fields = [pa.field(c.out, arrow_type(c)) for c in dataset.columns]
    fields += [pa.field("_source", pa.string()), pa.field("_line", pa.int64()),
               pa.field("_raw", pa.string()), pa.field("_reason", pa.string())]
    return pa.schema(fields)


def spark_ddl(dataset: Dataset) -> str:
    """Spark DDL of :func:`parse_block`'s table."""
    from include.etl.convert import spark_type

    cols = [f"`{c.out}` {spark_type(c)}" for c in dataset.columns]
    return ", ".join(cols + ["`_source` string", "`_line` bigint", "`_raw` string", "`_reason` string"])


def empty_table(dataset: Dataset) -> Any:
    return output_schema(dataset).empty_table()


def _encoding_ok(data: Any, codec: str) -> bool:
    """Whether ``data`` (``bytes`` or a uint8 array) is valid text in ``codec``."""
    if codec == "latin-1":
        return True
    if data.isascii() if isinstance(data, bytes) else not len(data) or int(data.max()) < 0x80:
        return True  # cheap, and valid in every supported encoding
    if codec == "ascii":
        return False
    if codec == "utf-8" and len(data) > 1 << 16:  # a block: Arrow's validation, no 64 MiB str (same verdicts)
        return _utf8_ok(data)
    try:
        str(data, codec)
    except UnicodeDecodeError:
        return False
    return True


def _utf8_ok(data: bytes) -> bool:
    import numpy as np
    import pyarrow as pa

    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)]).cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _invalid_text(codec: str) -> str:
    return {"utf-8": "not valid UTF-8", "ascii": "not valid ASCII"}.get(codec, f"not valid {codec}")


def parse_block(path: str, block: Block, header: Header, dataset: Dataset, ds: str | None = None) -> Any:
    """One block of ``path`` -> a pyarrow Table with :func:`output_schema` (runs on the cluster)."""
    from include.etl.csvfile import read_block

    data, lookahead = read_block(path, block)
    nonsimple = None if block.nonsimple is None else [o - block.offset for o in block.nonsimple]
    return parse_bytes(data, block.first_line, path, header, dataset, ds, nonsimple, lookahead)


def parse_bytes(block: Any, first_line: int, source: str, header: Header, dataset: Dataset,
                ds: str | None = None, nonsimple: list[int] | None = None, lookahead: Any = None) -> Any:
    """:func:`parse_block` of the bytes ``block`` (whole records; ``bytes`` or a uint8 array).

    ``nonsimple``: offsets (in ``block``) of the lines :func:`include.etl.csvfile.nonsimple_lines`
    would find, when already known; ``lookahead()``: the bytes after the block, which a record
    scan may look at (see :data:`include.etl.csvfile.RECORD_WINDOW`).
    """
    import numpy as np
    import pyarrow as pa

    from include.etl.convert import Reasons, convert
    from include.etl.csvfile import line_spans

    codec = dataset.format.python_encoding
    starts, ends, nexts = line_spans(np.frombuffer(block, dtype=np.uint8))
    data, slow, simple = _slow_records(block, starts, ends, dataset, nonsimple, lookahead)
    simple_idx = np.flatnonzero(simple)
    table, invalid = _read_fields(_pyarrow_body(block, slow, starts, nexts, codec), header, dataset)
    # pyarrow's rows are the simple lines in order, less the invalid ones (numbered among them).
    width = len(header.names)
    for number, count, _text in invalid:
        i = int(simple_idx[number - 1])
        slow.append((i, i, None, f"expected {width} fields, found {count}"))
        simple[i] = False
    good = np.flatnonzero(simple)
    if len(good) != table.num_rows:
        raise RuntimeError(f"{source}: pyarrow read {table.num_rows} rows from {len(good)} lines; please report this file")
    slow = [(i, last, None, f"expected {width} fields, found {len(f)}") if f is not None and len(f) != width
            else (i, last, f, e) for i, last, f, e in slow]
    # Records in file order: pyarrow's rows first, then the slow ones, sorted by their first line.
    firsts = np.concatenate([good, np.array([r[0] for r in slow], dtype=np.int64)])
    lasts = np.concatenate([good, np.array([r[1] for r in slow], dtype=np.int64)])
    order = np.argsort(firsts, kind="stable")
    take = pa.array(order, pa.int64())
    raw = {}
    for col in dataset.columns:
        pos = header.positions[col.name]
        fast = table.column(f"f{pos}").combine_chunks().cast(pa.string()) if table.num_rows else pa.array([], pa.string())
        late = pa.array([None if r[2] is None else r[2][pos] for r in slow], pa.string())
        raw[col.name] = pa.concat_arrays([fast, late]).take(take) if slow else fast
    reasons = Reasons(len(order)) if not slow else Reasons(  # (no tokenizer reason: skip a loop over the rows)
        len(order), np.array([None] * table.num_rows + [r[3] for r in slow], dtype=object)[order])
    typed = convert(dataset, raw, reasons, ds)
    columns = {col.out: typed[col.name] for col in dataset.columns}  # the lake's names
    firsts, lasts = firsts[order], lasts[order]
    raw_text = np.full(len(order), None, dtype=object)  # the rejected records' text as in the file
    for r in np.flatnonzero(reasons.has):
        raw_text[r] = bytes(data[int(starts[firsts[r]]) : int(ends[lasts[r]])]).decode(codec, errors="replace")
    columns["_source"] = pa.repeat(pa.scalar(source, pa.string()), len(order))
    columns["_line"] = pa.array(firsts + first_line, pa.int64())
    columns["_raw"] = pa.array(raw_text, pa.string())
    columns["_reason"] = pa.array(reasons.text, pa.string())
    return pa.table(columns, schema=output_schema(dataset))


def _slow_records(block: Any, starts: Any, ends: Any, dataset: Dataset, nonsimple: list[int] | None,
                  lookahead: Any) -> tuple[Any, list[tuple[int, int, list[str] | None, str | None]], Any]:
    """The records the csv module reads: (bytes scanned, [(first line, last line, fields or None, reason or None)],
    mask of the simple lines left for pyarrow). Lines not valid in the encoding are rejected here too.
    ``block``: ``bytes`` or a uint8 array; the bytes scanned are ``bytes`` when the block has such records."""
    import numpy as np

    from include.etl.csvfile import RECORD_WINDOW, nonsimple_lines, scan_record

    fmt = dataset.format
    codec = fmt.python_encoding
    buf = np.frombuffer(block, dtype=np.uint8)
    odd = nonsimple_lines(buf, starts, fmt) if nonsimple is None else np.searchsorted(starts, nonsimple)
    data = bytes(block) if len(odd) and not isinstance(block, bytes) else block  # the csv module reads bytes
    if len(odd) and lookahead is not None and int(starts[odd[-1]]) + RECORD_WINDOW > len(block):
        data = data + lookahead()  # a record scan may look past the block's end, as the planner's did
    slow: list[tuple[int, int, list[str] | None, str | None]] = []
    simple = starts != ends  # empty lines are no records
    resume = 0
    for i in map(int, odd):
        if i < resume:
            continue  # inside a record read already
        record = scan_record(data, fmt, int(starts[i]), int(starts[i]) + RECORD_WINDOW)
        last = i + max(record.lines, 1) - 1
        if last >= len(starts):
            raise RuntimeError(f"a record at line {i} of a block runs past the block's end: the block plan is wrong")
        simple[i : last + 1] = False
        resume = last + 1
        valid = record.fields is None or _encoding_ok(data[int(starts[i]) : int(ends[last])], codec)
        slow.append((i, last, record.fields, record.error) if valid else (i, last, None, _invalid_text(codec)))
    if not _encoding_ok(block, codec):  # find the simple lines that do not decode
        for i in _invalid_lines(block, starts, simple, codec):
            simple[i] = False
            slow.append((i, i, None, _invalid_text(codec)))
    return data, slow, simple


DECODE_WINDOW = 1 << 20  # bytes of whole lines decoded at once by _invalid_lines
RECHECK_LINES = 16


def _invalid_lines(block: bytes, starts: Any, simple: Any, codec: str) -> list[int]:
    """The ``simple`` lines of ``block`` that are not valid in ``codec`` (an ASCII-compatible encoding,
    so that no character spans a line end): the lines decoded a window at a time, not one call per
    line (450 k calls in a 64 MiB block). After an error, the next :data:`RECHECK_LINES` lines are
    checked one by one and the window starts small again (bad lines come in runs, as in a file in
    another encoding than declared, and a failed decode still allocates its whole window)."""
    import numpy as np

    view, found, i, n, size = memoryview(block), [], 0, len(starts), DECODE_WINDOW

    def line_end(k: int) -> int:
        return int(starts[k + 1]) if k + 1 < n else len(block)

    while i < n:
        j = max(int(np.searchsorted(starts, int(starts[i]) + size)), i + 1)  # whole lines
        try:
            str(view[int(starts[i]) : line_end(j - 1)], codec)
            i, size = j, min(2 * size, DECODE_WINDOW)
            continue
        except UnicodeDecodeError as e:
            i = int(np.searchsorted(starts, int(starts[i]) + e.start, side="right")) - 1
        for k in range(i, min(i + RECHECK_LINES + 1, n)):
            if simple[k] and not _encoding_ok(block[int(starts[k]) : line_end(k)], codec):
                found.append(k)
        i, size = min(i + RECHECK_LINES + 1, n), max(DECODE_WINDOW >> 8, 1)
    return found


def _pyarrow_body(block: Any, slow: list, starts: Any, nexts: Any, codec: str) -> Any:
    """The block less the lines of the ``slow`` records, as UTF-8 text for pyarrow: its simple lines as in the
    file (with their line ends) and its empty ones, which pyarrow skips without counting them as rows."""
    if slow:  # cut whole lines out: a few slices, not one per line (a block of 450 k lines: 0.6 s)
        view, kept, pos = memoryview(block), [], 0
        for first, last in sorted((r[0], r[1]) for r in slow):
            kept.append(view[pos : int(starts[first])])
            pos = int(nexts[last])
        block = b"".join([*kept, view[pos:]])
    return block if codec in ("utf-8", "ascii") else str(block, codec).encode("utf-8")


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
