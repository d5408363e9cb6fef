"""A CSV file as bytes: its header, its physical lines, and where each record starts and ends.

RFC 4180 as Python's ``csv`` module reads it (strict mode): a quoted field may hold delimiters,
doubled quotes and line breaks (LF, CRLF or a bare CR), so a record may span several physical
lines; a quote inside an unquoted field is part of the value. Finding record boundaries is
cheap for the lines that cannot open a multi-line record (see :func:`nonsimple_lines`), so
only the rare other lines are scanned one record at a time with the ``csv`` module
(:func:`scan_record`). The same functions run in the planner (block boundaries) and in every
block's parse, so every engine reads the same records.

Delimiter, quote and line-end bytes are ASCII, so all this works on the raw bytes of any
ASCII-compatible encoding (UTF-8, Latin-1, cp1252) before decoding.
"""

from __future__ import annotations

import csv
import functools
import itertools
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.etl.errors import InputFileError

if TYPE_CHECKING:
    from include.etl.contract import Dataset, FileFormat

LF, CR = 10, 13
BOM = b"\xef\xbb\xbf"
# The bytes a record scan may look at past its first line. A record longer than this is
# rejected as malformed (an unterminated quote); blocks are read with this much lookahead so
# that the planner and a block's parse see the same bytes.
RECORD_WINDOW = 1 << 20
_HEADER_WINDOW = 1 << 20
# Up to this many lines with an odd quote count in a buffer, its quotes are checked run by run
# (views of the quote positions); beyond, each quote is numbered within its line (see nonsimple_lines).
FEW_ODD_LINES = 256
# Bytes of whole lines pre-scanned at once by nonsimple_lines (2 MiB: 50 against 70-78 ms for a 64 MiB block at once).
PRESCAN_BYTES = 1 << 21


@functools.cache
def _lut(values: tuple[int, ...]) -> Any:
    import numpy as np

    lut = np.zeros(256, dtype=bool)
    lut[list(values)] = True
    return lut


def line_spans(buf) -> tuple[Any, Any, Any]:
    """``(starts, ends, nexts)`` of the physical lines of ``buf`` (a uint8 array of the bytes).

    A line ends at LF, CR or CRLF; ``ends`` excludes the terminator, ``nexts`` is where the
    next line starts. A final line without a terminator counts; nothing after the last
    terminator is no line.
    """
    import numpy as np

    n = len(buf)
    crs = np.count_nonzero(buf == CR)
    lf = np.flatnonzero(buf == LF)
    if crs == 0:  # LF throughout: the common, fast case
        return _finish_spans(lf, lf + 1, n)
    crlf = (buf[np.maximum(lf - 1, 0)] == CR) & (lf > 0)  # the LFs that end a CRLF
    if crs == np.count_nonzero(crlf):  # every CR is in a CRLF (as counting b"\r\n" says, without a second scan)
        return _finish_spans(lf - crlf, lf + 1, n)  # a CRLF ends before its CR
    pos = np.flatnonzero(buf <= CR)
    kind = buf[pos]
    sel = (kind == LF) | (kind == CR)
    pos, kind = pos[sel], kind[sel]
    if len(pos) and (kind == CR).any():
        pair = np.zeros(len(pos), dtype=bool)  # CR immediately followed by LF
        pair[:-1] = (kind[:-1] == CR) & (kind[1:] == LF) & (pos[1:] == pos[:-1] + 1)
        second = np.zeros(len(pos), dtype=bool)
        second[1:] = pair[:-1]
        ends = pos[~second]
        nexts = ends + 1 + pair[~second]
    else:
        ends, nexts = pos, pos + 1
    return _finish_spans(ends, nexts, n)


def _finish_spans(ends, nexts, n: int):
    import numpy as np

    starts = np.concatenate([np.zeros(1, dtype=np.int64), nexts])
    ends = np.concatenate([ends, np.array([n], dtype=np.int64)])
    if starts[-1] == n:  # nothing after the last terminator
        starts, ends = starts[:-1], ends[:-1]
    return starts.astype(np.int64), ends.astype(np.int64), np.concatenate([starts[1:], [n]]).astype(np.int64)


def nonsimple_lines(buf, starts, fmt: FileFormat):
    """Indices of the lines that need the ``csv`` module: every other line is one whole record.

    A line is simple when it holds no NUL and its quotes pair up on the line, each opening
    quote starting a field (or doubling the previous quote) and each closing one ending a field
    (or being doubled): then pyarrow and the ``csv`` module split it into the same fields, and
    it cannot open a quoted field that runs on to the next line.

    A line's verdict depends on its own bytes only, so the lines are scanned :data:`PRESCAN_BYTES`
    at a time: the arrays of quote positions stay small enough for the CPU's cache.
    """
    import numpy as np

    n = len(starts)
    cuts = np.unique(np.append(np.searchsorted(starts, np.arange(0, len(buf), PRESCAN_BYTES)), n)).tolist()
    found = [np.zeros(0, dtype=np.int64)]
    for a, b in itertools.pairwise(cuts):
        lo, hi = int(starts[a]), int(starts[b]) if b < n else len(buf)
        found.append(_nonsimple(buf[lo:hi], starts[a:b] - lo, fmt) + a)
    return np.concatenate(found)


def _nonsimple(buf, starts, fmt: FileFormat):
    """:func:`nonsimple_lines` of whole lines."""
    import numpy as np

    quote, delim = ord(fmt.quote), ord(fmt.delimiter)
    n_lines = len(starts)
    bad = np.zeros(n_lines, dtype=bool)
    is_quote = buf == quote
    quotes = np.flatnonzero(is_quote)
    if len(quotes):
        # Each line's quote count is odd where the XOR of its bytes' quote flags is 1 (one pass, no positions).
        odd = np.flatnonzero(np.bitwise_xor.reduceat(is_quote.view(np.uint8), starts))
        bad[odd] = True
        # A line's k-th quote (from 0) opens a quoted run when k is even.
        if len(odd) <= FEW_ODD_LINES:
            # So from a line's start up to the end of the next line with an odd count, the quotes
            # alternate opening and closing from the first one: one run each (views, no copies).
            after = np.searchsorted(quotes, np.append(starts, len(buf))[odd + 1])  # the first quote after each odd line
            cuts = np.concatenate([[0], after, [len(quotes)]])
            runs = [(quotes[a:b:2], quotes[a + 1:b:2]) for a, b in itertools.pairwise(cuts.tolist()) if b > a]
        else:  # number the quotes within each line: quote k is the (k - bounds[line])-th of its line
            bounds = np.append(np.searchsorted(quotes, starts), len(quotes))  # each line's first quote, and the end
            parity = np.zeros(len(quotes), dtype=np.uint8)
            parity[1::2] = 1
            opens = parity == np.repeat((bounds[:-1] & 1).astype(np.uint8), np.diff(bounds))
            runs = [(quotes[opens], quotes[~opens])]
        other = _lut(tuple(sorted(set(range(256)) - {delim, LF, CR, quote})))  # bytes that are no field boundary
        wrong = np.concatenate([_misplaced(buf, opening, closing, other) for opening, closing in runs])
        if len(wrong):
            bad[np.searchsorted(starts, wrong, side="right") - 1] = True
    nul = np.flatnonzero(buf == 0) if len(buf) and buf.min() == 0 else ()  # (min: a cheap test for no NUL)
    if len(nul):
        bad[np.searchsorted(starts, nul, side="right") - 1] = True
    return np.flatnonzero(bad)


def _misplaced(buf, opening, closing, other):
    """The opening quotes after a byte that is no field boundary and the closing ones before such a byte."""
    import numpy as np

    # Quotes are sorted: only the first can be at 0, only the last at the end (views, no copies).
    opening = opening[1:] if len(opening) and opening[0] == 0 else opening
    closing = closing[:-1] if len(closing) and closing[-1] == len(buf) - 1 else closing
    return np.concatenate([opening[other[buf[opening - 1]]], closing[other[buf[closing + 1]]]])


@dataclass(frozen=True)
class Record:
    """One record found by :func:`scan_record`: its physical lines and bytes, its fields or why it has none."""

    lines: int
    length: int  # bytes, with the terminator of its last line
    fields: list[str] | None
    error: str | None


def _csv_dialect(fmt: FileFormat) -> dict[str, Any]:
    return {"delimiter": fmt.delimiter, "quotechar": fmt.quote, "doublequote": True, "strict": True}


_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)?")  # one physical line, with its line end (as bytes.splitlines)


def scan_record(window: bytes, fmt: FileFormat, start: int = 0, end: int | None = None) -> Record:
    """The record starting at ``window[start]``, read by the ``csv`` module (strict), at most
    ``fmt.max_record_lines`` physical lines and no byte at or after ``end`` (default: the window's
    end). A record that cannot be read is its first line alone, with the reason; reading goes on
    after that line. Lines are taken from the window one at a time, as the ``csv`` module asks for
    them (splitting a whole window of 1 MiB took 4 ms a record).

    Text is decoded with ``surrogateescape`` so that a line that is not valid in the declared
    encoding still splits; such a record is rejected for its encoding by the caller.
    """
    end = len(window) if end is None else min(end, len(window))
    lines: list[bytes] = []  # the physical lines the csv module has taken
    if start >= end:
        return Record(0, 0, None, "empty record")
    codec = fmt.python_encoding
    consumed = 0

    def counted():
        nonlocal consumed
        pos = start
        while pos < end and consumed < fmt.max_record_lines:
            line = _LINE.match(window, pos, end).group()
            lines.append(line)
            pos += len(line)
            consumed += 1
            yield line.decode(codec, errors="surrogateescape")

    reader = csv.reader(counted(), **_csv_dialect(fmt))
    try:
        fields = next(reader)
    except csv.Error as exc:
        message = str(exc)
        if message == "unexpected end of data" and consumed >= fmt.max_record_lines:
            message = f"a quoted field is not closed within {fmt.max_record_lines} lines"
        elif message == "unexpected end of data":
            message = "a quoted field is not closed"
        return Record(1, len(lines[0]), None, f"malformed CSV line ({message})")
    except StopIteration:
        return Record(1, len(lines[0]), None, "empty record")
    consumed = reader.line_num
    return Record(consumed, sum(len(ln) for ln in lines[:consumed]), fields, None)


@dataclass(frozen=True)
class Header:
    """The file's header: column names as written (trimmed of spaces and a BOM), and where data starts."""

    path: str
    names: list[str]
    data_offset: int  # byte offset of the first data record
    first_line: int  # physical line number (1-based) of the first data record
    size: int  # file size in bytes
    extra: list[str]  # header columns the contract does not declare
    positions: dict[str, int]  # declared column -> its position in the header


def read_header(path: str, dataset: Dataset) -> Header:
    """Read and check the header of ``path`` against ``dataset``.

    Raises :class:`InputFileError` naming the file: missing, a directory, empty, a header
    lacking declared columns (listing those found, with a hint when the delimiter looks
    different), or a declared column present twice.
    """
    fmt = dataset.format
    where = f"{dataset.name} input {path}"
    if not os.path.exists(path):
        raise InputFileError(f"{where}: file does not exist")
    if os.path.isdir(path):
        raise InputFileError(f"{where}: is a directory, expected a CSV file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(_HEADER_WINDOW)
    offset = len(BOM) if head.startswith(BOM) and fmt.encoding in ("utf-8", "utf-8-sig") else 0
    # Blank lines before the header are skipped (they are no record).
    while offset < len(head) and head[offset] in (LF, CR):
        offset += 1
    if offset >= len(head) or not head[offset:].strip():
        raise InputFileError(f"{where}: file is empty (no header line)")
    record = scan_record(head[offset:], fmt)
    unreadable = record.error
    if record.fields is None:  # read it leniently, to name what was found (and hint at the delimiter)
        first = head[offset:].splitlines()[0].decode(fmt.python_encoding, errors="surrogateescape")
        record = Record(1, record.length, next(csv.reader([first], **{**_csv_dialect(fmt), "strict": False})), None)
    try:
        raw_names = [name.encode(fmt.python_encoding, errors="surrogateescape").decode(fmt.python_encoding)
                     for name in record.fields]
    except UnicodeDecodeError:
        raise InputFileError(f"{where}: the header line is not valid {fmt.encoding}") from None
    found = [name.strip().lstrip("\ufeff").strip() for name in raw_names]
    if all(not name for name in found):
        raise InputFileError(f"{where}: file is empty (no header line)")
    missing = [n for n in dataset.names if n not in found]
    if missing:
        raise InputFileError(f"{where}: header is missing required columns {missing}; found columns {found}"
                             f"{_delimiter_hint(found, fmt.delimiter)}")
    if unreadable:
        raise InputFileError(f"{where}: the header line cannot be read: {unreadable}")
    twice = sorted({n for n in dataset.names if found.count(n) > 1})
    if twice:
        raise InputFileError(f"{where}: header names declared columns more than once: {twice}; found columns {found}")
    lines_before = head[:offset].count(b"\n") + head[:offset].count(b"\r") - head[:offset].count(b"\r\n")
    return Header(
        path=path,
        names=found,
        data_offset=offset + record.length,
        first_line=1 + lines_before + record.lines,
        size=size,
        extra=[n for n in found if n not in dataset.names and n],
        positions={n: found.index(n) for n in dataset.names},
    )


def _delimiter_hint(found: list[str], delimiter: str) -> str:
    if len(found) == 1:
        for sep in (";", "\t", "|", ","):
            if sep != delimiter and sep in found[0]:
                return f"; the header looks {sep!r}-delimited, expected {delimiter!r}"
    return ""


@dataclass(frozen=True)
class Block:
    """A piece of the file holding whole records: bytes ``[offset, offset + length)``, its first physical line.

    ``nonsimple``: file offsets of the block's lines that :func:`nonsimple_lines` finds, when the
    planner already knows them (None: the parse finds them).
    """

    offset: int
    length: int
    first_line: int
    nonsimple: tuple[int, ...] | None = None


def _next_line_start(f, pos: int, size: int) -> int:
    """The first line start at or after ``pos`` (``pos`` itself when it follows a line end)."""
    if pos <= 0:
        return 0
    f.seek(pos - 1)
    chunk_size = 1 << 16
    base = pos - 1
    prev = f.read(1)
    if prev == b"\n":
        return pos
    while base + 1 < size:
        chunk = f.read(chunk_size)
        if not chunk:
            break
        data = prev + chunk
        for i in range(1, len(data)):
            c = data[i]
            if c == LF:
                return base + i + 1
            if c == CR:
                if i + 1 < len(data):
                    return base + i + 1 + (data[i + 1] == LF)
                nxt = f.read(1)
                return base + i + 1 + (nxt == b"\n")
            if data[i - 1] == CR:  # a bare CR before this byte ended a line
                return base + i
        base += len(chunk)
        prev = chunk[-1:]
    return size


def even_block_bytes(data_bytes: int, block_bytes: int, slots: int) -> int:
    """At most ``block_bytes``, so that ``data_bytes`` make a multiple of ``slots`` blocks (the tasks a
    cluster runs at once) of about equal size: on 2 slots, 11.1 blocks of 64 MiB take 6 rounds of
    the slowest slot, 12 blocks of 59 MiB take 5.6."""
    blocks = -(-data_bytes // block_bytes)
    if blocks <= 1 or slots <= 1:
        return block_bytes
    return -(-data_bytes // (-(-blocks // slots) * slots))


def naive_blocks(path: str, header: Header, block_bytes: int) -> list[Block]:
    """Blocks of about ``block_bytes`` split at line starts (not yet at record boundaries); ``first_line`` unknown (0)."""
    start, size = header.data_offset, header.size
    if size - start <= block_bytes:
        return [Block(start, size - start, header.first_line)]
    cuts = [start]
    with open(path, "rb") as f:
        pos = start + block_bytes
        while pos < size:
            cut = _next_line_start(f, pos, size)
            if cut >= size:
                break
            if cut > cuts[-1]:
                cuts.append(cut)
            pos = cut + block_bytes
    cuts.append(size)
    return [Block(a, b - a, 0) for a, b in itertools.pairwise(cuts)]


@dataclass(frozen=True)
class BlockLines:
    """What the planner needs of a naive block: its line count and its non-simple lines (index, file
    offset): all of them (``complete``), or none when only its tail was looked at (see :func:`survey_block`)."""

    lines: int
    nonsimple: list[tuple[int, int]]
    complete: bool = True


def survey_block(path: str, block: Block, fmt: FileFormat) -> BlockLines:
    """Count a block's physical lines and find the lines that may open a record running past its end (runs on the cluster).

    Such a record starts at a non-simple line within :data:`RECORD_WINDOW` bytes of the block's
    end (a longer record is its first line alone). So in a block of LF or CRLF line ends longer than
    that window only the lines starting in its last window are pre-scanned: when none is non-simple, the
    block ends at a record boundary and the parse finds the block's non-simple lines itself (one
    quote pre-scan of the bytes, not two). Otherwise (one is, bare CR line ends, a short block) every
    line is surveyed and the planner moves the boundary past the record (:func:`plan_blocks`).
    """
    import numpy as np

    buf = read_array(path, block.offset, block.length)
    tail = len(buf) - RECORD_WINDOW
    lf = np.flatnonzero(buf == LF) if tail > 0 else ()
    crs = np.count_nonzero(buf == CR) if tail > 0 else -1
    if crs == 0 or crs > 0 and crs == np.count_nonzero(buf[lf[lf > 0] - 1] == CR):  # no line ends at a bare CR
        lines = len(lf) + int(buf[-1] != LF)
        after = np.searchsorted(lf, tail - 1)
        start = int(lf[after]) + 1 if after < len(lf) else len(buf)  # the first line start at or after ``tail``
        starts, _, _ = line_spans(buf[start:])
        if not len(nonsimple_lines(buf[start:], starts, fmt)):
            return BlockLines(lines, [], complete=False)
    starts, _, _ = line_spans(buf)
    odd = nonsimple_lines(buf, starts, fmt)
    return BlockLines(len(starts), [(int(i), block.offset + int(starts[i])) for i in odd])


def plan_blocks(path: str, header: Header, dataset: Dataset, block_bytes: int, survey) -> list[Block]:
    """Split the file's data into blocks of whole records, each knowing its first physical line.

    ``survey(blocks) -> [BlockLines]`` runs :func:`survey_block` over the naive blocks (in
    parallel on the engine's cluster). Then only the non-simple lines are read here: a record
    spanning a naive boundary moves that boundary to the record's end.
    """
    if dataset.whole_file or header.size - header.data_offset <= block_bytes:
        return [Block(header.data_offset, header.size - header.data_offset, header.first_line)]
    naive = naive_blocks(path, header, block_bytes)
    if len(naive) == 1:
        return [Block(naive[0].offset, naive[0].length, header.first_line)]
    surveys = survey(naive)
    firsts, line = [], header.first_line
    for s in surveys:
        firsts.append(line)
        line += s.lines
    bounds = _move_boundaries(path, header, dataset, naive, surveys, firsts)
    offsets = [offset for s in surveys for _, offset in s.nonsimple] if all(s.complete for s in surveys) else None
    return _blocks_from_bounds(bounds, header.size, offsets)


def _move_boundaries(path: str, header: Header, dataset: Dataset, naive: list[Block], surveys: list[BlockLines],
                     firsts: list[int]) -> list[tuple[int, int]]:
    """(offset, first line) of each block start, moved past any multi-line record it falls in."""
    bounds = [(b.offset, first) for b, first in zip(naive, firsts, strict=True)]
    resume = header.data_offset
    window, at = b"", 0  # bytes of the file from ``at``, read again when a record's window is not inside
    with open(path, "rb") as f:
        for s, first in zip(surveys, firsts, strict=True):
            for index, offset in s.nonsimple:
                if offset < resume:
                    continue  # inside a record that started earlier
                if offset < at or offset + RECORD_WINDOW > at + len(window) and at + len(window) < header.size:
                    f.seek(offset)
                    window, at = f.read(8 * RECORD_WINDOW), offset
                record = scan_record(window, dataset.format, offset - at, offset - at + RECORD_WINDOW)
                resume = end = offset + record.length
                if record.lines > 1:
                    bounds = [(end, first + index + record.lines) if offset < b < end else (b, line) for b, line in bounds]
    return bounds


def _blocks_from_bounds(bounds: list[tuple[int, int]], size: int, nonsimple: list[int] | None) -> list[Block]:
    """Blocks between consecutive distinct starts, each with the non-simple line offsets it holds
    (``None``: not all known; each block's parse finds its own)."""
    import bisect

    starts: list[tuple[int, int]] = []
    for start, first in bounds:
        if not starts or start > starts[-1][0]:
            starts.append((start, first))
    blocks = []
    for i, (start, first) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else size
        if end > start:
            mine = None if nonsimple is None else \
                tuple(nonsimple[bisect.bisect_left(nonsimple, start):bisect.bisect_left(nonsimple, end)])
            blocks.append(Block(start, end - start, first, mine))
    return blocks


def read_array(path: str, offset: int, length: int) -> Any:
    """``length`` bytes of ``path`` from ``offset`` (fewer at its end) as a uint8 array: NumPy backs a large
    array with huge pages where the kernel allows, so reading 64 MiB costs about half what a ``bytes`` does."""
    import numpy as np

    buf = np.empty(length, dtype=np.uint8)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        view, got = memoryview(buf), 0
        while got < length:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
    return buf[:got]


def read_block(path: str, block: Block) -> tuple[Any, Any]:
    """The block's bytes as a uint8 array (:func:`read_array`), and a function giving the
    :data:`RECORD_WINDOW` bytes that follow it (``bytes``, read on demand)."""
    data = read_array(path, block.offset, block.length)

    @functools.cache
    def lookahead() -> bytes:
        with open(path, "rb") as f:
            f.seek(block.offset + block.length)
            return f.read(RECORD_WINDOW)

    return data, lookahead
