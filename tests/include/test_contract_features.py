"""Contract features in this process: expression rules, renamed columns, nested values (JSON and
Python literals), Unix timestamps, the duplicate policy and the reworded number reasons. The
engines run the same functions (tests/e2e/test_reader_engines.py checks both real clusters)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from include.etl.contract import Column, Dataset, Rule, expression
from include.etl.convert import DROPPED
from include.etl.errors import ContractError
from include.etl.expressions import ExpressionError, compile_expression
from tests.include.test_reader import read, rejects, write

UTC = dt.UTC


def evaluate(text: str, **columns) -> list:
    arrays = {k: pa.array(v) for k, v in columns.items()}
    types = {k: {"int64": "integer", "double": "float", "string": "string", "bool": "boolean",
                 "date32[day]": "date"}[str(a.type)] for k, a in arrays.items()}
    n = len(next(iter(arrays.values())))
    return compile_expression(text, types).evaluate(arrays, n).to_pylist()


@pytest.mark.parametrize(("text", "columns", "expected"), [
    ("a == b + ' (' + str(y) + ')'", {"a": ["X (1995)", "X (1996)", None], "b": ["X", "X", "X"], "y": [1995, 1995, 1]},
     [True, False, None]),
    ("r >= 0.5 and r <= 5 and r * 2 % 1 == 0", {"r": [0.5, 5.0, 3.5, 0.0, 5.5, 2.25, None]},
     [True, True, True, False, False, False, None]),
    ("x is None or x > 3", {"x": [None, 4, 2]}, [True, True, False]),
    ("not (x is not None)", {"x": [None, 1]}, [True, False]),
    ("x in (1, 2) and s not in ('a',)", {"x": [1, 2, 3, None], "s": ["b", "a", "b", "b"]}, [True, False, False, None]),
    ("1 < x <= 3", {"x": [1, 2, 3, 4]}, [False, True, True, False]),
    ("x in (1.5, 2) and r in (1, 2.5)", {"x": [2, 1], "r": [2.5, 1.0]}, [True, False]),
    ("x // 2 == -2 and x % 3 == 2", {"x": [-3, -4, 4]}, [False, True, False]),
    ("int(s) == x and float(s) == x", {"s": ["12", " +7 ", "abc", "1.5"], "x": [12, 7, 1, 1]}, [True, True, None, False]),
    ("len(s) == 7 and matches(s, '^[0-9]{7}$')", {"s": ["0114709", "114709", "011470x"]}, [True, False, False]),
    ("lower(strip(s)) == 'ab' and upper(s) != s", {"s": [" Ab ", "AB"]}, [True, False]),
    ("year(d) == 2020 and month(d) == 2 and day(d) == 1", {"d": [dt.date(2020, 2, 1), dt.date(2021, 2, 1)]}, [True, False]),
    ("round(x / 3, 2) == 0.33 and abs(-x) == x", {"x": [1, 2]}, [True, False]),
    ("str(b) == 'True' and int(2.7) == 2", {"b": [True, False]}, [True, False]),
    ("(s if x > 0 else 'neg') == 'neg'", {"s": ["a", "b"], "x": [1, -1]}, [False, True]),
    ("col('x') ** 2 == 9.0 and x / 0 > 1", {"x": [3, -3]}, [True, False]),
])
def test_expressions_evaluate_like_python_with_sql_nulls(text, columns, expected):
    assert evaluate(text, **columns) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("__import__('os').system('x')", "unknown function"),
    ("a.b == 1", "Attribute is not allowed"),
    ("b + y == 'x'", "cannot add a string and an integer: convert with str"),
    ("nope == 1", "unknown column 'nope'"),
    ("y", "a rule must be a condition"),
    ("y == 'a'", "cannot compare an integer with a string"),
    ("y is 1", "'is' only compares with None"),
    ("y in z", "'in' needs a list of literals"),
    ("[x for x in b]", "ListComp is not allowed"),
    ("lambda: 1", "Lambda is not allowed"),
    ("y ==", "not a valid expression"),
    ("matches(b, '(')", "invalid regular expression"),
    ("b == b'x'", "literal b'x' is not allowed"),
    ("y @ y == 1", "operator MatMult is not allowed"),
])
def test_bad_expressions_fail_saying_why(text, message):
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace("[", r"\[")):
        compile_expression(text, {"b": "string", "y": "integer"})


def test_a_bad_rule_fails_the_contract_naming_dataset_and_rule():
    with pytest.raises(ContractError, match=r"dataset 'm', rule 'title has its year': cannot add a string and an integer"):
        Dataset("m", (Column("title"), Column("year", "integer")),
                rules=(expression("title == title + year", name="title has its year"),))
    with pytest.raises(ContractError, match="an expression rule has kind 'expr'"):
        Dataset("m", (Column("a"),), rules=(Rule("expr", "a", expr="a == 'x'"),))


MOVIES = Dataset("movies", (
    Column("movieId", "integer", required=True, rename="movie_id"),
    Column("title", required=True),
    Column("name"),
    Column("year", "integer", range=(1870, None)),
    Column("rated", "timestamp", format="unix_s", rename="rated_at"),
    Column("rated_ms", "timestamp", format="unix_ms"),
    Column("tags", "list<struct<id: integer, name: string>>", format="python"),
    Column("meta", "struct<a: float, b: list<boolean>>"),
), rules=(expression("title == name + ' (' + str(year) + ')'", name="title is name (year)"),
          expression("movie_id > 0 and rated_at is not None")), key=("movieId",), duplicates="drop_exact")

HEADER = "movieId,title,name,year,rated,rated_ms,tags,meta"
GOOD = '{id},Heat (1995),Heat,1995,1260759144,1260759144000,"[{{\'id\': 1, \'name\': ""children\'s""}}]","{{""a"": 1, ""b"": [true]}}"'
BAD = {  # line text -> reason
    GOOD.format(id=10).replace("Heat (1995)", "Heat (1996)"): "breaks rule: title is name (year)",
    GOOD.format(id=11).replace(",1995,", ",1700,"): "year must be >= 1870",
    GOOD.format(id=12).replace("1260759144,", "12.5,"): "rated is not a Unix time in seconds",
    GOOD.format(id=13).replace("1260759144000", "999999999999999"): "rated_ms is outside the years 1 to 9999",
    GOOD.format(id=14).replace("\"[{'id'", "\"[{'id' 1"): "tags is not a Python literal",
    GOOD.format(id=15).replace("'id': 1", "'id': 'one'"): "tags does not match list<struct<id: integer, name: string>>: "
                                                           "[0].id is not an integer",
    GOOD.format(id=16).replace('""a"": 1', '""a"": 1,'): "meta is not valid JSON",
    GOOD.format(id=17).replace("[true]", "[1]"): "meta does not match struct<a: float, b: list<boolean>>: "
                                                 "b[0] is not a boolean",
    GOOD.format(id=18).replace("1260759144,", ",", 1): "breaks rule: movie_id > 0 and rated_at is not None",
    GOOD.format(id=1).replace("1260759144,", "1260759145,", 1): "duplicate key (movieId)",
}


def test_renames_nested_unix_rules_and_exact_copies(tmp_path):
    lines = [HEADER, GOOD.format(id=1), GOOD.format(id=2), GOOD.format(id=1), *BAD, GOOD.format(id=2),
             GOOD.format(id=3).replace("1260759144,", ",").replace("1260759144000", "")]
    path = write(tmp_path, "\r\n".join(lines) + "\r\n")
    table = read(path, MOVIES, block_bytes=64)
    assert table.schema.names[:8] == ["movie_id", "title", "name", "year", "rated_at", "rated_ms", "tags", "meta"]
    assert table.schema.field("rated_at").type == pa.timestamp("us", tz="UTC")
    bad = [(line, reason) for line, reason, _ in rejects(table) if reason != DROPPED]
    first_bad = 5
    assert bad == [(first_bad + i, reason) for i, reason in enumerate(BAD.values())] + [
        (first_bad + len(BAD) + 1, "breaks rule: movie_id > 0 and rated_at is not None")]
    assert [r[2] for r in rejects(table) if r[1] != DROPPED][:len(BAD)] == list(BAD)
    dropped = table.filter(pc.equal(table["_reason"], DROPPED))["_line"].to_pylist()
    assert dropped == [4, first_bad + len(BAD)]  # the copies of movies 1 and 2
    ok = table.filter(pc.is_null(table["_reason"])).to_pylist()
    assert [r["movie_id"] for r in ok] == [1, 2]
    assert ok[0]["rated_at"] == dt.datetime(2009, 12, 14, 2, 52, 24, tzinfo=UTC) == ok[0]["rated_ms"]
    assert ok[0]["tags"] == [{"id": 1, "name": "children's"}]
    assert ok[0]["meta"] == {"a": 1.0, "b": [True]}


def test_drop_exact_needs_a_key_and_rename_must_be_unique():
    with pytest.raises(ContractError, match="duplicates='drop_exact' needs a key"):
        Dataset("d", (Column("a"),), duplicates="drop_exact")
    with pytest.raises(ContractError, match="duplicates must be one of reject, drop_exact"):
        Dataset("d", (Column("a"),), key=("a",), duplicates="first")
    with pytest.raises(ContractError, match="output name 'a' is used twice"):
        Dataset("d", (Column("a"), Column("b", rename="a")))
    with pytest.raises(ContractError, match="names starting with '_' are reserved"):
        Dataset("d", (Column("a", rename="_a"),))


@pytest.mark.parametrize(("kind", "message"), [
    ("list<", "ends early"), ("list<int", "ends early"), ("struct<a int>", "expected ':'"),
    ("list<date>", "unknown type 'date'"), ("struct<a: int, a: str>", "names a field twice"),
    ("list<int>>", "unexpected '>'"),
])
def test_bad_nested_types_fail_the_contract(kind, message):
    with pytest.raises(ContractError, match=message):
        Dataset("d", (Column("a", kind),))


def test_nested_format_and_unix_format_are_checked():
    with pytest.raises(ContractError, match="nested value is written as json or python"):
        Dataset("d", (Column("a", "list<int>", format="yaml"),))
    with pytest.raises(ContractError, match="has no strptime directive \\(Unix times: unix_s or unix_ms\\)"):
        Dataset("d", (Column("a", "timestamp", format="unix_minutes"),))
    assert Dataset("d", (Column("a", "list < int >"),)).columns[0].type == "list<integer>"


@pytest.mark.parametrize(("col", "values", "reasons"), [
    (Column("v", "integer", thousands=","), ["1.000", "1.5", "2,000"],
     ["v is written with a decimal point, not as an integer (thousands separator ',')", "v is not a whole number", None]),
    (Column("v", "integer", thousands="."), ["1.000", "12.345.678", "12", "1.5"],
     [None, None, None, "v is not a number (thousands separator '.' misplaced)"]),
    (Column("v", "integer"), ["17850.0", "3"], ["v is written with a decimal point, not as an integer", None]),
    (Column("v", "float", range=(0, None)), ["-1", "0"], ["v must be >= 0", None]),
    (Column("v", "float", range=(None, 5)), ["6", "5"], ["v must be <= 5", None]),
    (Column("v", "integer", range=(1, 3)), ["4", "1"], ["v outside [1, 3]", None]),
])
def test_number_reasons_say_what_is_wrong(tmp_path, col, values, reasons):
    ds = Dataset("t", (Column("id", "integer"), col))
    path = write(tmp_path, "id,v\n" + "".join(f'{i},"{v}"\n' for i, v in enumerate(values)))
    table = read(path, ds)
    assert table["_reason"].to_pylist() == reasons
    if col.thousands == ".":
        assert table["v"].to_pylist()[:3] == [1000, 12345678, 12]


def test_thousands_dot_is_only_for_integers():
    with pytest.raises(ContractError, match="'.' is only for integers"):
        Dataset("t", (Column("v", "float", thousands="."),))


def test_the_features_declared_as_data(tmp_path):
    from include.etl.contract import load_datasets

    path = tmp_path / "contracts.yaml"
    path.write_text("""
- name: movies
  key: [id]
  duplicates: drop_exact
  columns:
    - {name: id, type: integer, required: true, rename: movie_id}
    - {name: tags, type: "list<struct<id: int, name: str>>", format: python}
    - {name: at, type: timestamp, format: unix_ms}
  rules:
    - {kind: expr, expr: "movie_id > 0 and len(tags) > 0", name: tagged}
""")
    ds = load_datasets(path)["movies"]
    assert (ds.out_names, ds.duplicates, ds.columns[1].type) == (
        ("movie_id", "tags", "at"), "drop_exact", "list<struct<id: integer, name: string>>")
    csv_path = write(tmp_path, "id,tags,at\n1,\"[{'id': 1, 'name': 'a'}]\",+1000\n2,[],1000\n1,\"[{'id': 1, 'name': 'a'}]\",+1000\n")
    table = read(csv_path, ds)
    assert table["_reason"].to_pylist() == [None, "breaks rule: tagged", DROPPED]
    assert table["at"].to_pylist()[0] == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
