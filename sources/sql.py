"""SQL text for the mapped reads, with every value as a parameter.

A statement is built as segments: SQL text we write, quoted identifiers, and :class:`Param`
values (window bounds, JSON paths). :meth:`Sql.bound` renders placeholders for the drivers that
bind (SQLite and PostgreSQL through ADBC, pymysql); :meth:`Sql.inline` renders the values as
literals for the two paths that cannot bind: PostgreSQL's ``COPY`` (ADBC's streaming read; with
parameters ADBC returns one materialised batch) and connectorx. :func:`literal` renders only our
own datetimes and finite numbers, and strings from a closed alphabet (JSON paths of checked
segments, ISO bounds); anything else is refused, so no user text is ever spliced into SQL.
Identifiers (checked in :mod:`sources.mapping`) are quoted by the database's rules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from core.errors import Reason, SourceError
from sources.mapping import TableSpec, placeholders, split_source
from sources.transform import Leaf
from sources.window import TsStorage

Dialect = Literal["sqlite", "postgresql", "mysql"]
NULL_TEXT = "\x00"  # SQLite sentinels: ADBC infers a column's type from its first batch
NULL_REAL = -1.2345678901234567e308
NULL_INT = -9223372036854775807
COMPANION = "#text"  # SQLite: the non-numeric values of a numeric leaf, as text
_SAFE_TEXT = re.compile(r'^[A-Za-z0-9 _:\-./$"{},+]*$')


@dataclass(frozen=True)
class Param:
    """A value bound to the statement."""

    value: Any


@dataclass
class Sql:
    """Segments of a statement: text we wrote, or :class:`Param` values."""

    parts: list[str | Param] = field(default_factory=list)

    def add(self, *parts: str | Param | Sql) -> Sql:
        for part in parts:
            self.parts.extend(part.parts if isinstance(part, Sql) else [part])
        return self

    def bound(self, dialect: Dialect) -> tuple[str, tuple[Any, ...]]:
        """Text with the dialect's placeholders (``$1``, ``?``, ``%s``) and the values to bind."""
        text, values = [], []
        for part in self.parts:
            if isinstance(part, Param):
                values.append(part.value)
                text.append({"postgresql": f"${len(values)}", "sqlite": "?", "mysql": "%s"}[dialect])
            else:  # pymysql formats the text with %: a literal % must be doubled when values are bound
                text.append(part.replace("%", "%%") if dialect == "mysql" else part)
        if dialect == "mysql" and not values:
            return "".join(p for p in self.parts if isinstance(p, str)), ()
        return "".join(text), tuple(values)

    def inline(self, dialect: Dialect) -> str:
        """Text with every value rendered by :func:`literal` (for COPY and connectorx)."""
        return "".join(literal(dialect, p.value) if isinstance(p, Param) else p for p in self.parts)


def literal(dialect: Dialect, value: Any) -> str:
    """A SQL literal for one of our own values; anything that is not provably inert is refused."""
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
        if dialect == "postgresql":
            return f"'{text}+00'::timestamptz" if value.tzinfo is not None else f"'{text}'::timestamp"
        return f"'{text}'"
    if isinstance(value, bool):
        raise TypeError("booleans are never rendered into SQL")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str) and _SAFE_TEXT.match(value):
        return f"'{value}'"
    raise SourceError(f"refusing to render {type(value).__name__} value {str(value)[:40]!r} into SQL",
                      reason=Reason.BAD_MAPPING, hint="JSON path segments may hold letters, digits, '_' and '-'")


def quote(dialect: Dialect, name: str) -> str:
    """An identifier quoted by the database's rules (``schema.table`` quoted part by part)."""
    q = "`" if dialect == "mysql" else '"'
    return ".".join(q + part.replace(q, q + q) + q for part in name.split("."))


def quote_column(dialect: Dialect, name: str) -> str:
    """A column name quoted whole (a column name may hold a dot)."""
    q = "`" if dialect == "mysql" else '"'
    return q + name.replace(q, q + q) + q


def source_expr(dialect: Dialect, source: str, *, relation_alias: str | None = None) -> Sql:
    """A column, or a JSON path inside one, as an expression (the path is a parameter)."""
    column, path = split_source(source)
    col = quote_column(dialect, column) if relation_alias is None else f"{relation_alias}.{quote_column(dialect, column)}"
    if not path:
        return Sql([col])
    if dialect == "postgresql":
        return Sql([f"({col}::jsonb #>> ", Param("{" + ",".join(path) + "}"), "::text[])"])
    json_path = "$." + ".".join(f'"{p}"' for p in path)
    if dialect == "mysql":
        return Sql([f"NULLIF(JSON_UNQUOTE(JSON_EXTRACT({col}, ", Param(json_path), ")), 'null')"])
    return Sql([f"json_extract({col}, ", Param(json_path), ")"])


def select_items(dialect: Dialect, leaves: list[Leaf], relation_alias: str | None) -> Sql:
    """``<expr> AS "<alias>", ...``; SQLite leaves are typed for its first-batch type inference."""
    sql = Sql()
    for i, leaf in enumerate(leaves):
        expr = source_expr(dialect, leaf.source, relation_alias=relation_alias)
        if i:
            sql.add(", ")
        if dialect != "sqlite":
            sql.add(expr, f" AS {quote_column(dialect, leaf.alias)}")
            continue
        sql.add(*_sqlite_typed(expr, leaf))
    return sql


def _sqlite_typed(expr: Sql, leaf: Leaf) -> list[str | Sql]:
    """SQLite keeps any value in any column and CAST never fails ('abc' AS REAL is 0.0): numbers are
    read as numbers and every other value of a numeric leaf as text beside it, never cast."""
    alias, companion = quote_column("sqlite", leaf.alias), quote_column("sqlite", leaf.alias + COMPANION)
    if leaf.kind in ("text", "native"):
        return ["COALESCE(CAST(", expr, f" AS TEXT), char(0)) AS {alias}"]
    numeric, storage = ("('integer')", "") if leaf.kind == "integer" else ("('integer', 'real')", "REAL")
    sentinel = NULL_INT if leaf.kind == "integer" else repr(NULL_REAL)
    value = ["COALESCE(CASE WHEN typeof(", expr, f") IN {numeric} THEN "]
    value += ["CAST(", expr, f" AS {storage})"] if storage else [expr]
    value += [f" END, {sentinel}) AS {alias}, "]
    other = ["COALESCE(CASE WHEN typeof(", expr, f") NOT IN {numeric[:-1]}, 'null') THEN CAST(", expr,
             f" AS TEXT) END, char(0)) AS {companion}"]
    return [*value, *other]


def from_clause(dialect: Dialect, part: TableSpec, bounds: tuple[Any, Any] | None) -> Sql:
    """``FROM "table"``, or ``FROM (<query with :start/:end bound>) AS q``."""
    if part.query is None:
        return Sql([f" FROM {quote(dialect, part.table or '')}"])
    sql, at = Sql([" FROM ("]), 0
    for lo, hi, which in placeholders(part.query):
        if bounds is None:
            raise ValueError("a `query:` needs the window bounds")
        sql.add(part.query[at:lo], Param(bounds[0] if which == "start" else bounds[1]))
        at = hi
    return sql.add(part.query[at:], ") AS q")


def window_clause(dialect: Dialect, part: TableSpec, ts_column: str, bounds: tuple[Any, Any] | None) -> Sql:
    """`` WHERE ts >= start AND ts < end`` on the stored column (a ``query:`` windows itself)."""
    if bounds is None or part.query is not None:
        return Sql()
    col = quote_column(dialect, ts_column)
    return Sql([f" WHERE {col} >= ", Param(bounds[0]), f" AND {col} < ", Param(bounds[1])])


def select_sql(dialect: Dialect, part: TableSpec, leaves: list[Leaf], ts_column: str | None,
               bounds: tuple[Any, Any] | None, order: list[str]) -> Sql:
    """``SELECT <leaves> FROM <table or query> [WHERE window] [ORDER BY ts, event id]``."""
    alias = "q" if part.query is not None else None
    sql = Sql(["SELECT "]).add(select_items(dialect, leaves, alias), from_clause(dialect, part, bounds))
    if ts_column is not None:
        sql.add(window_clause(dialect, part, ts_column, bounds))
    if order:
        sql.add(" ORDER BY ")
        for i, source in enumerate(order):
            sql.add(", " if i else "", source_expr(dialect, source, relation_alias=alias))
    return sql


def count_sql(dialect: Dialect, part: TableSpec, ts_column: str, bounds: tuple[Any, Any]) -> Sql:
    """``SELECT COUNT(*)`` of the same window (what the read must match)."""
    return Sql(["SELECT COUNT(*)"]).add(from_clause(dialect, part, bounds), window_clause(dialect, part, ts_column, bounds))


def probe_sql(dialect: Dialect, part: TableSpec, bounds: tuple[Any, Any] | None) -> Sql:
    """``SELECT * ... WHERE 1 = 0``: the relation's columns and types, no rows."""
    return Sql(["SELECT *"]).add(from_clause(dialect, part, bounds), " WHERE 1 = 0")


def encoded_bounds(storage: TsStorage, start: datetime, end: datetime) -> tuple[Any, Any]:
    """The window bounds in the stored encoding."""
    return storage.encode(start), storage.encode(end)
