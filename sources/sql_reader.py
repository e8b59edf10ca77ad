"""Stream a mapped window out of SQLite, PostgreSQL (ADBC) and MariaDB/MySQL (server-side cursor).

The window ``[start, end)`` becomes a ``WHERE`` on the timestamp column (an indexed range scan);
JSON paths become the database's own JSON extraction; rows come ordered by (ts, event id) so the
snapshot digest is reproducible.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rankloop.errors import Reason, SourceError
from sources import connect
from sources.mapping import FieldSpec, TableSpec
from sources.transform import RawKind, raw_kind
from sources.uri import SourceURI

log = logging.getLogger(__name__)
_NULL_TEXT = "\x00"  # SQLite sentinels: ADBC infers a column's type from its first batch
_NULL_REAL = -1.2345678901234567e308


def quote(kind: str, name: str) -> str:
    """Quote an identifier (``schema.table`` parts separately)."""
    q = "`" if kind == "mysql" else '"'
    return ".".join(q + part.replace(q, q + q) + q for part in name.split("."))


def _json_expr(kind: str, column: str, path: list[str]) -> str:
    col = quote(kind, column)
    if kind == "postgresql":
        return f"({col}::jsonb #>> '{{{','.join(path)}}}')"
    jpath = "$." + ".".join(f'"{p}"' for p in path)
    if kind == "mysql":
        return f"NULLIF(JSON_UNQUOTE(JSON_EXTRACT({col}, '{jpath}')), 'null')"
    return f"json_extract({col}, '{jpath}')"


def field_expr(kind: str, source: str, raw: RawKind) -> str:
    """SQL for one leaf: a column or a JSON path inside one, typed for SQLite's type inference."""
    column, *path = source.split(".")
    expr = _json_expr(kind, column, path) if path else quote(kind, column)
    if kind != "sqlite":
        return expr
    if raw == "text":
        return f"COALESCE(CAST({expr} AS TEXT), char(0))"
    if raw == "real":
        return f"COALESCE(CAST({expr} AS REAL), {_NULL_REAL!r})"
    return f"CAST({expr} AS INTEGER)" if raw == "integer" else expr


def bound_literal(kind: str, moment: datetime, unit: str) -> str:
    """The window bound as a SQL literal in the timestamp column's own encoding."""
    moment = moment.astimezone(UTC)
    micros = _micros(moment)
    if unit != "timestamp":
        return repr(epoch_bound(micros, unit))
    if kind == "sqlite":
        return repr(moment.strftime("%Y-%m-%d %H:%M:%S.%f"))
    if kind == "mysql":
        return f"'{moment.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
    return f"'{moment.isoformat()}'"


def epoch_bound(micros: int, unit: str) -> int | float:
    """A bound in epoch ``unit`` such that ``value >= bound`` iff ``value`` is at or after the moment."""
    if unit == "s":
        return micros / 1_000_000
    if unit == "ns":
        return micros * 1000
    per = {"ms": 1_000, "us": 1}[unit]
    return -(-micros // per)


def _micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def resolve_unit(kind: str, unit: str | None) -> str:
    """The storage unit of a timestamp column (``auto``: epoch us in SQLite, native elsewhere)."""
    if unit in (None, "auto"):
        return "us" if kind == "sqlite" and unit == "auto" else "timestamp"
    return unit


def build_query(kind: str, relation: str, leaves: dict[str, tuple[FieldSpec, pa.DataType]],
                ts: FieldSpec | None, start: datetime | None, end: datetime | None,
                order: list[str]) -> str:
    """``SELECT <leaves> FROM relation [WHERE ts in [start, end)] [ORDER BY ...]``."""
    select = ", ".join(f"{field_expr(kind, leaf.source or '', raw_kind(leaf, t))} AS {quote(kind, alias)}"
                       for alias, (leaf, t) in leaves.items())
    sql = f"SELECT {select} FROM {quote(kind, relation)}"
    if ts is not None and start is not None and end is not None:
        col = quote(kind, ts.source or "")
        unit = resolve_unit(kind, ts.unit)
        sql += f" WHERE {col} >= {bound_literal(kind, start, unit)} AND {col} < {bound_literal(kind, end, unit)}"
    if order:
        sql += " ORDER BY " + ", ".join(field_expr(kind, s, "native") for s in order)
    return sql


def typed_leaves(spec: TableSpec, schema: pa.Schema, aliases: dict[str, FieldSpec]) -> dict[str, tuple[FieldSpec, pa.DataType]]:
    """Alias -> (leaf, canonical target type)."""
    return {alias: (leaf, schema.field(alias.rsplit("__", 1)[0]).type) for alias, leaf in aliases.items()}


def check_columns(src: SourceURI, relation: str, found: list[str], leaves: dict[str, tuple[FieldSpec, Any]]) -> None:
    """Fail with expected vs found names when a mapped column is absent."""
    expected = sorted({(leaf.source or "").split(".")[0] for leaf, _ in leaves.values()})
    missing = [c for c in expected if c not in found]
    if missing:
        raise SourceError(
            f"{src.kind} table {relation!r} lacks mapped column(s) {missing}; expected {expected}, found {sorted(found)} "
            f"({src.where})", reason=Reason.MISSING_COLUMN, details={"missing": missing, "found": sorted(found)})


def list_relations(kind: str, conn: Any) -> list[str]:
    """Table names visible to the connection (for 'missing table' messages)."""
    sql = {"sqlite": "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')",
           "postgresql": "SELECT table_name FROM information_schema.tables WHERE table_schema "
                         "NOT IN ('pg_catalog', 'information_schema')",
           "mysql": "SHOW TABLES"}[kind]
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(sql)
        return sorted(str(r[0]) for r in cur.fetchall())


def table_columns(src: SourceURI, conn: Any, relation: str) -> list[str]:
    """Column names of ``relation``; a missing table fails listing the tables that exist."""
    try:
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute(f"SELECT * FROM {quote(src.kind, relation)} WHERE 1 = 0")
            names = [d[0] for d in cur.description]
            with contextlib.suppress(Exception):
                cur.fetchall()
            return names
    except Exception as e:  # noqa: BLE001 - classified below
        error = connect.source_error(src, f"reading table {relation}", e)
        if error.reason is not Reason.MISSING_TABLE:
            raise error from None
        if src.kind == "postgresql":
            conn.rollback()
        found = list_relations(src.kind, conn)
        raise SourceError(f"{src.kind} table {relation!r} not found ({src.where}); expected {relation!r}, found {found}",
                          reason=Reason.MISSING_TABLE, details={"expected": relation, "found": found}) from None


def open_connection(src: SourceURI) -> Any:
    """A DBAPI connection for ``src`` (ADBC for SQLite/PostgreSQL, unbuffered pymysql for MySQL)."""
    if src.kind == "sqlite":
        return connect.connect_sqlite_readonly(src)
    if src.kind == "postgresql":
        return connect.connect_postgres(src)
    return connect.connect_mysql(src, streaming=True)


def stream_query(src: SourceURI, conn: Any, sql: str, batch_rows: int, raw: dict[str, RawKind]) -> Iterator[pa.RecordBatch]:
    """Execute ``sql`` and yield Arrow batches of at most about ``batch_rows`` rows."""
    if src.kind == "mysql":
        yield from _stream_mysql(conn, sql, batch_rows)
        return
    cur = conn.cursor()
    try:
        if src.kind == "sqlite":
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
        else:
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(max(batch_rows * 64, 1 << 20))})
        cur.execute(sql)
        for batch in cur.fetch_record_batch():
            yield _unsentinel(batch, raw) if src.kind == "sqlite" else batch
    finally:
        cur.close()


def _unsentinel(batch: pa.RecordBatch, raw: dict[str, RawKind]) -> pa.RecordBatch:
    arrays = []
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if raw.get(name) == "text" and pa.types.is_string(col.type):
            col = pc.if_else(pc.equal(col, _NULL_TEXT), pa.scalar(None, pa.string()), col)
        elif raw.get(name) == "real" and pa.types.is_floating(col.type):
            col = pc.if_else(pc.equal(col, _NULL_REAL), pa.scalar(None, col.type), col)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _stream_mysql(conn: Any, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(sql)
        names = [d[0] for d in cur.description]
        while rows := cur.fetchmany(batch_rows):
            columns = list(zip(*rows, strict=True))
            yield pa.RecordBatch.from_arrays([_mysql_array(c) for c in columns], names=names)


def _mysql_array(values: tuple[Any, ...]) -> pa.Array:
    try:
        return pa.array(values, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())
