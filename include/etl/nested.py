"""Nested values: a field holding JSON or a Python literal -> a typed Arrow list or struct.

The text is parsed safely, once per distinct value: ``json.loads``, or ``ast.literal_eval``
for Python literals (which evaluates literals only, never code). The parsed value must have the
declared shape (``list<struct<id: integer, name: string>>``): lists are lists, structs are
dicts with string keys (keys not declared are left out, a declared key that is absent is
null), integers are ints, floats ints or floats, strings strings, booleans booleans; any
value may be null. A value that does not parse or has another shape rejects its row.
"""

from __future__ import annotations

import ast
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.etl.contract import Column
    from include.etl.convert import Reasons

MAX_TEXT = 1 << 20  # longer texts are rejected before parsing


class Mismatch(ValueError):
    """The parsed value does not have the declared shape (the message says where)."""


def conform(value: Any, shape: Any, where: str = "") -> Any:
    """``value`` as the declared ``shape`` (see :func:`include.etl.contract.parse_nested`), else :class:`Mismatch`."""
    if value is None:
        return None
    if isinstance(shape, str):
        ok = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
              "string": lambda v: isinstance(v, str),
              "boolean": lambda v: isinstance(v, bool)}[shape](value)
        if not ok:
            raise Mismatch(f"{where or 'the value'} is not {'an' if shape == 'integer' else 'a'} {shape}")
        if shape == "integer" and not -(2**63) <= value < 2**63:
            raise Mismatch(f"{where or 'the value'} is too large for an integer")
        return float(value) if shape == "float" else value
    if shape[0] == "list":
        if not isinstance(value, list | tuple):
            raise Mismatch(f"{where or 'the value'} is not a list")
        return [conform(v, shape[1], f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise Mismatch(f"{where or 'the value'} is not a struct (a mapping of names)")
    return {name: conform(value.get(name), t, f"{where}.{name}" if where else name) for name, t in shape[1]}


def _parse(text: str, how: str) -> Any:
    if how == "json":
        return json.loads(text)
    return ast.literal_eval(text)


def parse_value(text: str, how: str, shape: Any) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, why)`` when ``text`` does not parse or has another shape."""
    if len(text) > MAX_TEXT:
        return None, f"is longer than {MAX_TEXT} characters"
    try:
        parsed = _parse(text, how)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None, "is not valid JSON" if how == "json" else "is not a Python literal"
    try:
        return conform(parsed, shape), None
    except Mismatch as exc:
        return None, f"does not match {_text(shape)}: {exc}"
    except RecursionError:
        return None, "is nested too deeply"


def _text(shape: Any) -> str:
    from include.etl.contract import nested_text

    return nested_text(shape)


def parse_nested_column(col: Column, text: Any, reasons: Reasons) -> Any:
    """Arrow strings (null: missing) -> the column's nested Arrow type; bad values get their reason."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from include.etl.contract import parse_nested
    from include.etl.convert import nested_arrow_type

    shape = parse_nested(col.type)
    arrow = nested_arrow_type(shape)
    how = col.format or "json"
    encoded = pc.dictionary_encode(text).combine_chunks() if isinstance(text, pa.ChunkedArray) else pc.dictionary_encode(text)
    values, problems = [], []
    for item in encoded.dictionary.to_pylist():
        value, why = parse_value(item, how, shape)
        values.append(value)
        problems.append(why)
    if not values:
        return pa.nulls(len(text), arrow)
    indices = encoded.indices
    why_per_row = np.array(problems, dtype=object)[indices.fill_null(0).to_numpy(zero_copy_only=False)]
    why_per_row[~pc.is_valid(indices).to_numpy(zero_copy_only=False)] = None
    for why in sorted({w for w in problems if w}):
        reasons.add(why_per_row == why, f"{col.name} {why}")
    return pc.take(pa.array(values, arrow), indices)
