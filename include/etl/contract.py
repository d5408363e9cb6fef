"""Dataset contracts: what an input file looks like, declared as data.

A pipeline declares each input as a :class:`Dataset`: its columns (by header name, with a type
and per-column checks), its file format, row rules across fields and unique keys. The reader
(:mod:`include.etl.reader`) applies the declaration identically on every engine; a row that
breaks it is kept aside with a reason, never dropped. A declaration that is itself wrong fails
with :class:`~include.etl.errors.ContractError` when it is built, before any data is read.

Declarations are plain frozen dataclasses, or the same thing as a mapping (YAML)::

    name: trade
    format: {encoding: utf-8, delimiter: ",", null_values: ["", "NA"]}
    columns:
      - {name: Date, type: date, format: "%d/%m/%Y", required: true}
      - {name: Value, type: integer, required: true, range: [0, null]}
    rules:
      - {kind: year_of, column: Year, of: Date}
      - {kind: expr, expr: "Value >= 0 or Measure == 'Tonnes'", name: values are not negative}

Beyond types and checks per column, a contract can rename a column for the lake
(``rename``), type a nested JSON or Python-literal value, read Unix times as UTC timestamps,
check rows with expressions (:mod:`include.etl.expressions`) and drop exact copies of a keyed
row (``duplicates="drop_exact"``); docs/contracts.md has them all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from include.etl.errors import ContractError

TYPES = ("integer", "float", "decimal", "boolean", "string", "date", "timestamp")
_ALIASES = {"int": "integer", "str": "string", "bool": "boolean", "double": "float", "datetime": "timestamp"}
NUMERIC = ("integer", "float", "decimal")
# Encodings whose delimiter, quote and line-end bytes are the ASCII ones (the reader splits
# records on bytes before decoding).
ENCODINGS = ("utf-8", "utf-8-sig", "latin-1", "cp1252", "ascii")
_ENCODING_ALIASES = {"utf8": "utf-8", "utf_8": "utf-8", "utf-8-bom": "utf-8-sig", "utf8-sig": "utf-8-sig",
                     "iso-8859-1": "latin-1", "latin1": "latin-1", "windows-1252": "cp1252", "us-ascii": "ascii"}
MAX_DECIMAL_PRECISION = 38
DUPLICATE_POLICIES = ("reject", "drop_exact")
_NESTED = re.compile(r"^(list|struct)\s*<")


@dataclass(frozen=True)
class Column:
    """One declared column, matched to the file's header by name (spaces and a BOM trimmed).

    :param type: one of :data:`TYPES` (``int``/``str``/``float`` accepted as aliases).
    :param required: a missing value (empty or a null token) rejects the row.
    :param allowed: the only values accepted (strings, compared as written).
    :param range: inclusive ``(low, high)`` for numbers; either bound may be None.
    :param format: ``strptime`` format of a date or timestamp (e.g. ``%d/%m/%Y``).
    :param precision, scale: of a decimal.
    :param thousands: thousands separator of a number (``"2,156,624,900"``: ``","``).
    :param whole_float: an integer may be written as a whole float (``17850.0`` -> 17850).
    :param true_values, false_values: the tokens of a boolean (compared without case).
    :param rename: the column's name in the lake (``name`` stays the header's name).

    Besides :data:`TYPES`, a column may hold a nested value, declared as its Arrow shape:
    ``list<struct<id: integer, name: string>>`` (``list<T>``, ``struct<name: T, ...>`` over
    ``integer``, ``float``, ``string``, ``boolean``), written as JSON (``format="json"``, the
    default) or as a Python literal (``format="python"``, read with ``ast.literal_eval``). A
    ``timestamp`` with ``format="unix_s"`` or ``"unix_ms"`` is read from Unix seconds or
    milliseconds into a UTC timestamp.
    """

    name: str
    type: str = "string"
    required: bool = False
    allowed: tuple[str, ...] | None = None
    range: tuple[float | None, float | None] | None = None
    format: str | None = None
    precision: int | None = None
    scale: int | None = None
    thousands: str | None = None
    whole_float: bool = False
    true_values: tuple[str, ...] = ("true",)
    false_values: tuple[str, ...] = ("false",)
    rename: str | None = None

    def __post_init__(self) -> None:
        kind = self.type.strip() if isinstance(self.type, str) else self.type
        if isinstance(kind, str) and _NESTED.match(kind):
            kind = normalise_nested(kind)
        object.__setattr__(self, "type", _ALIASES.get(kind, kind))
        for name in ("allowed", "true_values", "false_values"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if self.range is not None and not isinstance(self.range, tuple):
            object.__setattr__(self, "range", tuple(self.range))

    def check(self, dataset: str) -> None:
        def fail(problem: str) -> None:
            raise ContractError(f"dataset {dataset!r}, column {self.name!r}: {problem}")

        if not isinstance(self.name, str) or not self.name.strip():
            raise ContractError(f"dataset {dataset!r}: a column has no name")
        if self.rename is not None and (not isinstance(self.rename, str) or not self.rename.strip()
                                        or self.rename != self.rename.strip()):
            fail(f"rename must be a non-empty name without surrounding spaces, got {self.rename!r}")
        if self.is_nested:
            try:
                parse_nested(self.type)
            except ValueError as exc:
                fail(f"type {self.type!r}: {exc}")
        elif self.type not in TYPES:
            fail(f"unknown type {self.type!r}; expected one of {', '.join(TYPES)} or a nested type "
                 "such as 'list<struct<id: integer, name: string>>'")
        self._check_format(fail)
        self._check_decimal(fail)
        self._check_numbers(fail)
        if self.allowed is not None and (self.type != "string" or not self.allowed
                                         or not all(isinstance(v, str) for v in self.allowed)):
            fail("allowed values must be a non-empty list of strings, for string columns")
        if self.type == "boolean":
            tokens = [t.lower() for t in (*self.true_values, *self.false_values)]
            if not self.true_values or not self.false_values or len(set(tokens)) != len(tokens):
                fail("a boolean needs distinct true and false tokens")

    @property
    def out(self) -> str:
        """The column's name in the lake: ``rename``, else the header's name."""
        return self.rename or self.name

    @property
    def is_nested(self) -> bool:
        return isinstance(self.type, str) and bool(_NESTED.match(self.type))

    @property
    def is_unix(self) -> bool:
        return self.type == "timestamp" and self.format in UNIX_FORMATS

    def _check_format(self, fail) -> None:
        if self.is_nested:
            if self.format not in (None, *NESTED_FORMATS):
                fail(f"a nested value is written as {' or '.join(NESTED_FORMATS)}, not {self.format!r}")
        elif self.is_unix:
            pass
        elif self.type in ("date", "timestamp"):
            if not self.format:
                fail(f"a {self.type} needs a strptime format, e.g. '%Y-%m-%d'")
            _check_format(self.format, self.type, fail)
        elif self.format is not None:
            fail(f"format is only for dates and timestamps, not {self.type}")

    def _check_decimal(self, fail) -> None:
        if self.type == "decimal":
            p, s = self.precision, self.scale
            if not isinstance(p, int) or not isinstance(s, int) or not 0 < p <= MAX_DECIMAL_PRECISION or not 0 <= s <= p:
                fail(f"decimal needs precision 1..{MAX_DECIMAL_PRECISION} and scale 0..precision, got ({p}, {s})")
        elif self.precision is not None or self.scale is not None:
            fail("precision and scale are only for decimals")

    def _check_numbers(self, fail) -> None:
        if self.range is not None:
            if self.type not in NUMERIC:
                fail(f"range is only for numbers, not {self.type}")
            if len(self.range) != 2 or not all(b is None or isinstance(b, int | float) for b in self.range):
                fail(f"range must be (low, high) numbers or None, got {self.range!r}")
            lo, hi = self.range
            if lo is not None and hi is not None and lo > hi:
                fail(f"range low {lo} is above high {hi}")
        if self.thousands is not None and (self.type not in NUMERIC or len(self.thousands) != 1
                                           or self.thousands in "0123456789+-"):
            fail(f"thousands separator {self.thousands!r} must be one character, for numbers only")
        if self.thousands == "." and (self.type != "integer" or self.whole_float):
            fail("thousands separator '.' is only for integers without whole_float ('.' is a decimal point)")
        if self.whole_float and self.type != "integer":
            fail("whole_float is only for integers")


UNIX_FORMATS = ("unix_s", "unix_ms")
NESTED_FORMATS = ("json", "python")
NESTED_SCALARS = ("integer", "float", "string", "boolean")


def parse_nested(text: str) -> Any:
    """A nested type's text -> its shape: a scalar name, ``("list", T)`` or ``("struct", ((name, T), ...))``.

    Raises ValueError saying what is wrong.
    """
    parser = _TypeParser(re.findall(r"[A-Za-z_][A-Za-z0-9_]*|[<>,:]|\S", text))
    result = parser.shape()
    if parser.pos != len(parser.tokens):
        raise ValueError(f"unexpected {parser.tokens[parser.pos]!r} after the type")
    return result


class _TypeParser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.pos = tokens, 0

    def take(self, expected: str | None = None) -> str:
        if self.pos >= len(self.tokens):
            raise ValueError(f"ends early{f', expected {expected!r}' if expected else ''}")
        token = self.tokens[self.pos]
        if expected is not None and token != expected:
            raise ValueError(f"expected {expected!r}, found {token!r}")
        self.pos += 1
        return token

    def shape(self) -> Any:
        word = self.take()
        word = _ALIASES.get(word, word)
        if word == "list":
            self.take("<")
            inner = self.shape()
            self.take(">")
            return ("list", inner)
        if word == "struct":
            return ("struct", self.members())
        if word not in NESTED_SCALARS:
            raise ValueError(f"unknown type {word!r} (nested values hold {', '.join(NESTED_SCALARS)}, list<>, struct<>)")
        return word

    def members(self) -> tuple[tuple[str, Any], ...]:
        self.take("<")
        found = []
        while True:
            name = self.take()
            if not name.isidentifier():
                raise ValueError(f"{name!r} is not a field name")
            self.take(":")
            found.append((name, self.shape()))
            if self.take() == ">":
                break
        if len({n for n, _ in found}) != len(found):
            raise ValueError("a struct names a field twice")
        return tuple(found)


def nested_text(shape: Any) -> str:
    """The canonical text of a nested shape (as :func:`parse_nested` reads it)."""
    if isinstance(shape, str):
        return shape
    if shape[0] == "list":
        return f"list<{nested_text(shape[1])}>"
    return "struct<" + ", ".join(f"{n}: {nested_text(t)}" for n, t in shape[1]) + ">"


def normalise_nested(text: str) -> str:
    try:
        return nested_text(parse_nested(text))
    except ValueError:
        return text  # reported by Column.check, naming the dataset


def _check_format(fmt: str, kind: str, fail) -> None:
    directives = re.findall(r"%(.)", fmt.replace("%%", ""))
    known = set("aAbBcdfHIjmMpSUwWyYzZ")
    unknown = [d for d in directives if d not in known]
    if unknown or not directives:
        fail(f"format {fmt!r} is not a strptime format (unknown directives {unknown})" if unknown
             else f"format {fmt!r} has no strptime directive"
             + (f" (Unix times: {' or '.join(UNIX_FORMATS)})" if kind == "timestamp" else ""))
    sample = dt.datetime(2001, 2, 3, 4, 5, 6)
    try:
        parsed = dt.datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as exc:
        fail(f"format {fmt!r} cannot read what it writes ({exc})")
    if kind == "date" and not {"d", "j"} & set(directives) and not {"U", "W"} & set(directives):
        fail(f"format {fmt!r} has no day directive (%d or %j)")
    del parsed


@dataclass(frozen=True)
class FileFormat:
    """How the file is written. ``null_values`` are the tokens that mean missing (after trimming)."""

    encoding: str = "utf-8"
    delimiter: str = ","
    quote: str = '"'
    null_values: tuple[str, ...] = ("NA", "")
    # A quoted field may hold line breaks; a record longer than this many physical lines is
    # taken as an unterminated quote: its first line is rejected and reading goes on after it.
    max_record_lines: int = 1000

    def __post_init__(self) -> None:
        encoding = (self.encoding or "").strip().lower().replace("_", "-")
        object.__setattr__(self, "encoding", _ENCODING_ALIASES.get(encoding, encoding))
        if not isinstance(self.null_values, tuple):
            object.__setattr__(self, "null_values", tuple(self.null_values))

    def check(self, dataset: str) -> None:
        def fail(problem: str) -> None:
            raise ContractError(f"dataset {dataset!r}, format: {problem}")

        if self.encoding not in ENCODINGS:
            fail(f"encoding {self.encoding!r} is not supported; use one of {', '.join(ENCODINGS)}")
        for name in ("delimiter", "quote"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) != 1 or value in "\r\n" or ord(value) > 127:
                fail(f"{name} must be one ASCII character other than a line break, got {value!r}")
        if self.delimiter == self.quote:
            fail("delimiter and quote must differ")
        if not isinstance(self.max_record_lines, int) or self.max_record_lines < 1:
            fail(f"max_record_lines must be a whole number >= 1, got {self.max_record_lines!r}")

    @property
    def python_encoding(self) -> str:
        """The codec that decodes a record's bytes (the BOM is handled with the header)."""
        return "utf-8" if self.encoding == "utf-8-sig" else self.encoding


RULE_KINDS = ("year_of", "weekday_of", "month_of", "on_partition_day", "expr")


@dataclass(frozen=True)
class Rule:
    """A check across the fields of one row. ``kind``:

    - ``year_of``: ``column`` (integer) is the year of ``of`` (a date or timestamp);
    - ``month_of``: ``column`` (integer) is the month number of ``of``;
    - ``weekday_of``: ``column`` (string) is the English day name of ``of`` (``Monday``);
    - ``on_partition_day``: ``column`` (a date or timestamp) falls on the run's day (``ds``);
    - ``expr``: the condition ``expr`` over the row's fields holds (:mod:`include.etl.expressions`,
      e.g. ``title == name + ' (' + str(year) + ')'``); a row where it is false is rejected, a
      row where it is null (a field missing) is not.

    A row breaking the rule is rejected with a reason naming the rule (``name``, or a
    description built from the kind).
    """

    kind: str
    column: str = ""
    of: str | None = None
    name: str = ""
    expr: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.describe())

    def describe(self) -> str:
        return {
            "year_of": f"{self.column} is the year of {self.of}",
            "month_of": f"{self.column} is the month of {self.of}",
            "weekday_of": f"{self.column} is the day name of {self.of}",
            "on_partition_day": f"{self.column} falls on the partition's day",
            "expr": str(self.expr),
        }.get(self.kind, f"{self.kind}({self.column}, {self.of})")

    def check(self, dataset: str, columns: Mapping[str, Column]) -> None:
        def fail(problem: str) -> None:
            raise ContractError(f"dataset {dataset!r}, rule {self.name!r}: {problem}")

        if self.kind not in RULE_KINDS:
            fail(f"unknown rule kind {self.kind!r}; expected one of {', '.join(RULE_KINDS)}")
        if self.kind == "expr" or self.expr is not None:
            if self.kind != "expr" or self.column or self.of:
                fail("an expression rule has kind 'expr' and an 'expr', and no column or of")
            self.compile(columns, fail)
            return
        needs_of = self.kind != "on_partition_day"
        for role, name in (("column", self.column), ("of", self.of)):
            if role == "of" and not needs_of:
                continue
            if name not in columns:
                fail(f"names unknown column {name!r} ({role}); declared: {', '.join(columns)}")
        temporal = ("date", "timestamp")
        target = columns[self.column].type
        if self.kind == "on_partition_day" and target not in temporal:
            fail(f"column {self.column!r} must be a date or timestamp, is {target}")
        if needs_of and columns[self.of].type not in temporal:
            fail(f"column {self.of!r} must be a date or timestamp, is {columns[self.of].type}")
        if self.kind in ("year_of", "month_of") and target != "integer":
            fail(f"column {self.column!r} must be an integer, is {target}")
        if self.kind == "weekday_of" and target != "string":
            fail(f"column {self.column!r} must be a string, is {target}")

    def compile(self, columns: Mapping[str, Column], fail: Any = None) -> Any:
        """The compiled expression of an ``expr`` rule over ``columns`` (header and output names)."""
        from include.etl.expressions import ExpressionError, compile_expression

        try:
            return compile_expression(self.expr, {name: col.type for name, col in columns.items()})
        except ExpressionError as exc:
            if fail is None:
                raise
            fail(str(exc))


def year_of(column: str, of: str) -> Rule:
    return Rule("year_of", column, of)


def month_of(column: str, of: str) -> Rule:
    return Rule("month_of", column, of)


def weekday_of(column: str, of: str) -> Rule:
    return Rule("weekday_of", column, of)


def on_partition_day(column: str) -> Rule:
    return Rule("on_partition_day", column)


def expression(expr: str, name: str = "") -> Rule:
    """A rule that holds when the condition ``expr`` over the row's fields is true (see :class:`Rule`)."""
    return Rule("expr", expr=expr, name=name)


@dataclass(frozen=True)
class Dataset:
    """An input's contract. ``key``: columns unique per file; ``duplicates``: what happens to a later
    row with the key of an earlier accepted row: ``reject`` it (``duplicate key (...)``), or
    ``drop_exact``: drop it, counted, when all its declared fields are written exactly as the
    earlier row's (a copy), and reject it otherwise. ``reference``: a small lookup table, read in
    one piece (so are datasets with a key)."""

    name: str
    columns: tuple[Column, ...]
    format: FileFormat = field(default_factory=FileFormat)
    rules: tuple[Rule, ...] = ()
    key: tuple[str, ...] = ()
    reference: bool = False
    description: str = ""
    duplicates: str = "reject"

    def __post_init__(self) -> None:
        for name in ("columns", "rules", "key"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        self.check()

    def check(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ContractError(f"dataset name {self.name!r} must be an identifier (it names a table)")
        if not self.columns:
            raise ContractError(f"dataset {self.name!r} declares no columns")
        self._check_columns()
        self.format.check(self.name)
        by_name = self.by_name
        for rule in self.rules:
            rule.check(self.name, self.names_for_rules)
        for k in self.key:
            if k not in by_name:
                raise ContractError(f"dataset {self.name!r}: key names unknown column {k!r}")
        if self.duplicates not in DUPLICATE_POLICIES:
            raise ContractError(f"dataset {self.name!r}: duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, "
                                f"got {self.duplicates!r}")
        if self.duplicates != "reject" and not self.key:
            raise ContractError(f"dataset {self.name!r}: duplicates={self.duplicates!r} needs a key")

    def _check_columns(self) -> None:
        seen: set[str] = set()
        outs: set[str] = set()
        for col in self.columns:
            if not isinstance(col, Column):
                raise ContractError(f"dataset {self.name!r}: {col!r} is not a Column")
            col.check(self.name)
            if col.name in seen:
                raise ContractError(f"dataset {self.name!r}, column {col.name!r}: declared twice")
            if col.out in outs:
                raise ContractError(f"dataset {self.name!r}, column {col.name!r}: output name {col.out!r} is used twice")
            for name in {col.name, col.out}:
                if name.startswith("_"):
                    raise ContractError(f"dataset {self.name!r}, column {col.name!r}: names starting with '_' are "
                                        "reserved for the reject bookkeeping (_source, _line, _raw, _reason)")
            seen.add(col.name)
            outs.add(col.out)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    @property
    def names_for_rules(self) -> dict[str, Column]:
        """Every column by its output name and by its header name (the header's name wins a clash)."""
        return {**{c.out: c for c in self.columns}, **self.by_name}

    @property
    def out_names(self) -> tuple[str, ...]:
        """The columns' names in the lake."""
        return tuple(c.out for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def whole_file(self) -> bool:
        """Read in one block: reference tables and tables with a unique key (checked across the file)."""
        return self.reference or bool(self.key)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Dataset:
        """A dataset from a mapping (e.g. loaded YAML); unknown keys fail naming the dataset."""
        name = spec.get("name", "?")

        def build(kind: type, data: Any, where: str):
            if not isinstance(data, Mapping):
                raise ContractError(f"dataset {name!r}: {where} must be a mapping, got {data!r}")
            allowed = {f.name for f in fields(kind)}
            unknown = sorted(set(data) - allowed)
            if unknown:
                raise ContractError(f"dataset {name!r}: {where} has unknown keys {unknown}; allowed: {sorted(allowed)}")
            try:
                return kind(**data)
            except TypeError as exc:
                raise ContractError(f"dataset {name!r}: {where}: {exc}") from exc

        top = {k: v for k, v in spec.items() if k not in ("columns", "format", "rules")}
        columns = tuple(build(Column, c, f"column {c.get('name', i) if isinstance(c, Mapping) else i}")
                        for i, c in enumerate(spec.get("columns") or ()))
        rules = tuple(build(Rule, r, f"rule {i}") for i, r in enumerate(spec.get("rules") or ()))
        fmt = build(FileFormat, spec.get("format") or {}, "format")
        allowed = {f.name for f in fields(cls)} - {"columns", "format", "rules"}
        unknown = sorted(set(top) - allowed)
        if unknown:
            raise ContractError(f"dataset {name!r} has unknown keys {unknown}; allowed: {sorted(allowed)}")
        return cls(columns=columns, format=fmt, rules=rules, **top)


def load_datasets(path: str | Path) -> dict[str, Dataset]:
    """Every dataset of a YAML file holding a list of declarations (or one), by name."""
    import yaml

    with open(path, encoding="utf-8") as f:
        loaded = yaml.safe_load(f)
    specs = loaded if isinstance(loaded, list) else [loaded]
    datasets = {}
    for spec in specs:
        try:
            ds = Dataset.from_dict(spec)
        except ContractError as exc:
            raise ContractError(f"{path}: {exc}") from exc
        datasets[ds.name] = ds
    return datasets
