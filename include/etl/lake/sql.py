"""SQL over the lake: one read-only DuckDB query over every Delta table, by name.

:func:`query` is the one entry point (the Lake view's SQL page calls it too)::

    from include.etl.lake.sql import query

    result = query("SELECT region, sum(amount) AS amount FROM shop.orders "
                   "WHERE ds >= '2024-11-01' GROUP BY region ORDER BY amount DESC")
    result.columns, result.rows, result.truncated, result.elapsed_s

Names: the table ``{lake}/{pipeline}/{table}`` is ``<pipeline>.<table>`` (one DuckDB schema per
pipeline), the rejects of ``table`` (``{pipeline}/_rejects/{table}``) are
``<pipeline>._rejects_<table>``. The partition column ``ds`` is a column like the others;
a filter on it reads only the matching partitions.

Each call opens a fresh in-memory DuckDB connection, registers the tables the statement names
(every table when it names none, e.g. ``SHOW ALL TABLES``) as ``DeltaTable(...).to_pyarrow_dataset()``
of their latest version, then locks the configuration with external access off: the statement
can read those tables and nothing else (no file, URL, extension, attached database or
Python variable). Only one ``SELECT`` is accepted (``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``FROM …``
and ``VALUES`` are SELECTs to DuckDB); every other statement is refused before anything runs.
At most ``max_rows`` rows are fetched (``truncated`` says there were more), and the statement is
interrupted after ``timeout_s``. Errors are :class:`LakeSQLError` subclasses whose message is
meant for the person who wrote the SQL.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from include.etl.lake import REJECTS, LakeLocation, list_tables

__all__ = [
    "LakeSQLError", "LakeTable", "QueryRefused", "QueryResult", "QuerySyntaxError", "QueryTimeout", "UnknownTable",
    "MAX_ROWS", "TIMEOUT_S", "query", "tables",
]

MAX_ROWS = 10_000
TIMEOUT_S = 30.0
MEMORY_LIMIT = "1GB"  # DuckDB's own memory; with no temp directory, a query that needs more fails
THREADS = 2

_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# identifiers (quoted or not), dots and any other character: enough to find <pipeline>.<table>
_TOKENS = re.compile(r'"(?:[^"]|"")*"|[^\W\d][\w$]*|\.|\S')


class LakeSQLError(ValueError):
    """A query over the lake cannot be answered; the message says why, for the person who wrote it."""

    kind = "error"


class QuerySyntaxError(LakeSQLError):
    """DuckDB cannot parse the statement."""

    kind = "syntax"


class QueryRefused(LakeSQLError):
    """Not a single read-only SELECT, or it reaches for something outside the lake's tables."""

    kind = "refused"


class UnknownTable(LakeSQLError):
    """The statement names a table the lake does not have; :attr:`tables` are the ones it has."""

    kind = "unknown_table"

    def __init__(self, message: str, tables: list[str]):
        super().__init__(message)
        self.tables = tables


class QueryTimeout(LakeSQLError):
    """The statement ran longer than its time limit and was interrupted."""

    kind = "timeout"


@dataclass(frozen=True)
class LakeTable:
    """A Delta table of the lake and its SQL name."""

    pipeline: str
    table: str  # as the lake names it: ``sales_by_country`` or ``_rejects/invoice_lines``
    uri: str

    @property
    def sql_table(self) -> str:
        """The table's name inside its pipeline's schema (``_rejects/x`` is ``_rejects_x``)."""
        return self.table.replace("/", "_")

    @property
    def name(self) -> str:
        """``<pipeline>.<table>`` as a statement writes it (quoted only when it has to be)."""
        return f"{_ident(self.pipeline)}.{_ident(self.sql_table)}"


@dataclass(frozen=True)
class QueryResult:
    """The answer of :func:`query`: ``rows`` are tuples of JSON-friendly values (see :func:`plain`)."""

    columns: list[str]
    types: list[str]
    rows: list[tuple]
    truncated: bool  # the result had more than ``max_rows`` rows; the first ``max_rows`` are here
    elapsed_s: float
    max_rows: int
    tables: list[str] = field(default_factory=list)  # the lake tables registered for the statement

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "types": self.types, "rows": [list(r) for r in self.rows],
                "truncated": self.truncated, "elapsed_s": round(self.elapsed_s, 3), "max_rows": self.max_rows}


def tables(lake: Any = None) -> list[LakeTable]:
    """Every Delta table of the lake (``lake``: a URI, a path or a LakeLocation; default the settings')."""
    location = _location(lake)
    return [LakeTable(p, t, location.join(p, t)) for p, t in list_tables(location)]


def query(sql: str, *, lake: Any = None, max_rows: int = MAX_ROWS, timeout_s: float = TIMEOUT_S,
          memory_limit: str = MEMORY_LIMIT, threads: int = THREADS) -> QueryResult:
    """Run one read-only SELECT over the lake's tables and return at most ``max_rows`` rows.

    ``lake``: a URI (``file:///…``, ``s3://bucket/prefix``), a path or a :class:`LakeLocation`;
    default ``Settings.from_env()``'s lake. Tables are ``<pipeline>.<table>`` and
    ``<pipeline>._rejects_<table>``. ``timeout_s`` bounds the whole call: the statement is
    interrupted when it is reached. ``memory_limit`` and ``threads`` bound DuckDB's share of
    this process. Raises :class:`QuerySyntaxError`, :class:`QueryRefused`,
    :class:`UnknownTable`, :class:`QueryTimeout` or :class:`LakeSQLError`.
    """
    import duckdb

    if not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows={max_rows!r} must be a positive integer")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r} must be positive")
    start = time.monotonic()
    _check_statement(sql)
    location = _location(lake)
    available = tables(location)
    con = duckdb.connect(":memory:", config={
        "enable_external_access": False,  # no file, URL, ATTACH, COPY or extension from here on
        "python_enable_replacements": False,  # no Python variable of this process as a table
        "autoload_known_extensions": False, "autoinstall_known_extensions": False,
        "allow_community_extensions": False,
        "temp_directory": "",  # nothing spilled to disk: over memory_limit, the query fails
        "memory_limit": memory_limit, "threads": threads,
    })
    try:
        registered = _register(con, sql, available, location)
        con.execute("SET lock_configuration = true")  # nor can the statement change the above
        return _run(con, sql, registered, available, start, max_rows, timeout_s)
    finally:
        con.close()  # always: a connection left to the interpreter's exit can crash it


# -- the statement -----------------------------------------------------------------------------


def _check_statement(sql: str) -> None:
    """One SELECT, or QuerySyntaxError / QueryRefused before anything runs."""
    import duckdb

    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused("no SQL given: write one SELECT statement")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.ParserException as exc:
        raise QuerySyntaxError(str(exc)) from exc
    if len(statements) != 1:
        raise QueryRefused(f"{len(statements)} statements given: run one SELECT at a time" if statements
                           else "no statement given: write one SELECT statement")
    kind, first = statements[0].type, _first_word(sql)
    if kind != duckdb.StatementType.SELECT or first == "PRAGMA":  # DuckDB runs some PRAGMAs as SELECTs
        raise QueryRefused(f"{first or kind.name} statements are refused: only one read-only SELECT runs over "
                           "the lake (no INSERT, CREATE, COPY, ATTACH, INSTALL, LOAD, PRAGMA or SET)")


def _first_word(sql: str) -> str:
    import duckdb

    tokens = duckdb.tokenize(sql)
    if not tokens:
        return ""
    match = re.match(r"\w+", sql[tokens[0][0]:])
    return match.group(0).upper() if match else ""


# -- the tables --------------------------------------------------------------------------------


def _location(lake: Any) -> LakeLocation:
    if lake is None:
        from include.etl.settings import Settings

        settings = Settings.from_env()
        return LakeLocation.resolve(settings.lake_uri, conn_id=settings.lake_conn_id)
    return LakeLocation.resolve(lake)


def _register(con: Any, sql: str, available: list[LakeTable], location: LakeLocation) -> list[LakeTable]:
    """Register the tables ``sql`` names (all of them when it names none) as ``<pipeline>.<table>`` views."""
    from deltalake import DeltaTable

    wanted = _named(sql, available)
    schemas: set[str] = set()
    for i, t in enumerate(wanted):
        try:
            dataset = DeltaTable(t.uri, storage_options=dict(location.storage_options)).to_pyarrow_dataset()
        except Exception as exc:  # noqa: BLE001 - delta-rs raises several kinds; the message names the table
            raise LakeSQLError(f"cannot read {t.name} ({t.uri}): {type(exc).__name__}: {exc}") from exc
        con.register(f"__lake_{i}", dataset)
        if t.pipeline not in schemas:
            con.execute(f"CREATE SCHEMA {_quote(t.pipeline)}")
            schemas.add(t.pipeline)
        con.execute(f"CREATE VIEW {_quote(t.pipeline)}.{_quote(t.sql_table)} AS SELECT * FROM __lake_{i}")
    return wanted


def _named(sql: str, available: list[LakeTable]) -> list[LakeTable]:
    """The lake tables ``sql`` names as ``<pipeline>.<table>``; all of them when it names none.

    Read from the text's tokens, so a name in a string (``query_table('shop.orders')``) or a
    comment counts too: opening a table too many costs a little time, one too few would fail.
    """
    tokens = _TOKENS.findall(sql)
    pairs = {(_unquote(a), _unquote(b)) for a, dot, b in zip(tokens, tokens[1:], tokens[2:], strict=False)
             if dot == "." and a != "." and b != "."}
    return [t for t in available if (t.pipeline.lower(), t.sql_table.lower()) in pairs] or available


def _unquote(token: str) -> str:
    """An identifier token as DuckDB compares it: unquoted, case-insensitive."""
    if token.startswith('"'):
        token = token[1:-1].replace('""', '"')
    return token.lower()


# -- running it --------------------------------------------------------------------------------


def _run(con: Any, sql: str, registered: list[LakeTable], available: list[LakeTable], start: float,
         max_rows: int, timeout_s: float) -> QueryResult:
    import duckdb

    remaining = timeout_s - (time.monotonic() - start)
    if remaining <= 0:
        raise QueryTimeout(f"query exceeded {timeout_s:g} s (the time limit) while opening the lake's tables")
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(remaining, interrupt)
    timer.daemon = True
    timer.start()
    try:
        cursor = con.execute(sql)
        rows = cursor.fetchmany(max_rows + 1)
        description = cursor.description or []
    except duckdb.InterruptException as exc:
        raise QueryTimeout(f"query exceeded {timeout_s:g} s (the time limit) and was stopped") from exc
    except duckdb.Error as exc:
        if fired.is_set():
            raise QueryTimeout(f"query exceeded {timeout_s:g} s (the time limit) and was stopped") from exc
        raise _explain(exc, available) from exc
    finally:
        timer.cancel()
    return QueryResult(
        columns=[d[0] for d in description],
        types=[str(d[1]) for d in description],
        rows=[tuple(plain(v) for v in row) for row in rows[:max_rows]],
        truncated=len(rows) > max_rows,
        elapsed_s=time.monotonic() - start,
        max_rows=max_rows,
        tables=[t.name for t in registered],
    )


def _explain(exc: Exception, available: list[LakeTable]) -> LakeSQLError:
    """DuckDB's error as one of ours, saying what the lake has or what is out of reach."""
    import duckdb

    message = str(exc)
    names = [t.name for t in available]
    if isinstance(exc, duckdb.CatalogException) and re.search(r"Table with name .* does not exist", message):
        listing = ", ".join(names) if names else "none yet"
        return UnknownTable(f"{message}\nTables of the lake (<pipeline>.<table>, rejects as "
                            f"<pipeline>.{REJECTS}_<table>): {listing}", names)
    if isinstance(exc, duckdb.PermissionException):
        return QueryRefused(f"{message}\nOnly the lake's tables can be read here: no files, URLs, "
                            "extensions or other databases")
    if isinstance(exc, duckdb.ParserException):
        return QuerySyntaxError(message)
    if isinstance(exc, duckdb.OutOfMemoryException):
        return LakeSQLError(f"{message}\nThe query needs more memory than its limit: "
                            "aggregate or filter more (e.g. on ds), or select fewer columns")
    return LakeSQLError(message)


# -- values ------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A DuckDB value as JSON can carry it.

    None, bool, int, str as they are; float as is, except NaN and ±infinity as the strings
    ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; Decimal as float; dates, times and timestamps in
    ISO 8601; intervals as ``str(timedelta)``; UUIDs as text; bytes as ``\\xNN`` text (DuckDB's
    way); lists and structs (dicts) element by element; maps as dicts with text keys.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, decimal.Decimal):
        return plain(float(value))
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in bytes(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [plain(v) for v in value]
    return str(value)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ident(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else _quote(name)
