"""The fast block parser (include/etl/parse.py::parse_block) against the careful path.

``parse_block`` must return exactly what the careful path (decode, ``tokenize``,
``parse_frame``) returns for the same bytes: same rows, typed values, reasons, raw text and
line numbers. These tests check that on blocks that take the fast path (asserted, so the
comparison is not vacuous) and on blocks that must fall back.
"""

from __future__ import annotations

import random

import pandas as pd
import pytest

from include.etl.engines.spark import parse_partition
from include.etl.parse import _careful_block, _fast_block, _typed, _typed_arrow, parse_block
from include.etl.schemas import ATHLETES, REGIONS, VENUES, Column

HEADER = '"ID","Name","Sex","Age","Height","Weight","Team","NOC","Games","Year","Season","City","Sport","Event","Medal"'
GOOD = ('"{id}","Ann ""Annie"" O\'Neil, Jr.","F",24,170,60.5,"China","CHN","1992 Summer",1992,"Summer","Barcelona",'
        '"Judo","Judo Women\'s Lightweight",NA')
VALUE_ERRORS = {  # line -> reason: rows that split into 15 fields but fail a check
    GOOD.format(id=104).replace(",24,", ",abc,"): "Age is not a number",
    GOOD.format(id=105).replace('"F"', '"X"'): "Sex not in M/F",
    GOOD.format(id=106).replace('"Summer","Barcelona"', '"Spring","Barcelona"'): "Season not in Summer/Winter",
    GOOD.format(id=107).replace(",NA", ',"Platinum"'): "Medal not in Gold/Silver/Bronze",
    GOOD.format(id=108).replace(",24,", ",-1,"): "Age outside [0, 120]",
    GOOD.format(id=109).replace(",24,", ",24.5,"): "Age is not a whole number",
    GOOD.format(id="NA"): "missing required ID",
    GOOD.format(id=111).replace(',1992,"Summer"', ',NA,"Summer"'): "missing required Year",
    GOOD.format(id=112).replace('"CHN"', '""'): "missing required NOC",
    GOOD.format(id=113).replace(",170,", ",301,"): "Height outside [0, 300]",
}
FIELD_COUNT_ERRORS = {
    '"101","Too Few","M",24,170': "expected 15 fields, found 5",
    GOOD.format(id=102) + ',"extra"': "expected 15 fields, found 16",
    '""': "expected 15 fields, found 1",
}
SOURCE = "/data/athlete_events.csv"


def both(data: bytes, schema=ATHLETES, first_line=1, skip_header=True, fast=True) -> pd.DataFrame:
    """parse_block's output, checked equal to the careful path's; ``fast``: the fast path must (not) apply."""
    header = list(schema.names)
    got = parse_block(data, schema, SOURCE, header, first_line, skip_header)
    expected = _careful_block(data, schema, SOURCE, header, first_line, skip_header)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert (_fast_block(data, schema, SOURCE, header, first_line, skip_header) is not None) is fast
    return got


def lines_to_bytes(lines: list[str], sep: str = "\r\n") -> bytes:
    return (sep.join(lines) + sep).encode()


@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r"])
def test_good_block_takes_the_fast_path_with_exact_values(sep):
    lines = [HEADER, *(GOOD.format(id=i) for i in range(1, 6)), GOOD.format(id=6).replace(",24,", ",NA,")]
    out = both(lines_to_bytes(lines, sep))
    assert out["_reason"].isna().all() and out["_raw"].isna().all()
    assert out["_line"].tolist() == [2, 3, 4, 5, 6, 7]
    assert out.loc[0, "Name"] == "Ann \"Annie\" O'Neil, Jr." and out.loc[0, "Weight"] == 60.5
    assert pd.isna(out.loc[5, "Age"]) and pd.isna(out.loc[0, "Medal"])
    assert [str(t) for t in out.dtypes[:4]] == ["Int64", "string", "string", "Int64"]


def test_value_errors_alone_keep_the_fast_path_and_reserialised_raw():
    lines = [HEADER, GOOD.format(id=1), *VALUE_ERRORS, GOOD.format(id=2)]
    out = both(lines_to_bytes(lines))
    rejected = out[out["_reason"].notna()]
    assert rejected["_reason"].tolist() == list(VALUE_ERRORS.values())
    assert rejected["_line"].tolist() == list(range(3, 3 + len(VALUE_ERRORS)))
    # No tokenizer error in the block: rejects carry their fields as CSV, as parse_frame writes them.
    assert rejected["_raw"].iloc[0].startswith('104,"Ann ""Annie"" O\'Neil, Jr.",F,abc,170,')


def test_every_bad_row_kind_in_one_block_goes_fast_and_matches_the_careful_path():
    bad = {**FIELD_COUNT_ERRORS, **VALUE_ERRORS}
    lines = [HEADER, GOOD.format(id=1), "", *bad, "   ", GOOD.format(id=2)]
    out = both(lines_to_bytes(lines))
    rejected = out[out["_reason"].notna()]
    assert rejected["_reason"].tolist() == list(bad.values())
    assert rejected["_raw"].tolist() == list(bad)  # the original line text
    # the empty line 3 and the whitespace-only line after the bad ones are skipped, yet counted
    assert rejected["_line"].tolist() == list(range(4, 4 + len(bad)))
    assert out["_line"].tolist()[-1] == len(lines)
    assert len(out) == 2 + len(bad)


MALFORMED = "malformed CSV line (',' expected after '\"')"


@pytest.mark.parametrize(
    ("line", "team", "reason"),
    [
        ('"103","Unterminated,"M",24,170,60,"China","CHN","1992 Summer",1992,"Summer","Barcelona","Judo","Judo",NA',
         None, MALFORMED),
        (GOOD.format(id=5).replace('"China"', '"China'), None, MALFORMED),  # the quote runs to the next one
        # pandas' C parser reads these leniently when the rest of the block is fine (as before): kept so
        (GOOD.format(id=5).replace('"China"', '"Chi"na"'), 'China"', None),
        (GOOD.format(id=5).replace('"China"', 'Chi"na"'), 'Chi"na"', None),
    ],
)
def test_misplaced_quotes_fall_back_to_the_careful_path(line, team, reason):
    out = both(lines_to_bytes([HEADER, GOOD.format(id=1), line, GOOD.format(id=2)]), fast=False)
    row = out.iloc[1].where(out.iloc[1].notna(), None)
    assert (row["Team"], row["_reason"], row["_raw"]) == (team, reason, line if reason else None)


@pytest.mark.parametrize(
    "poison",
    [b"Ann\xff\xfeie", "Ann\ufffdie".encode(), b"Ann\x00ie", b"Ann\x0bie", b"Ann\x0cie", b"Ann\x1cie",
     "Ann\u2028ie".encode(), "Ann\u0085ie".encode()],
)
def test_bytes_the_careful_path_treats_specially_fall_back(poison):
    data = lines_to_bytes([HEADER, GOOD.format(id=1), GOOD.format(id=2)]).replace(b"Annie", poison, 1)
    out = both(data, fast=False)
    assert len(out) >= 2


def test_a_block_starting_with_a_bom_or_holding_only_the_header_falls_back():
    both(b"\xef\xbb\xbf" + lines_to_bytes([GOOD.format(id=1)]), first_line=10, skip_header=False, fast=False)
    assert len(both(lines_to_bytes([HEADER]), fast=False)) == 0
    assert len(both(HEADER.encode(), fast=False)) == 0


def test_short_rows_alone_are_rejected_not_padded():
    # pandas' C parser pads a short row with empty fields; a block whose only problem is one
    # short row must still reject it, on both paths.
    out = both(lines_to_bytes([HEADER, GOOD.format(id=1), GOOD.format(id=2).rsplit(",", 1)[0]]))
    assert out["_reason"].tolist()[1] == "expected 15 fields, found 14"
    # ... and when every line has one field too many, pandas would make the first column an index.
    out = both(lines_to_bytes([HEADER, GOOD.format(id=1) + ",x", GOOD.format(id=2) + ",y"]))
    assert out["_reason"].tolist() == ["expected 15 fields, found 16"] * 2


def test_line_numbers_without_header_and_unknown_line_numbers():
    data = lines_to_bytes(["", GOOD.format(id=1), GOOD.format(id=2).replace(",24,", ",x,")], "\n")
    out = both(data, first_line=1000, skip_header=False)
    assert out["_line"].tolist() == [1001, 1002] and out["_reason"].tolist()[1] == "Age is not a number"
    out = both(data, first_line=None, skip_header=False)
    assert out["_line"].isna().all()


def test_reference_tables_duplicates_and_bare_cr():
    data = b'NOC,region,notes\rAFG,Afghanistan,\rAFG,Again,dup\r,Nowhere,\rSGP,Singapore,"a ""quoted"" note"'
    out = both(data, REGIONS)
    assert out["_reason"].tolist()[1:3] == ["duplicate key (NOC)", "missing required NOC"]
    assert out["_line"].tolist() == [2, 3, 4, 5] and out.loc[3, "notes"] == 'a "quoted" note'
    venues = b"Year,Season,City,lon,lat\n1992,Summer,Barcelona,2.17,41.38\n1900,Summer,Paris,north,48.85\n"
    assert both(venues, VENUES)["_reason"].tolist()[1] == "lon is not a number"


NUMBERS = ["0", "7", "007", "24", "24.0", "24.5", "-1", "+5", "5.", ".5", "+.5", "1800", "2200", "2200.5", "-180",
           "180.000001", "-12.75", "0.1", "0.3000000000004", "123456789012345", "9999999999999.9", "1.25", "  42 ",
           "NA", "", " NA "]
EXOTIC = ["1e3", "1E5", "inf", "-inf", "nan", "NaN", "Infinity", "1234567890123456", "9007199254740993", "abc",
          "1_0", "0x10", ".", "-", "1.2.3", "\u0661", "0.30000000000000004", "99999999999999.9"]


@pytest.mark.parametrize("column", [Column("Age", "int", range=(0, 120)), Column("ID", "int", required=True),
                                    Column("lon", "float", range=(-180, 180)), Column("Height", "float")])
def test_arrow_typing_equals_pandas_typing(column):
    import pyarrow as pa

    rng = random.Random(7)
    values = [rng.choice(NUMBERS) for _ in range(2000)] + NUMBERS
    values += [f"{rng.uniform(-500, 500):.{rng.randint(0, 6)}f}" for _ in range(2000)]
    values = [v for v in values if not (v.startswith("-") and float(v) == 0)]  # -0: see below
    fast = _typed_arrow(column, pa.array(values, pa.string()))
    assert fast is not None, "plain decimals must take the Arrow typing"
    typed, reasons = _typed(column, pd.Series(values, dtype="string[pyarrow]"))
    pd.testing.assert_extension_array_equal(fast[0], typed.array)
    expected = typed.index.to_series().map(lambda i: None)
    for mask, text in fast[1]:
        expected = expected.where(expected.notna() | ~pd.Series(mask), text)
    assert expected.tolist() == reasons.where(reasons.notna(), None).tolist()
    # -0 is an int or a float for pandas depending on the rest of the column: for floats, pandas decides
    for exotic in EXOTIC + (["-0", "-0.", "-0.000"] if column.type == "float" else []):
        assert _typed_arrow(column, pa.array([*values[:10], exotic], pa.string())) is None, exotic


FIELDS = ["1", "24", " 24 ", "24.5", "abc", "NA", "", " NA ", "1e3", "-0", "+5", "5.", ".5", "121", "-1", "M", "F",
          "X", "Summer", "Winter", "Gold", "Platinum", "a,b", 'a"b', "Ann \u00e9", "\u00a0", "180.5", "1800", "  "]


def _random_block(rng: random.Random, schema) -> bytes:
    n = len(schema.names)

    def field():
        f = rng.choice(FIELDS)
        return f if rng.random() < 0.5 and '"' not in f and "," not in f else '"' + f.replace('"', '""') + '"'

    lines = [",".join(f'"{c}"' for c in schema.names)]
    for _ in range(rng.randrange(1, 25)):
        r = rng.random()
        count = n if r < 0.85 else rng.choice([1, 2, n - 1, n + 1])
        line = ",".join(field() for _ in range(count))
        if 0.85 <= r < 0.9:
            line = rng.choice(["", "   ", '""'])
        elif 0.9 <= r < 0.93:
            line = line.replace('",', '"x,', 1)  # a misplaced quote: careful path
        lines.append(line)
    sep = rng.choice(["\n", "\r\n", "\r"])
    return (sep.join(lines) + (sep if rng.random() < 0.8 else "")).encode()


def test_random_blocks_equal_the_careful_path():
    rng = random.Random(2026)
    fast_clean = fast_with_errors = careful = 0
    for _ in range(80):
        schema = rng.choice([ATHLETES, REGIONS, VENUES])
        data = _random_block(rng, schema)
        header = list(schema.names)
        for first_line, skip in ((1, True), (None, True), (40, False)):
            got = _fast_block(data, schema, SOURCE, header, first_line, skip)  # what parse_block returns, if not None
            if got is None:
                careful += 1
                continue
            expected = _careful_block(data, schema, SOURCE, header, first_line, skip)
            pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=repr(data))
            if got["_reason"].str.startswith("expected").any():
                fast_with_errors += 1
            else:
                fast_clean += 1
    assert fast_clean > 30 and fast_with_errors > 30 and careful > 10, (fast_clean, fast_with_errors, careful)


def test_spark_partition_parse_equals_the_careful_path_of_the_same_lines():
    lines = [HEADER, GOOD.format(id=1), *FIELD_COUNT_ERRORS, *VALUE_ERRORS, GOOD.format(id=2)]
    values = [line.encode() for line in lines] + [GOOD.format(id=3).encode().replace(b"Annie", b"Ann\xffie")]
    batches = [pd.DataFrame({"value": values[:5]}), pd.DataFrame({"value": values[5:]})]
    whole = list(parse_partition(iter(batches), ATHLETES, SOURCE, list(ATHLETES.names), whole_file=True))
    assert len(whole) == 1
    expected = _careful_block(b"\n".join(values) + b"\n", ATHLETES, SOURCE, list(ATHLETES.names), 1, True)
    pd.testing.assert_frame_equal(whole[0], expected, check_exact=True)
    assert whole[0]["_line"].tolist()[-1] == len(values)
    # Split partitions: header lines (also unquoted) are dropped, no line numbers, one frame per batch.
    batches = [pd.DataFrame({"value": values[:6]}), pd.DataFrame({"value": [",".join(ATHLETES.names).encode(), *values[6:]]})]
    parts = list(parse_partition(iter(batches), ATHLETES, SOURCE, list(ATHLETES.names), whole_file=False))
    assert [len(p) for p in parts] == [5, len(values) - 6]
    for part, batch in zip(parts, (values[1:6], values[6:]), strict=True):
        expected = _careful_block(b"\n".join(batch), ATHLETES, SOURCE, list(ATHLETES.names), None, False)
        pd.testing.assert_frame_equal(part.reset_index(drop=True), expected, check_exact=True)
        assert part["_line"].isna().all()


def test_a_large_block_gives_single_chunk_columns_that_arrow_converts_as_spark_does():
    # pyarrow reads in 1 MB chunks; Spark's mapInPandas converts every column with
    # pa.Array.from_pandas, which fails on a string column backed by several chunks.
    import pyarrow as pa

    good = [GOOD.format(id=i) for i in range(1, 12001)]  # ~2 MB
    bad = [*good[:5000], '"101","Too Few","M",24,170', *good[5000:]]
    for lines in (good, bad):
        out = both(lines_to_bytes([HEADER, *lines]))
        for name in out.columns:
            assert isinstance(pa.Array.from_pandas(out[name]), pa.Array), name
    assert out["_reason"].notna().sum() == 1 and out.loc[5000, "_line"] == 5002
