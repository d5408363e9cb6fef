"""Row rules written as expressions over a row's fields, e.g. ``rating >= 0.5 and rating * 2 % 1 == 0``.

A small, safe language: the text is parsed with Python's :mod:`ast` and only the nodes below
are allowed (never ``eval``); it compiles to pyarrow compute kernels that run over a block's
typed columns, so every engine evaluates a rule identically.

- names: the dataset's columns, by header name or output name (``col("gdp ($)")`` for any name);
- literals: numbers, strings, ``True``, ``False``, ``None``;
- arithmetic ``+ - * / // % **`` and unary ``-``; ``+`` of two strings concatenates them;
- comparisons ``== != < <= > >=`` (chains too), ``x is None``, ``x is not None``,
  ``x in ("a", "b")``, ``x not in (...)``;
- ``and``, ``or``, ``not``; ``a if cond else b``;
- functions: ``str int float len abs round lower upper strip year month day matches col``.

Nulls propagate as in SQL: a rule whose value is null for a row (a field is missing) does not
reject it; say ``x is not None and ...`` to require a field. Type mistakes (``title + year``
without ``str(year)``, an unknown column or function) fail when the contract is built.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 2000
NUMBERS = ("integer", "float", "decimal")
TEMPORAL = ("date", "timestamp")
# column type -> the expression type (nested values can only be tested for None and measured)
_TYPE_OF = {"integer": "integer", "float": "float", "decimal": "float", "string": "string", "boolean": "boolean",
            "date": "date", "timestamp": "timestamp"}
_CMP = {ast.Eq: "equal", ast.NotEq: "not_equal", ast.Lt: "less", ast.LtE: "less_equal",
        ast.Gt: "greater", ast.GtE: "greater_equal"}
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}
FUNCTIONS = ("str", "int", "float", "len", "abs", "round", "lower", "upper", "strip", "year", "month", "day",
             "matches", "col")
_INT_TEXT = r"^\s*[+-]?[0-9]{1,18}\s*$"
_FLOAT_TEXT = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"

Env = Mapping[str, Any]  # column name -> Arrow array
Fn = Callable[[Env], Any]


class ExpressionError(ValueError):
    """The expression is not valid (the contract reports it as a :class:`ContractError`)."""


@dataclass(frozen=True)
class Compiled:
    """A compiled expression: its result type and ``fn(columns) -> Arrow array or scalar``."""

    type: str
    fn: Fn

    def evaluate(self, columns: Env, length: int) -> Any:
        """The value for every row (an Arrow array of ``length``)."""
        import pyarrow as pa

        value = self.fn(columns)
        if isinstance(value, pa.Scalar):  # no column involved: the same for every row
            return pa.array([value.as_py()] * length, value.type)
        return value


def _an(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _pc() -> Any:
    import pyarrow.compute as pc

    return pc


def _lit(value: Any) -> Fn:
    def fn(env: Env) -> Any:
        import pyarrow as pa

        return pa.scalar(value) if value is not None else pa.scalar(None, pa.null())

    return fn


class _Compiler:
    def __init__(self, types: Mapping[str, str]) -> None:
        self.types = dict(types)

    def fail(self, node: ast.AST, problem: str) -> None:
        raise ExpressionError(f"{problem} (at column {getattr(node, 'col_offset', 0) + 1})")

    def visit(self, node: ast.AST) -> Compiled:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            self.fail(node, f"{type(node).__name__} is not allowed in a rule")
        return method(node)

    # -- leaves ------------------------------------------------------------------------------
    def _Constant(self, node: ast.Constant) -> Compiled:
        value = node.value
        if value is None:
            return Compiled("null", _lit(None))
        kind = {bool: "boolean", int: "integer", float: "float", str: "string"}.get(type(value))
        if kind is None:
            self.fail(node, f"the literal {value!r} is not allowed (numbers, strings, True, False, None)")
        return Compiled(kind, _lit(value))

    def _Name(self, node: ast.Name) -> Compiled:
        return self._column(node, node.id)

    def _column(self, node: ast.AST, name: str) -> Compiled:
        if name not in self.types:
            self.fail(node, f"unknown column {name!r}; columns: {', '.join(sorted(self.types))}")
        return Compiled(self.types[name], lambda env: env[name])

    # -- operators ---------------------------------------------------------------------------
    def _BoolOp(self, node: ast.BoolOp) -> Compiled:
        parts = [self._boolean(v) for v in node.values]
        kernel = "and_kleene" if isinstance(node.op, ast.And) else "or_kleene"

        def fn(env: Env) -> Any:
            result = parts[0](env)
            for p in parts[1:]:
                result = getattr(_pc(), kernel)(result, p(env))
            return result

        return Compiled("boolean", fn)

    def _boolean(self, node: ast.AST) -> Fn:
        compiled = self.visit(node)
        if compiled.type not in ("boolean", "null"):
            self.fail(node, f"expected a condition (true or false), got {_an(compiled.type)}")
        return compiled.fn

    def _UnaryOp(self, node: ast.UnaryOp) -> Compiled:
        if isinstance(node.op, ast.Not):
            inner = self._boolean(node.operand)
            return Compiled("boolean", lambda env: _pc().invert(inner(env)))
        operand = self.visit(node.operand)
        if operand.type not in (*NUMBERS, "null"):
            self.fail(node, f"unary {type(node.op).__name__} needs a number, got {_an(operand.type)}")
        if isinstance(node.op, ast.USub):
            return Compiled(operand.type, lambda env: _pc().negate(operand.fn(env)))
        return operand

    def _BinOp(self, node: ast.BinOp) -> Compiled:
        op = _ARITH.get(type(node.op))
        if op is None:
            self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        left, right = self.visit(node.left), self.visit(node.right)
        if op == "+" and "string" in (left.type, right.type):
            if {left.type, right.type} - {"string", "null"}:
                self.fail(node, f"cannot add {_an(left.type)} and {_an(right.type)}: convert with str(...) first")
            return Compiled("string", lambda env: _pc().binary_join_element_wise(
                *_aligned(left.fn(env), right.fn(env)), ""))
        for side in (left, right):
            if side.type not in (*NUMBERS, "null"):
                self.fail(node, f"operator {op} needs numbers, got {_an(side.type)}")
        both_int = left.type == right.type == "integer"
        kind = "integer" if both_int and op in ("+", "-", "*", "//", "%") else "float"
        return Compiled(kind, _arith(op, left.fn, right.fn, kind))

    def _Compare(self, node: ast.Compare) -> Compiled:
        tests: list[Fn] = []
        left_node = node.left
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            tests.append(self._compare(node, left_node, op, right_node))
            left_node = right_node

        def fn(env: Env) -> Any:
            result = tests[0](env)
            for t in tests[1:]:
                result = _pc().and_kleene(result, t(env))
            return result

        return Compiled("boolean", fn)

    def _compare(self, node: ast.AST, left_node: ast.AST, op: ast.cmpop, right_node: ast.AST) -> Fn:
        left = self.visit(left_node)
        if isinstance(op, ast.Is | ast.IsNot):
            if not (isinstance(right_node, ast.Constant) and right_node.value is None):
                self.fail(node, "'is' only compares with None (x is None, x is not None)")
            kernel = "is_null" if isinstance(op, ast.Is) else "is_valid"
            return lambda env: getattr(_pc(), kernel)(left.fn(env))
        if isinstance(op, ast.In | ast.NotIn):
            return self._membership(node, left, op, right_node)
        right = self.visit(right_node)
        if not _comparable(left.type, right.type):
            self.fail(node, f"cannot compare {_an(left.type)} with {_an(right.type)}")
        kernel = _CMP[type(op)]
        return lambda env: getattr(_pc(), kernel)(*_aligned(left.fn(env), right.fn(env)))

    def _membership(self, node: ast.AST, left: Compiled, op: ast.cmpop, right_node: ast.AST) -> Fn:
        if not isinstance(right_node, ast.Tuple | ast.List | ast.Set) or not all(
                isinstance(e, ast.Constant) for e in right_node.elts):
            self.fail(node, "'in' needs a list of literals, e.g. x in ('a', 'b')")
        values = [e.value for e in right_node.elts]
        if not values or any(not _comparable(left.type, self._Constant(e).type) for e in right_node.elts):
            self.fail(node, f"'in' needs literals of the type of the left side ({left.type})")
        negate = isinstance(op, ast.NotIn)

        def fn(env: Env) -> Any:
            import pyarrow as pa

            pc = _pc()
            value = left.fn(env)
            arr = value if isinstance(value, pa.Array | pa.ChunkedArray) else pa.array([value.as_py()])
            choices = pa.array(values)
            try:
                choices = choices.cast(arr.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. an integer in (1.5, 2): as floats
                arr, choices = arr.cast(pa.float64()), choices.cast(pa.float64())
            found = pc.is_in(arr, value_set=choices)
            found = pc.if_else(pc.is_null(arr), pa.scalar(None, pa.bool_()), found)  # null in (...) is null
            found = pc.invert(found) if negate else found
            return found if isinstance(value, pa.Array | pa.ChunkedArray) else found[0]

        return fn

    def _IfExp(self, node: ast.IfExp) -> Compiled:
        test = self._boolean(node.test)
        body, orelse = self.visit(node.body), self.visit(node.orelse)
        kind = body.type if body.type == orelse.type or orelse.type == "null" else orelse.type
        if body.type != "null" and orelse.type != "null" and not _comparable(body.type, orelse.type):
            self.fail(node, f"both branches must have one type, got {_an(body.type)} and {_an(orelse.type)}")
        return Compiled(kind, lambda env: _pc().if_else(test(env), *_aligned(body.fn(env), orelse.fn(env))))

    # -- functions ---------------------------------------------------------------------------
    def _Call(self, node: ast.Call) -> Compiled:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            self.fail(node, f"unknown function {ast.unparse(node.func)!r}; allowed: {', '.join(FUNCTIONS)}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            self.fail(node, f"{name}() takes plain arguments")
        if name == "col":
            if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) or not isinstance(node.args[0].value, str):
                self.fail(node, "col() takes a column name as a string literal")
            return self._column(node, node.args[0].value)
        if name == "matches":
            return self._matches(node)
        if name == "round":
            return self._round(node)
        if len(node.args) != 1:
            self.fail(node, f"{name}() takes one argument")
        arg = self.visit(node.args[0])
        return _FUNCS[name](self, node, arg)

    def _matches(self, node: ast.Call) -> Compiled:
        if len(node.args) != 2 or not isinstance(node.args[1], ast.Constant) or not isinstance(node.args[1].value, str):
            self.fail(node, "matches(text, 'regex') takes a text and a regular expression literal")
        text, pattern = self.visit(node.args[0]), node.args[1].value
        if text.type not in ("string", "null"):
            self.fail(node, f"matches() needs a string, got {_an(text.type)}")
        try:  # checked with Python's re (no pyarrow at contract time); Arrow runs it with RE2, which
            re.compile(pattern)  # lacks backreferences and lookarounds
        except re.error as exc:
            self.fail(node, f"matches(): invalid regular expression {pattern!r} ({exc})")
        if re.search(r"\\[1-9]|\(\?[=!<]", pattern):
            self.fail(node, f"matches(): {pattern!r} uses a backreference or lookaround, which RE2 does not run")
        return Compiled("boolean", lambda env: _pc().match_substring_regex(text.fn(env), pattern))

    def _round(self, node: ast.Call) -> Compiled:
        if not 1 <= len(node.args) <= 2 or (len(node.args) == 2 and not (
                isinstance(node.args[1], ast.Constant) and type(node.args[1].value) is int)):
            self.fail(node, "round(x) or round(x, digits) with digits an integer literal")
        value = self.visit(node.args[0])
        if value.type not in (*NUMBERS, "null"):
            self.fail(node, f"round() needs a number, got {_an(value.type)}")
        digits = node.args[1].value if len(node.args) == 2 else 0
        return Compiled(value.type, lambda env: _pc().round(value.fn(env), ndigits=digits, round_mode="half_to_even"))


def _comparable(a: str, b: str) -> bool:
    if "null" in (a, b) or a == b:
        return True
    return (a in NUMBERS and b in NUMBERS) or (a in TEMPORAL and b in TEMPORAL)


def _aligned(left: Any, right: Any) -> tuple[Any, Any]:
    """Operands with a common type: a null literal takes the other side's type; dates meet timestamps."""
    import pyarrow as pa

    lt, rt = left.type, right.type
    if pa.types.is_null(lt) and not pa.types.is_null(rt):
        left = pa.scalar(None, rt)
    elif pa.types.is_null(rt) and not pa.types.is_null(lt):
        right = pa.scalar(None, lt)
    elif pa.types.is_date(lt) and pa.types.is_timestamp(rt):
        left = left.cast(rt)
    elif pa.types.is_timestamp(lt) and pa.types.is_date(rt):
        right = right.cast(lt)
    return left, right


def _arith(op: str, left: Fn, right: Fn, kind: str) -> Fn:
    def fn(env: Env) -> Any:
        import pyarrow as pa

        pc = _pc()
        a, b = _aligned(left(env), right(env))
        if op in ("/", "**") or kind == "float":
            a, b = a.cast(pa.float64()), b.cast(pa.float64())
        if op == "+":
            return pc.add(a, b)
        if op == "-":
            return pc.subtract(a, b)
        if op == "*":
            return pc.multiply(a, b)
        if op == "/":
            return pc.divide(a, b)
        if op == "**":
            return pc.power(a, b)
        if kind == "integer":  # // and % of integers: floor semantics as in Python; x // 0 is null
            safe_b = pc.if_else(pc.equal(b, 0), pa.scalar(None, pa.int64()), b)
            floor = pc.cast(pc.floor(pc.divide(a.cast(pa.float64()), safe_b.cast(pa.float64()))), pa.int64())
            return floor if op == "//" else pc.subtract(a, pc.multiply(safe_b, floor))
        floor = pc.floor(pc.divide(a, b))
        return floor if op == "//" else pc.subtract(a, pc.multiply(b, floor))

    return fn


def _f_str(c: _Compiler, node: ast.AST, arg: Compiled) -> Compiled:
    def fn(env: Env) -> Any:
        import pyarrow as pa

        value = arg.fn(env)
        if pa.types.is_boolean(value.type):  # Python's spelling, not Arrow's
            return _pc().if_else(value, "True", "False")
        return value.cast(pa.string())

    if arg.type == "nested":
        c.fail(node, "str() of a nested value is not allowed")
    return Compiled("string", fn)


def _f_number(kind: str) -> Callable[[_Compiler, ast.AST, Compiled], Compiled]:
    def build(c: _Compiler, node: ast.AST, arg: Compiled) -> Compiled:
        if arg.type not in (*NUMBERS, "string", "boolean", "null"):
            c.fail(node, f"{'int' if kind == 'integer' else 'float'}() of {_an(arg.type)} is not allowed")

        def fn(env: Env) -> Any:
            import pyarrow as pa

            pc = _pc()
            value = arg.fn(env)
            target = pa.int64() if kind == "integer" else pa.float64()
            if pa.types.is_string(value.type):  # text that is not a number becomes null
                ok = pc.match_substring_regex(value, _INT_TEXT if kind == "integer" else _FLOAT_TEXT)
                clean = pc.replace_substring_regex(pc.utf8_trim_whitespace(value), r"^\+", "")
                value = pc.if_else(ok, clean, pa.scalar(None, pa.string()))
                return value.cast(target)
            if kind == "integer" and pa.types.is_floating(value.type):  # truncates, as int(2.7) == 2
                finite = pc.is_finite(value)
                value = pc.if_else(finite, pc.trunc(value), pa.scalar(None, value.type))
            return value.cast(target)

        return Compiled(kind, fn)

    return build


def _f_unary(kernel: str, accepts: tuple[str, ...], result: str | None) -> Callable[..., Compiled]:
    def build(c: _Compiler, node: ast.AST, arg: Compiled) -> Compiled:
        if arg.type not in (*accepts, "null"):
            c.fail(node, f"{node.func.id}() needs a {' or '.join(accepts)}, got {_an(arg.type)}")
        return Compiled(result or arg.type, lambda env: getattr(_pc(), kernel)(arg.fn(env)))

    return build


def _f_len(c: _Compiler, node: ast.AST, arg: Compiled) -> Compiled:
    if arg.type not in ("string", "nested", "null"):
        c.fail(node, f"len() needs a string or a list, got {_an(arg.type)}")
    kernel = "utf8_length" if arg.type == "string" else "list_value_length"
    return Compiled("integer", lambda env: _pc().cast(getattr(_pc(), kernel)(arg.fn(env)), "int64"))


_FUNCS: dict[str, Callable[[_Compiler, ast.AST, Compiled], Compiled]] = {
    "str": _f_str,
    "int": _f_number("integer"),
    "float": _f_number("float"),
    "len": _f_len,
    "abs": _f_unary("abs", NUMBERS, None),
    "lower": _f_unary("utf8_lower", ("string",), "string"),
    "upper": _f_unary("utf8_upper", ("string",), "string"),
    "strip": _f_unary("utf8_trim_whitespace", ("string",), "string"),
    "year": _f_unary("year", TEMPORAL, "integer"),
    "month": _f_unary("month", TEMPORAL, "integer"),
    "day": _f_unary("day", TEMPORAL, "integer"),
}


def compile_expression(text: str, column_types: Mapping[str, str]) -> Compiled:
    """Compile ``text`` over columns of the given contract types (``integer``, ``string``, ... or
    ``nested``); raises :class:`ExpressionError` saying what is wrong. The result must be a condition."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("the expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg} (at column {exc.offset})") from None
    types = {name: _TYPE_OF.get(kind, "nested") for name, kind in column_types.items()}
    try:
        compiled = _Compiler(types).visit(tree.body)
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply") from None
    if compiled.type not in ("boolean", "null"):
        raise ExpressionError(f"a rule must be a condition (true or false), this is {_an(compiled.type)}")
    return compiled
