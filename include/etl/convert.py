"""Typing and validating the fields of a dataset: the one definition of a valid row.

Input: per declared column an Arrow string array of the raw fields (null where the record had
no fields), plus the records' tokenizer reasons. Output: typed Arrow arrays and one reason per
row (null: accepted). The first problem found is the row's reason, in this order: the
tokenizer's, the columns' in declared order (missing, type, allowed values, range), the row
rules, then duplicate keys. Everything runs in Arrow compute kernels; dates and timestamps are
read with Python's ``strptime`` once per distinct value.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.etl.contract import Column, Dataset, Rule

_INT = r"^[+-]?[0-9]+$"
_WHOLE_FLOAT = r"^[+-]?[0-9]+\.0*$"
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_DECIMAL = r"^[+-]?([0-9]*)\.?([0-9]*)$"
_INT_DIGITS = 18  # below 2**63 whatever the digits


# ``_reason`` of a row dropped as an exact copy of an earlier one (``duplicates="drop_exact"``): it is
# counted, neither accepted nor rejected. No reject reason can read like this.
DROPPED = "(dropped: exact copy of an earlier row)"
_UNIX_RANGE = (-62135596800, 253402300799)  # 0001-01-01 .. 9999-12-31 23:59:59 UTC, in seconds


def nested_arrow_type(shape: Any) -> Any:
    import pyarrow as pa

    if isinstance(shape, str):
        return {"integer": pa.int64(), "float": pa.float64(), "string": pa.string(), "boolean": pa.bool_()}[shape]
    if shape[0] == "list":
        return pa.list_(nested_arrow_type(shape[1]))
    return pa.struct([pa.field(n, nested_arrow_type(t)) for n, t in shape[1]])


def _nested_spark(shape: Any) -> str:
    if isinstance(shape, str):
        return {"integer": "bigint", "float": "double", "string": "string", "boolean": "boolean"}[shape]
    if shape[0] == "list":
        return f"array<{_nested_spark(shape[1])}>"
    return "struct<" + ",".join(f"`{n}`:{_nested_spark(t)}" for n, t in shape[1]) + ">"


def arrow_type(col: Column) -> Any:
    import pyarrow as pa

    from include.etl.contract import parse_nested

    if col.is_nested:
        return nested_arrow_type(parse_nested(col.type))
    if col.is_unix:
        return pa.timestamp("us", tz="UTC")
    return {
        "integer": pa.int64(),
        "float": pa.float64(),
        "boolean": pa.bool_(),
        "string": pa.string(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
    }.get(col.type) or pa.decimal128(col.precision, col.scale)


def spark_type(col: Column) -> str:
    from include.etl.contract import parse_nested

    if col.is_nested:
        return _nested_spark(parse_nested(col.type))
    if col.is_unix:
        return "timestamp"
    if col.type == "decimal":
        return f"decimal({col.precision},{col.scale})"
    return {"integer": "bigint", "float": "double", "boolean": "boolean", "string": "string",
            "date": "date", "timestamp": "timestamp_ntz"}[col.type]


class Reasons:
    """One reason per row; the first one set wins."""

    def __init__(self, n: int, initial: Any = None) -> None:
        import numpy as np

        self.text = np.full(n, None, dtype=object) if initial is None else initial.astype(object)
        self.has = np.array([t is not None for t in self.text], dtype=bool) if initial is not None else np.zeros(n, bool)

    def add(self, mask: Any, text: str) -> None:
        import numpy as np

        mask = np.asarray(mask, dtype=bool)
        new = mask & ~self.has
        if new.any():
            self.text[new] = text
            self.has |= new


def _np(mask: Any) -> Any:
    import pyarrow.compute as pc

    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _null_where(mask: Any, values: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(mask, pa.scalar(None, values.type), values)


def convert_column(col: Column, values: Any, null_values: tuple[str, ...], reasons: Reasons) -> Any:
    """``values`` (Arrow strings) as ``col`` declares them; problems go to ``reasons``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(values)
    missing = pc.or_kleene(pc.is_null(values), pc.is_in(trimmed, value_set=pa.array(null_values, pa.string())))
    missing = pc.fill_null(missing, True)
    if col.required:
        reasons.add(_np(missing), f"missing required {col.name}")
    if col.type == "string":
        typed = _null_where(missing, values)
        if col.allowed is not None:
            inside = pc.is_in(values, value_set=pa.array(col.allowed, pa.string()))
            reasons.add(_np(pc.and_(pc.invert(missing), pc.invert(inside))), f"{col.name} not in {'/'.join(col.allowed)}")
        return typed
    text = _null_where(missing, trimmed)
    if col.type in ("integer", "float", "decimal"):
        return _number(col, text, reasons)
    if col.is_nested:
        from include.etl.nested import parse_nested_column

        return parse_nested_column(col, text, reasons)
    if col.is_unix:
        return _unix(col, text, reasons)
    if col.type == "boolean":
        lowered = pc.utf8_lower(text)
        is_true = pc.is_in(lowered, value_set=pa.array([t.lower() for t in col.true_values]))
        is_false = pc.is_in(lowered, value_set=pa.array([t.lower() for t in col.false_values]))
        bad = pc.and_(pc.is_valid(text), pc.invert(pc.or_(is_true, is_false)))
        tokens = "/".join((*col.true_values, *col.false_values))
        reasons.add(_np(bad), f"{col.name} is not a boolean ({tokens})")
        return _null_where(pc.or_(pc.is_null(text), bad), is_true)
    return _temporal(col, text, reasons)


def _number(col: Column, text: Any, reasons: Reasons) -> Any:
    import pyarrow.compute as pc

    if col.thousands:
        sep = col.thousands.replace("\\", "\\\\").replace(".", "\\.")
        fraction = "" if col.thousands == "." else r"(\.[0-9]*)?"
        grouped = pc.match_substring_regex(text, rf"^[+-]?[0-9]{{1,3}}({sep}[0-9]{{3}})+{fraction}$")
        has_sep = pc.match_substring(text, col.thousands)
        bad_groups = pc.and_(has_sep, pc.invert(grouped))
        reasons.add(_np(bad_groups), f"{col.name} is not a number (thousands separator {col.thousands!r} misplaced)")
        text = _null_where(bad_groups, pc.replace_substring(text, col.thousands, ""))
    fast = _plain_cast(col, text)
    if fast is not None:
        typed = fast
    else:
        typed = _parse_number(col, text, reasons)
    if col.range is not None:
        lo, hi = col.range
        below = pc.fill_null(pc.less(typed, _bound(lo, typed.type)), False) if lo is not None else None
        above = pc.fill_null(pc.greater(typed, _bound(hi, typed.type)), False) if hi is not None else None
        if below is not None and above is not None:
            reasons.add(_np(pc.or_(below, above)), f"{col.name} outside [{lo:g}, {hi:g}]")
        elif below is not None:
            reasons.add(_np(below), f"{col.name} must be >= {lo:g}")
        elif above is not None:
            reasons.add(_np(above), f"{col.name} must be <= {hi:g}")
    return typed


def _plain_cast(col: Column, text: Any) -> Any:
    """The whole column cast at once when every value is a plain number (the common case), else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col.type not in ("integer", "float"):
        return None
    try:
        typed = pc.cast(text, pa.int64() if col.type == "integer" else pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if col.type == "float" and pc.any(pc.invert(pc.is_finite(typed))).as_py():
        return None  # inf or nan: the careful path rejects them
    return typed


def _parse_number(col: Column, text: Any, reasons: Reasons) -> Any:
    """Numbers value by value: each value that is not one gets its reason."""
    import pyarrow as pa
    import pyarrow.compute as pc

    valid = pc.is_valid(text)
    number_like = pc.match_substring_regex(text, _NUMBER)
    reasons.add(_np(pc.and_(valid, pc.invert(number_like))), f"{col.name} is not a number")
    text = _null_where(pc.invert(number_like), text)
    if col.type == "integer":
        plain = pc.match_substring_regex(text, _INT)
        whole = pc.match_substring_regex(text, _WHOLE_FLOAT)
        if col.whole_float:
            text = pc.if_else(whole, pc.replace_substring_regex(text, r"\.0*$", ""), text)
            plain = pc.or_(plain, whole)
        else:  # e.g. 1.000: a whole number, written with a decimal point (or '.' as a thousands separator)
            written = pc.and_(pc.is_valid(text), pc.and_(whole, pc.invert(plain)))
            reasons.add(_np(written), f"{col.name} is written with a decimal point, not as an integer"
                        + (f" (thousands separator {col.thousands!r})" if col.thousands else ""))
        reasons.add(_np(pc.and_(pc.is_valid(text), pc.invert(plain))), f"{col.name} is not a whole number")
        text = _null_where(pc.invert(plain), pc.replace_substring_regex(text, r"^\+", ""))
        too_long = pc.greater(pc.utf8_length(pc.replace_substring_regex(text, r"^-", "")), _INT_DIGITS)
        reasons.add(_np(too_long), f"{col.name} is too large for an integer")
        typed = pc.cast(_null_where(too_long, text), pa.int64())
    elif col.type == "float":
        typed = pc.cast(text, pa.float64())
    else:
        typed = _decimal(col, text, reasons)
    return typed


def _bound(value: float, typ: Any) -> Any:
    import decimal

    import pyarrow as pa

    if pa.types.is_decimal(typ):
        return pa.scalar(decimal.Decimal(str(value)), pa.decimal128(38, max(typ.scale, 10)))
    return pa.scalar(value, pa.float64())


def _decimal(col: Column, text: Any, reasons: Reasons) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    p, s = col.precision, col.scale
    plain = pc.match_substring_regex(text, r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$")
    reasons.add(_np(pc.and_(pc.is_valid(text), pc.invert(plain))), f"{col.name} is not a decimal number")
    text = _null_where(pc.invert(plain), pc.replace_substring_regex(text, r"^\+", ""))
    parts = pc.extract_regex(text, r"^-?0*(?P<int>[0-9]*)\.?(?P<frac>[0-9]*?)0*$")
    int_digits = pc.utf8_length(pc.struct_field(parts, "int"))
    frac_digits = pc.utf8_length(pc.struct_field(parts, "frac"))
    too_precise = pc.greater(frac_digits, s)
    reasons.add(_np(too_precise), f"{col.name} has more than {s} decimal places")
    too_big = pc.greater(int_digits, p - s)
    reasons.add(_np(too_big), f"{col.name} does not fit decimal({p},{s})")
    ok = pc.and_(pc.invert(pc.fill_null(too_precise, False)), pc.invert(pc.fill_null(too_big, False)))
    text = _null_where(pc.invert(ok), text)
    text = pc.if_else(pc.ends_with(text, "."), pc.utf8_slice_codeunits(text, 0, -1), text)
    return pc.cast(pc.cast(text, pa.decimal128(38, s)), pa.decimal128(p, s))


def _unix(col: Column, text: Any, reasons: Reasons) -> Any:
    """Unix seconds or milliseconds -> a UTC timestamp (microseconds)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    unit = "seconds" if col.format == "unix_s" else "milliseconds"
    integer = pc.match_substring_regex(text, r"^[+-]?[0-9]{1,16}$")
    reasons.add(_np(pc.and_(pc.is_valid(text), pc.invert(integer))), f"{col.name} is not a Unix time in {unit}")
    number = pc.cast(_null_where(pc.invert(integer), pc.replace_substring_regex(text, r"^\+", "")), pa.int64())
    per_second = 1 if col.format == "unix_s" else 1000
    lo, hi = (_UNIX_RANGE[0] * per_second, _UNIX_RANGE[1] * per_second + per_second - 1)
    outside = pc.or_(pc.less(number, lo), pc.greater(number, hi))
    reasons.add(_np(outside), f"{col.name} is outside the years 1 to 9999")
    micros = pc.multiply(_null_where(pc.fill_null(outside, False), number), 1_000_000 // per_second)
    return pc.cast(micros, pa.timestamp("us", tz="UTC"))


def _temporal(col: Column, text: Any, reasons: Reasons) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(text)
    dictionary = encoded.dictionary.to_pylist()
    fmt = col.format
    parsed: list[Any] = []
    for value in dictionary:
        try:
            moment = dt.datetime.strptime(value, fmt)
        except ValueError:
            parsed.append(None)
        else:
            parsed.append(moment.date() if col.type == "date" else moment)
    values = pa.array(parsed, arrow_type(col))
    typed = pc.take(values, encoded.indices) if len(dictionary) else pa.nulls(len(text), arrow_type(col))
    kind = "date" if col.type == "date" else "timestamp"
    reasons.add(_np(pc.and_(pc.is_valid(text), pc.is_null(typed))), f"{col.name} is not a {kind} of the form {fmt}")
    return typed


def check_rule(rule: Rule, typed: dict[str, Any], ds: str | None, reasons: Reasons) -> None:
    """Reject the rows (whose fields are all present) that break ``rule``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if rule.kind == "expr":
        from include.etl.expressions import compile_expression

        n = len(next(iter(typed.values()))) if typed else 0
        compiled = compile_expression(rule.expr, {name: _kind(values.type) for name, values in typed.items()})
        holds = compiled.evaluate(typed, n)
        reasons.add(_np(pc.invert(holds)), f"breaks rule: {rule.name}")
        return
    column = typed[rule.column]
    if rule.kind == "on_partition_day":
        if ds is None:
            return  # no partition day to compare with (e.g. reading outside a run)
        day = dt.date.fromisoformat(ds)
        as_date = pc.cast(column, pa.date32()) if pa.types.is_timestamp(column.type) else column
        broken = pc.not_equal(as_date, pa.scalar(day, pa.date32()))
    else:
        of = typed[rule.of]
        if rule.kind == "year_of":
            broken = pc.not_equal(column, pc.year(of))
        elif rule.kind == "month_of":
            broken = pc.not_equal(column, pc.month(of))
        else:
            stamp = pc.cast(of, pa.timestamp("s")) if pa.types.is_date(of.type) else of
            broken = pc.not_equal(column, pc.strftime(stamp, format="%A", locale="C"))
    reasons.add(_np(broken), f"breaks rule: {rule.name}")


def _kind(arrow: Any) -> str:
    """The contract type name of an Arrow type (what an expression rule sees)."""
    import pyarrow as pa

    for test, name in ((pa.types.is_integer, "integer"), (pa.types.is_floating, "float"),
                       (pa.types.is_decimal, "decimal"), (pa.types.is_boolean, "boolean"),
                       (pa.types.is_string, "string"), (pa.types.is_date, "date"), (pa.types.is_timestamp, "timestamp")):
        if test(arrow):
            return name
    return "nested"


def convert(dataset: Dataset, raw: dict[str, Any], reasons: Reasons, ds: str | None) -> dict[str, Any]:
    """Typed arrays of every declared column (by header name); the rows' problems are added to ``reasons``.

    Rows dropped as exact copies (``duplicates="drop_exact"``) get the reason :data:`DROPPED`.
    """
    typed = {col.name: convert_column(col, raw[col.name], dataset.format.null_values, reasons) for col in dataset.columns}
    if dataset.rules:
        env = {**{c.out: typed[c.name] for c in dataset.columns}, **typed}  # header names win a clash
        for rule in dataset.rules:
            check_rule(rule, env, ds, reasons)
    if dataset.key and len(reasons.text):
        _duplicates(dataset, typed, raw, reasons)
    return typed


def _duplicates(dataset: Dataset, typed: dict[str, Any], raw: dict[str, Any], reasons: Reasons) -> None:
    """A row is a duplicate when an earlier accepted row has its key: rejected, or with ``drop_exact``
    dropped when its declared fields are written exactly as that row's."""
    import numpy as np
    import pyarrow as pa

    keys = pa.table({k: typed[k] for k in dataset.key}).to_pandas()
    if not keys.duplicated(keep=False).any():
        return
    accepted = np.flatnonzero(~reasons.has)
    ok = keys.iloc[accepted].reset_index(drop=True)
    later = ok.duplicated(keep="first").to_numpy()
    copies = np.zeros(len(ok), dtype=bool)
    if dataset.duplicates == "drop_exact" and later.any():
        fields = pa.table({f"f{i}": raw[c.name] for i, c in enumerate(dataset.columns)}).take(accepted).to_pandas()
        fields = fields.fillna("\x00null")  # a missing field equals a missing field
        group = ok.groupby(list(ok.columns), dropna=False, sort=False).ngroup()
        same = np.ones(len(ok), dtype=bool)
        for name in fields.columns:
            first = fields[name].groupby(group).transform("first")
            same &= (fields[name] == first).to_numpy()
        copies = later & same
    rows = np.zeros(len(keys), dtype=bool)
    rows[accepted] = copies
    reasons.add(rows, DROPPED)
    rows[:] = False
    rows[accepted] = later & ~copies
    reasons.add(rows, f"duplicate key ({', '.join(dataset.key)})")
