"""The reader on small files it makes itself: every type, format option and encoding, quoted line
breaks within and across blocks, exact line numbers and raw text of rejects, and a fuzz
comparison with Python's csv module at many block sizes. The engines run these same functions
(see tests/e2e/test_reader_engines.py for the real clusters)."""

from __future__ import annotations

import csv
import io
import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from include.etl.contract import Column, Dataset, FileFormat, on_partition_day, weekday_of, year_of
from include.etl.csvfile import plan_blocks, read_header, survey_block
from include.etl.errors import InputFileError
from include.etl.testing import read_file, rejected

BLOCK_SIZES = (1, 7, 64, 1000, 1 << 26)


# What an engine does, in this process: plan the blocks, parse each, concatenate.
read = read_file
rejects = rejected


def rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def write(tmp_path, text: str | bytes, name: str = "in.csv"):
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def one_column(col: Column, **fmt) -> Dataset:
    return Dataset("things", (Column("id", "integer", required=True), col), format=FileFormat(**fmt))


TYPE_CASES = [
    (Column("v", "integer"), ["7", " -3 ", "+5", "", "NA"], [7, -3, 5, None, None],
     {"1.5": "v is not a whole number", "abc": "v is not a number", "17850.0": "v is written with a decimal point, not as an integer",
      "99999999999999999999": "v is too large for an integer"}),
    (Column("v", "integer", whole_float=True), ["17850.0", "3", "4.00"], [17850, 3, 4],
     {"17850.5": "v is not a whole number"}),
    (Column("v", "integer", thousands=","), ['"2,156,624,900"', "12", '"1,000"'], [2156624900, 12, 1000],
     {'"1,23"': "v is not a number (thousands separator ',' misplaced)"}),
    (Column("v", "float", range=(0, 10)), ["1.5", "1e1", ".5", "3"], [1.5, 10.0, 0.5, 3.0],
     {"x1": "v is not a number", "10.5": "v outside [0, 10]", "-1": "v outside [0, 10]", "inf": "v is not a number"}),
    (Column("v", "decimal", precision=6, scale=2, range=(0, None)), ["1.5", "1234.56", "0.10", "7."],
     [pa.scalar(x, pa.decimal128(6, 2)).as_py() for x in (__import__("decimal").Decimal(s) for s in
                                                          ("1.50", "1234.56", "0.10", "7.00"))],
     {"1.234": "v has more than 2 decimal places", "12345.6": "v does not fit decimal(6,2)",
      "-1": "v must be >= 0", "1e3": "v is not a decimal number"}),
    (Column("v", "boolean", true_values=("yes", "Y"), false_values=("no",)), ["yes", "Y", "NO", "y"],
     [True, True, False, True], {"maybe": "v is not a boolean (yes/Y/no)"}),
    (Column("v", "string", allowed=("M", "F")), ["M", "F", "NA"], ["M", "F", None], {"X": "v not in M/F", "m": "v not in M/F"}),
    (Column("v", "string", required=True), ["a b ", '"x,""y"""'], ["a b ", 'x,"y"'],
     {"NA": "missing required v", '""': "missing required v", "  ": "missing required v"}),
    (Column("v", "date", format="%d/%m/%Y"), ["1/2/2020", "01/02/2020", "29/02/2020"],
     [__import__("datetime").date(2020, 2, 1)] * 2 + [__import__("datetime").date(2020, 2, 29)],
     {"29/02/2021": "v is not a date of the form %d/%m/%Y", "2020-02-01": "v is not a date of the form %d/%m/%Y",
      "32/1/2020": "v is not a date of the form %d/%m/%Y"}),
    (Column("v", "timestamp", format="%Y-%m-%d %H:%M:%S"), ["2010-12-01 08:26:00", "2010-12-1 8:26:00"],
     [__import__("datetime").datetime(2010, 12, 1, 8, 26)] * 2,
     {"2010-12-01 25:00:00": "v is not a timestamp of the form %Y-%m-%d %H:%M:%S", "2010-12-01": (
         "v is not a timestamp of the form %Y-%m-%d %H:%M:%S")}),
]


@pytest.mark.parametrize(("col", "good", "expected", "bad"), TYPE_CASES, ids=lambda v: getattr(v, "type", None))
def test_each_type_accepts_and_rejects_with_reasons(tmp_path, col, good, expected, bad):
    lines = [f"{i},{v}" for i, v in enumerate(good, 1)] + [f"{100 + i},{v}" for i, v in enumerate(bad)]
    path = write(tmp_path, "id,v\n" + "\n".join(lines) + "\n")
    table = read(path, one_column(col))
    ok = table.filter(pc.is_null(table["_reason"]))
    assert ok["v"].to_pylist() == expected
    assert rejects(table) == [(2 + len(good) + i, reason, f"{100 + i},{v}") for i, (v, reason) in enumerate(bad.items())]
    assert table.num_rows == len(good) + len(bad)


def test_null_tokens_are_declared(tmp_path):
    path = write(tmp_path, "id,v\n1,NA\n2,\n3,-\n")
    table = read(path, one_column(Column("v", "integer"), null_values=("-", "")))
    assert rejects(table) == [(2, "v is not a number", "1,NA")]
    assert table["v"].to_pylist() == [None, None, None]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252"])
def test_encodings(tmp_path, encoding):
    names = {"utf-8": "Zoë £5 ✓", "utf-8-sig": "Zoë £5 ✓", "latin-1": "Zoë £5", "cp1252": "Zoë €5 “q”"}[encoding]
    path = write(tmp_path, f"id,v\n1,{names}\n2,plain\n".encode(encoding))
    table = read(path, one_column(Column("v"), encoding=encoding))
    assert rejects(table) == []
    assert table["v"].to_pylist() == [names, "plain"]
    # With a record the csv module reads (a quoted line break) and an empty line: pyarrow gets the rest.
    path = write(tmp_path, f'id,v\n1,{names}\n\n2,"{names}\nbreak"\n3,{names}\n'.encode(encoding), "slow.csv")
    table = read(path, one_column(Column("v"), encoding=encoding))
    assert rejects(table) == []
    assert table["v"].to_pylist() == [names, f"{names}\nbreak", names]
    assert table["_line"].to_pylist() == [2, 4, 6]


def test_invalid_bytes_reject_only_their_record_and_a_valid_replacement_character_is_kept(tmp_path):
    data = "id,v\n1,ok\n2,bad \xff\xfe here\n3,\ufffd is a real character\n4,\"multi\nline \xff\"\n5,end\n"
    path = write(tmp_path, data.encode("utf-8").replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe").replace(b"\xc3\xbf", b"\xff"))
    table = read(path, one_column(Column("v")))
    assert [(line, reason) for line, reason, _ in rejects(table)] == [(3, "not valid UTF-8"), (5, "not valid UTF-8")]
    assert rejects(table)[0][2] == "2,bad \ufffd\ufffd here"  # the raw text, invalid bytes marked
    assert table.filter(pc.is_null(table["_reason"]))["v"].to_pylist() == ["ok", "\ufffd is a real character", "end"]
    # A block of more than 64 KiB is validated at once by Arrow, then line by line where it fails.
    lines = [f"{i},Zoë {i}".encode() for i in range(20000)]
    lines[777] = b"777,\xed\xa0\x80 a surrogate"  # invalid in UTF-8 (as Python decodes it)
    lines[15000] = b"15000,\xc0\x80 overlong"
    table = read(write(tmp_path, b"id,v\n" + b"\n".join(lines) + b"\n", "big.csv"), one_column(Column("v")))
    assert [(line, reason) for line, reason, _ in rejects(table)] == [(779, "not valid UTF-8"), (15002, "not valid UTF-8")]
    assert table.num_rows == 20000
    cp = write(tmp_path, b"id,v\n1,\x81\n2,\x80\n", "cp.csv")  # 0x81 is undefined in cp1252
    table = read(cp, one_column(Column("v"), encoding="cp1252"))
    assert [(line, reason) for line, reason, _ in rejects(table)] == [(2, "not valid cp1252")]


@pytest.mark.parametrize("codec", ["utf-8", "cp1252", "ascii"])
@pytest.mark.parametrize("window", [1, 7, 64, 1 << 20])
def test_invalid_lines_are_the_lines_that_do_not_decode_alone(monkeypatch, codec, window):
    import numpy as np

    from include.etl import reader
    from include.etl.csvfile import line_spans

    monkeypatch.setattr(reader, "DECODE_WINDOW", window)
    rng = random.Random(window)
    pieces = [b"a", b"1,", "é".encode(), b"\xc3", b"\xa9", b"\x81", b"\xff", b"\n", b"\r\n", b"\r", "€".encode()]
    for _ in range(60):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 80)))
        starts, ends, _ = line_spans(np.frombuffer(data, dtype=np.uint8))
        simple = np.array([rng.random() < 0.8 for _ in starts], dtype=bool)
        expected = []
        for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
            try:
                data[a:b].decode(codec)
            except UnicodeDecodeError:
                if simple[i]:
                    expected.append(i)
        assert reader._invalid_lines(data, starts, simple, codec) == expected, data


def test_header_names_are_trimmed_extra_columns_named_and_bad_headers_fail(tmp_path):
    ds = Dataset("suicides", (Column("country"), Column("gdp_for_year ($)", "integer", thousands=",")))
    path = write(tmp_path, '\ufeffcountry, gdp_for_year ($) ,year\nAlbania,"2,156,624,900",1987\n')
    header = read_header(str(path), ds)
    assert header.names == ["country", "gdp_for_year ($)", "year"]
    assert header.extra == ["year"]
    assert rows(read(path, ds))[0]["gdp_for_year ($)"] == 2156624900
    cases = {
        "missing.csv": (None, "file does not exist"),
        "empty.csv": (b"", "file is empty (no header line)"),
        "blank.csv": (b"\n\n", "file is empty (no header line)"),
        "cols.csv": (b"country\nAlbania\n", "header is missing required columns ['gdp_for_year ($)']; found columns ['country']"),
        "semi.csv": (b"country;gdp_for_year ($)\n", "the header looks ';'-delimited, expected ','"),
        "twice.csv": (b"country,gdp_for_year ($),country\n", "header names declared columns more than once: ['country']"),
    }
    for name, (content, message) in cases.items():
        target = tmp_path / name
        if content is not None:
            target.write_bytes(content)
        with pytest.raises(InputFileError) as err:
            read_header(str(target), ds)
        assert str(err.value).startswith(f"suicides input {target}: ")
        assert message in str(err.value)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
def test_quoted_line_breaks_are_one_record_with_exact_lines_after_them(tmp_path, newline, block_bytes):
    nl = newline
    text = nl.join([
        "ID,Name,Age",
        '1,"Christine' + nl + 'Jacoba Aaftink",21',
        '2,"two' + nl + nl + 'blank lines inside",22',
        '3,plain,abc',
        '4,"a ""quoted"", name' + nl + 'with a break",-5',
        "5,RECORD 7\" SINGLE SIZE ,30",
        "6,too,many,fields",
        "7,last,40",
    ]) + nl
    ds = Dataset("athletes", (Column("ID", "integer", required=True), Column("Name"), Column("Age", "integer", range=(0, 120))))
    table = read(write(tmp_path, text), ds, block_bytes=block_bytes)
    assert table.num_rows == 7  # records, not physical lines
    assert table["_line"].to_pylist() == [2, 4, 7, 8, 10, 11, 12]
    assert table["Name"].to_pylist()[:2] == [f"Christine{nl}Jacoba Aaftink", f"two{nl}{nl}blank lines inside"]
    assert table["Name"].to_pylist()[4] == 'RECORD 7" SINGLE SIZE '
    assert rejects(table) == [
        (7, "Age is not a number", "3,plain,abc"),
        (8, "Age outside [0, 120]", f'4,"a ""quoted"", name{nl}with a break",-5'),
        (11, "expected 3 fields, found 4", "6,too,many,fields"),
    ]


def test_a_quote_never_closed_rejects_its_line_alone(tmp_path):
    lines = ["id,v", '1,"never closed', "2,b", "3,c", '4,"x"y', "5,e"]
    ds = one_column(Column("v"), max_record_lines=2)
    for block_bytes in BLOCK_SIZES:
        table = read(write(tmp_path, "\n".join(lines) + "\n"), ds, block_bytes=block_bytes)
        assert rejects(table) == [
            (2, "malformed CSV line (a quoted field is not closed within 2 lines)", '1,"never closed'),
            (5, "malformed CSV line (',' expected after '\"')", '4,"x"y'),
        ], block_bytes
        assert table.num_rows == 5
    table = read(write(tmp_path, 'id,v\n1,a\n2,"open at the end\n'), ds)
    assert rejects(table) == [(3, "malformed CSV line (a quoted field is not closed)", '2,"open at the end')]


def test_rules_and_keys(tmp_path):
    ds = Dataset(
        "trade",
        (Column("Year", "integer"), Column("Date", "date", format="%d/%m/%Y"), Column("Weekday"),
         Column("When", "timestamp", format="%Y-%m-%d %H:%M")),
        rules=(year_of("Year", "Date"), weekday_of("Weekday", "Date"), on_partition_day("When")),
        key=("Date",),
    )
    text = ("Year,Date,Weekday,When\n"
            "2015,01/01/2015,Thursday,2024-07-07 10:00\n"
            "2016,02/01/2015,Friday,2024-07-07 10:00\n"
            "2015,03/01/2015,Monday,2024-07-07 10:00\n"
            "2015,04/01/2015,Sunday,2024-07-08 00:00\n"
            "2015,01/01/2015,Thursday,2024-07-07 11:00\n"
            "2015,05/01/2015,Monday,\n")
    table = read(write(tmp_path, text), ds, ds="2024-07-07")
    assert [(line, reason) for line, reason, _ in rejects(table)] == [
        (3, "breaks rule: Year is the year of Date"),
        (4, "breaks rule: Weekday is the day name of Date"),
        (5, "breaks rule: When falls on the partition's day"),
        (6, "duplicate key (Date)"),
    ]
    assert table.num_rows == 6


def _reference(text: str, n_fields: int) -> list[tuple[int, list[str] | None]]:
    """(start line, fields or None for a wrong field count) of every record, by the csv module."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out, line = [], 0
    next(reader)
    line = reader.line_num
    for fields in reader:
        start, line = line + 1, reader.line_num
        if not fields:
            continue
        out.append((start, fields if len(fields) == n_fields else None))
    return out


def _random_field(rng: random.Random) -> str:
    pieces = ["a", "b", " ", ",", '"', "\n", "\r\n", "\r", "é", "x" * rng.randint(1, 30)]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))


def _random_file(rng: random.Random, rows: int, newline: str) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=newline, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["a", "b", "c"])
    for _ in range(rows):
        kind = rng.random()
        if kind < 0.1:  # a bare quote inside an unquoted field, as in the retail data
            out.write(f'x{rng.randint(0, 9)}" inch,plain,{rng.randint(0, 99)}{newline}')
        elif kind < 0.15:
            writer.writerow([_random_field(rng) for _ in range(rng.choice((2, 4)))])  # wrong field count
        else:
            writer.writerow([_random_field(rng) for _ in range(3)])
    return out.getvalue()


@pytest.mark.parametrize("seed", range(6))
def test_fuzz_same_records_as_the_csv_module_at_every_block_size(tmp_path, seed):
    rng = random.Random(seed)
    text = _random_file(rng, 400, rng.choice(["\n", "\r\n", "\r"]))
    path = write(tmp_path, text)
    ds = Dataset("fuzz", (Column("a"), Column("b"), Column("c")), format=FileFormat(null_values=()))
    expected = _reference(text, 3)
    for block_bytes in (50, 333, 4096, 1 << 26):
        table = read(path, ds, block_bytes=block_bytes)
        got = [(r["_line"], None if r["_reason"] else [r["a"], r["b"], r["c"]]) for r in rows(table)]
        assert got == expected, f"seed {seed}, block_bytes {block_bytes}"
        for r in rows(table):
            if r["_reason"]:
                assert r["_reason"].startswith("expected 3 fields"), r
                assert next(csv.reader(io.StringIO(r["_raw"], newline=""))) is not None


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_blocks_longer_than_the_record_window(tmp_path, monkeypatch, seed):
    """Blocks longer than the record window: the survey pre-scans only a block's tail (LF files)
    unless a record may run past its end; the records and line numbers stay the csv module's."""
    import pyarrow as pa

    from include.etl import csvfile
    from include.etl.reader import parse_block

    monkeypatch.setattr(csvfile, "RECORD_WINDOW", 1024)  # blocks of a few KiB exercise it
    rng = random.Random(seed)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["a", "b", "c"])
    pieces = ["a", " ", ",", '"', "\n", "\n", "é"]  # LF line ends only (a CR means a whole survey)
    for i in range(3000):  # mostly one-line records, a few with quoted line breaks or stray quotes
        if rng.random() < 0.04:
            writer.writerow(["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
                             for _ in range(rng.choice((3, 3, 3, 2)))])
        else:
            writer.writerow([str(i), "x" * rng.randint(0, 40), f'"{i}"' if rng.random() < 0.1 else "y"])
    text = out.getvalue()
    path = str(write(tmp_path, text))
    ds = Dataset("fuzz", (Column("a"), Column("b"), Column("c")), format=FileFormat(null_values=()))
    expected = _reference(text, 3)
    kinds = set()
    for block_bytes in range(1100, 9000, 523):
        def survey(naive):
            found = [survey_block(path, b, ds.format) for b in naive]
            kinds.update(s.complete for s in found)
            return found

        header = read_header(path, ds)
        blocks = plan_blocks(path, header, ds, block_bytes, survey)
        table = pa.concat_tables([parse_block(path, b, header, ds) for b in blocks])
        got = [(r["_line"], None if r["_reason"] else [r["a"], r["b"], r["c"]]) for r in rows(table)]
        assert got == expected, f"seed {seed}, block_bytes {block_bytes}"
    assert kinds == {True, False}  # both kinds of survey ran


def test_a_record_across_the_end_of_a_long_block_is_found_from_its_tail(tmp_path, monkeypatch):
    from include.etl import csvfile

    monkeypatch.setattr(csvfile, "RECORD_WINDOW", 64)
    body = "".join(f"{i},plain\n" for i in range(100))
    text = "a,b\n" + body + '100,"one\ntwo\nthree"\n' + body
    path = str(write(tmp_path, text))
    ds = Dataset("t", (Column("a", "integer"), Column("b")))
    header = read_header(path, ds)
    cut = text.index('"one') - header.data_offset + 5  # the naive boundary falls inside the quoted field
    data = text.encode()
    surveys = [survey_block(path, b, ds.format) for b in csvfile.naive_blocks(path, header, cut)]
    assert len(surveys) == 2
    # The first block's tail holds the record's first line: that block is surveyed whole; the others by their tails.
    assert surveys[0].complete and surveys[0].nonsimple == [(100, data.index(b'100,"one'))]
    assert not surveys[1].complete and surveys[1].lines == 102
    blocks = plan_blocks(path, header, ds, cut, lambda naive: [survey_block(path, b, ds.format) for b in naive])
    assert blocks[1].offset == data.index(b'three"\n') + 7 and blocks[1].first_line == 105
    assert all(b.nonsimple is None for b in blocks)  # not all known: each parse finds its own
    table = read(path, ds, block_bytes=cut)
    assert table.num_rows == 201 and rejects(table) == []
    assert table.column("b").to_pylist()[100] == "one\ntwo\nthree"


def test_even_blocks_fill_every_slot_of_the_cluster(tmp_path):
    from include.etl.csvfile import even_block_bytes, naive_blocks

    mib = 2**20
    assert even_block_bytes(int(11.1 * 64 * mib), 64 * mib, 2) == -(-int(11.1 * 64 * mib) // 12)  # 12 blocks, not 11.1
    assert even_block_bytes(int(11.1 * 64 * mib), 64 * mib, 1) == 64 * mib
    assert even_block_bytes(100, 64 * mib, 2) == 64 * mib  # one block: unchanged
    assert even_block_bytes(128 * mib, 64 * mib, 2) == 64 * mib  # already a multiple
    text = "a,b\n" + "".join(f"{i},{'x' * (i % 13)}\n" for i in range(5000))
    path = write(tmp_path, text)
    ds = Dataset("t", (Column("a", "integer"), Column("b")))
    header = read_header(str(path), ds)
    for slots in (2, 3, 4):
        size = header.size - header.data_offset
        blocks = naive_blocks(str(path), header, even_block_bytes(size, 10_000, slots))
        assert len(blocks) % slots == 0 and len(blocks) >= size // 10_000, (slots, len(blocks))
        assert max(b.length for b in blocks) - min(b.length for b in blocks) < 200


def test_blocks_split_only_at_record_boundaries(tmp_path):
    text = "a,b\n" + "".join(f'{i},"line one\nline two {i}"\n' for i in range(200))
    path = write(tmp_path, text)
    ds = Dataset("t", (Column("a", "integer"), Column("b")))
    header = read_header(str(path), ds)
    blocks = plan_blocks(str(path), header, ds, 100, lambda naive: [survey_block(str(path), b, ds.format) for b in naive])
    assert len(blocks) > 10
    data = path.read_bytes()
    for b in blocks:
        assert data[b.offset:].startswith(b"%d," % int(data[b.offset:].split(b",")[0]))
        assert data.count(b"\n", 0, b.offset) + 1 == b.first_line
    assert sum(b.length for b in blocks) == len(data) - header.data_offset


def _nonsimple_reference(data: bytes, fmt: FileFormat) -> list[int]:
    """nonsimple_lines' definition, one line at a time: a NUL, an odd quote count, or a quote that
    opens a quoted run after a byte that is no field boundary (or closes one before such a byte)."""
    import re

    boundary = {ord(fmt.delimiter), ord(fmt.quote), 10, 13}
    out, pos = [], 0
    for index, line in enumerate(re.findall(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", data)):
        quotes = [pos + i for i, b in enumerate(line) if b == ord(fmt.quote)]
        misplaced = any(
            (q > 0 and data[q - 1] not in boundary) if k % 2 == 0 else (q + 1 < len(data) and data[q + 1] not in boundary)
            for k, q in enumerate(quotes))
        if b"\0" in line or len(quotes) % 2 or misplaced:
            out.append(index)
        pos += len(line)
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("few", [256, -1])  # the quotes checked run by run, or numbered within each line
@pytest.mark.parametrize("chunk", [1 << 21, 1, 16])  # bytes of lines scanned at once
def test_nonsimple_lines_match_their_definition(monkeypatch, seed, few, chunk):
    import numpy as np

    from include.etl import csvfile

    monkeypatch.setattr(csvfile, "FEW_ODD_LINES", few)
    monkeypatch.setattr(csvfile, "PRESCAN_BYTES", chunk)
    rng = random.Random(seed)
    fmt = FileFormat()
    pieces = [b"a", b"bc", b",", b",", b'"', b'"', b'""', b"\n", b"\r\n", b"\r", b"\0"]
    for _ in range(40):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 120)))
        buf = np.frombuffer(data, dtype=np.uint8)
        starts, _, _ = csvfile.line_spans(buf)
        got = csvfile.nonsimple_lines(buf, starts, fmt).tolist()
        assert got == _nonsimple_reference(data, fmt), data


@pytest.mark.parametrize("seed", range(4))
def test_scan_record_in_a_window_reads_as_on_its_slice(seed):
    """scan_record(window, fmt, start, end) takes its lines from the window one at a time: the same
    record as scan_record(window[start:end], fmt), which splits the slice (the old way)."""
    from include.etl.csvfile import Record, scan_record

    rng = random.Random(seed)
    fmt = FileFormat(max_record_lines=3)
    three = b'1,"a\nb\r\nc"\n2,x\n'
    assert scan_record(three, fmt) == scan_record(b"z" + three, fmt, 1) == Record(3, 11, ["1", "a\nb\r\nc"], None)
    assert scan_record(b'1,"a\nb\nc\nd"\n', fmt) == \
        Record(1, 5, None, "malformed CSV line (a quoted field is not closed within 3 lines)")
    assert scan_record(three, fmt, 0, 8) == Record(1, 5, None, "malformed CSV line (a quoted field is not closed)")
    pieces = [b"a", b"bc", b",", b'"', b'""', b"\n", b"\r\n", b"\r", b"\xff"]
    for _ in range(200):
        window = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        start = rng.randint(0, len(window))
        end = rng.randint(start, len(window) + 2)
        assert scan_record(window, fmt, start, end) == scan_record(window[start:end], fmt), (window, start, end)
