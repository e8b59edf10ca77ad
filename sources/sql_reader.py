"""Read mapped windows out of SQLite, PostgreSQL (ADBC) and MariaDB/MySQL (connectorx slices).

Each table (or ``query:``) of a mapping is prepared once: the relation and the mapped columns are
checked, the storage of ``ts`` is read from the source, and the window's ``SELECT`` and
``COUNT(*)`` are built with the bounds in that encoding. PostgreSQL and SQLite run the count and
the read in one repeatable-read transaction, so both see the same rows.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.errors import Reason, SourceError
from sources import connect
from sources.mapping import TableSpec, split_source
from sources.sql import (
    COMPANION,
    NULL_INT,
    NULL_REAL,
    NULL_TEXT,
    Dialect,
    Sql,
    count_sql,
    encoded_bounds,
    probe_sql,
    quote,
    quote_column,
    select_sql,
)
from sources.transform import Leaf
from sources.uri import SourceURI
from sources.window import Found, TsStorage, arrow_found, resolve_storage

log = logging.getLogger(__name__)
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$")
_MYSQL_TYPES: dict[int, Found] = {7: "naive", 10: "naive", 12: "naive", 14: "naive",  # TIMESTAMP, DATE, DATETIME
                                  1: "integer", 2: "integer", 3: "integer", 8: "integer", 9: "integer", 13: "integer",
                                  0: "real", 4: "real", 5: "real", 246: "real",
                                  15: "text", 253: "text", 254: "text", 252: "text"}


@dataclass
class PreparedRead:
    """One table's window read, ready to run: its statements and the connection they run on."""

    src: SourceURI
    conn: Any
    part: TableSpec
    leaves: list[Leaf]
    relation: str
    storage: TsStorage | None
    select: Sql
    count: Sql | None

    @property
    def dialect(self) -> Dialect:
        return self.src.kind  # type: ignore[return-value]

    @property
    def query_text(self) -> str:
        """The statement as it runs (values inlined), for the manifest and the digest."""
        return self.select.inline(self.dialect) if self.dialect != "sqlite" else _sqlite_text(self.select)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def _sqlite_text(sql: Sql) -> str:
    text, values = sql.bound("sqlite")
    return f"{text} -- {list(map(str, values))}" if values else text


def prepare(src: SourceURI, part: TableSpec, leaves: list[Leaf], start: datetime | None, end: datetime | None,
            order: list[str]) -> PreparedRead:
    """Connect, check the relation and its columns, learn how ``ts`` is stored, build the statements.

    Raises:
        SourceError: unreachable, refused, missing table/column, or a ``ts`` the window cannot be
            compared with (BAD_MAPPING).
    """
    conn = open_connection(src)
    try:
        return _prepare(src, conn, part, leaves, start, end, order)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise


def _prepare(src: SourceURI, conn: Any, part: TableSpec, leaves: list[Leaf], start: datetime | None,
             end: datetime | None, order: list[str]) -> PreparedRead:
    dialect: Dialect = src.kind  # type: ignore[assignment]
    relation = part.table or ("query" if part.query else "")
    ts = part.columns.get("ts") if start is not None else None
    storage = None
    if ts is not None and part.query is not None:
        storage = _declared_storage(ts.unit or "timestamp", ts.format)
    bounds = encoded_bounds(storage, start, end) if storage is not None and start and end else None
    columns = table_columns(src, conn, part, bounds)
    check_columns(src, relation, list(columns), leaves)
    if ts is not None and part.query is None:
        column, path = split_source(ts.source or "")
        if path:
            raise SourceError(f"ts reads a JSON path ({ts.source!r}) of {relation!r}: the window is pushed down on a "
                              "column", reason=Reason.BAD_MAPPING, hint="map ts from a column, or use a `query:`")
        storage = ts_storage(src, conn, relation, column, columns[column], ts.unit or "timestamp", ts.format)
        bounds = encoded_bounds(storage, start, end)  # type: ignore[arg-type]
    ts_column = split_source(ts.source or "")[0] if ts is not None else None
    select = select_sql(dialect, part, leaves, ts_column, bounds, order)
    count = count_sql(dialect, part, ts_column, bounds) if ts_column is not None and bounds is not None else None
    return PreparedRead(src, conn, part, leaves, relation, storage, select, count)


def _declared_storage(unit: str, layout: str | None) -> TsStorage:
    """A ``query:`` windows itself: its :start/:end take the mapping's declared encoding."""
    if layout is not None:
        return TsStorage("text", layout=layout)
    if unit in ("s", "ms", "us", "ns"):
        return TsStorage("epoch", unit=unit)
    return TsStorage("timestamp")


def check_columns(src: SourceURI, relation: str, found: list[str], leaves: list[Leaf]) -> None:
    """Fail with expected vs found names when a mapped column is absent."""
    expected = sorted({split_source(leaf.source)[0] for leaf in leaves})
    missing = [c for c in expected if c not in found]
    if missing:
        raise SourceError(
            f"{src.kind} table {relation!r} lacks mapped column(s) {missing}; expected {expected}, found {sorted(found)} "
            f"({src.where})", reason=Reason.MISSING_COLUMN, details={"missing": missing, "found": sorted(found)},
            hint=f"point the mapping's `from:` entries at columns that exist (found: {', '.join(sorted(found))})")


def list_relations(kind: str, conn: Any) -> list[str]:
    """Table names visible to the connection (for 'missing table' messages)."""
    sql = {"sqlite": "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')",
           "postgresql": "SELECT table_name FROM information_schema.tables WHERE table_schema "
                         "NOT IN ('pg_catalog', 'information_schema')",
           "mysql": "SHOW TABLES"}[kind]
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(sql)
        return sorted(str(r[0]) for r in cur.fetchall())


def table_columns(src: SourceURI, conn: Any, part: TableSpec, bounds: tuple[Any, Any] | None) -> dict[str, Any]:
    """Column name -> driver type of the table or query; a missing table fails listing those that exist."""
    relation = part.table or "query"
    text, values = probe_sql(src.kind, part, bounds).bound(src.kind)  # type: ignore[arg-type]
    try:
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute(text, values or None)
            if src.kind == "mysql":
                found = {d[0]: d[1] for d in cur.description}
                with contextlib.suppress(Exception):
                    cur.fetchall()
                return found
            schema = cur.fetch_arrow_table().schema
            return {f.name: f.type for f in schema}
    except Exception as e:  # noqa: BLE001 - classified below
        error = connect.source_error(src, f"reading {'the query' if part.query else 'table ' + relation}", e)
        if error.reason is not Reason.MISSING_TABLE or part.query is not None:
            raise error from None
        if src.kind == "postgresql":
            conn.rollback()
        found = list_relations(src.kind, conn)
        raise SourceError(f"{src.kind} table {relation!r} not found ({src.where}); expected {relation!r}, found {found}",
                          reason=Reason.MISSING_TABLE, details={"expected": relation, "found": found},
                          hint=f"point the mapping's `table:` at one of {found}" if found else
                          "create the table, or check the database name in the source URI") from None


def ts_storage(src: SourceURI, conn: Any, relation: str, column: str, driver_type: Any, unit: str,
               layout: str | None) -> TsStorage:
    """How ``column`` stores time, from the driver's type (SQLite: the storage class of a value)."""
    sample = None
    if src.kind == "sqlite":
        kind = _one(conn, f"SELECT typeof({quote_column('sqlite', column)}) FROM {quote('sqlite', relation)} "
                          f"WHERE {quote_column('sqlite', column)} IS NOT NULL LIMIT 1")
        found: Found = {"integer": "integer", "real": "real", "text": "text", None: "unknown"}.get(kind, "other")
        type_name = f"SQLite {kind or 'no values'}"
    elif src.kind == "mysql":
        found, type_name = _MYSQL_TYPES.get(driver_type, "other"), f"MySQL type code {driver_type}"
    else:
        found, type_name = arrow_found(driver_type), f"PostgreSQL {driver_type}"
    if found == "text":
        dialect: Dialect = src.kind  # type: ignore[assignment]
        sample = _one(conn, f"SELECT {quote_column(dialect, column)} FROM {quote(dialect, relation)} "
                            f"WHERE {quote_column(dialect, column)} IS NOT NULL LIMIT 1")
    return resolve_storage(found, unit, layout, column=column, where=f"{src.kind} table {relation!r}",
                           found_type=type_name, sample=None if sample is None else str(sample))


def _one(conn: Any, sql: str) -> Any:
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    return rows[0][0] if rows else None


def count_rows(read: PreparedRead) -> int:
    """The source's ``COUNT(*)`` of the window (parameters bound)."""
    assert read.count is not None
    text, values = read.count.bound(read.dialect)
    return int(connect.guarded(read.src, f"counting rows of {read.relation}",
                               lambda: fetch_one(read.conn, text, values)))


def count_alongside(read: PreparedRead) -> Callable[[], int]:
    """PostgreSQL: start the window's ``COUNT(*)`` on a second connection that imports the read's
    snapshot (``pg_export_snapshot``), so both see the same rows while the count runs beside the
    read instead of before it. Returns a function that waits for the count."""
    snapshot = str(fetch_one(read.conn, "SELECT pg_export_snapshot()", ()))
    if not _SNAPSHOT_ID.match(snapshot):
        raise SourceError(f"unexpected snapshot id {snapshot!r} from PostgreSQL", reason=Reason.SOURCE_COUNT)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            conn = connect.connect_postgres(read.src)
            try:
                with contextlib.closing(conn.cursor()) as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                outcome["rows"] = count_rows(PreparedRead(read.src, conn, read.part, read.leaves, read.relation,
                                                          read.storage, read.select, read.count))
            finally:
                conn.close()
        except BaseException as e:  # noqa: BLE001 - re-raised by the waiter, in the reading thread
            outcome["error"] = e

    worker = threading.Thread(target=run, name="rankloop-source-count", daemon=True)
    worker.start()

    def wait() -> int:
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        return int(outcome["rows"])

    return wait


def fetch_one(conn: Any, text: str, values: tuple[Any, ...]) -> Any:
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(text, values or None)
        return cur.fetchall()[0][0]


def open_connection(src: SourceURI) -> Any:
    """A DBAPI connection (ADBC for SQLite/PostgreSQL in one repeatable-read transaction, pymysql for MySQL)."""
    if src.kind == "sqlite":
        return connect.connect_sqlite_readonly(src)  # one deferred transaction: a consistent snapshot
    if src.kind == "postgresql":
        conn = connect.connect_postgres(src)
        try:  # ADBC opened a transaction (autocommit off): the count and the read see one snapshot
            with contextlib.closing(conn.cursor()) as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        except BaseException:
            conn.close()
            raise
        return conn
    return connect.connect_mysql(src)


def stream_rows(read: PreparedRead, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Execute the window's SELECT and yield Arrow batches of at most about ``batch_rows`` rows."""
    cur = read.conn.cursor()
    try:
        if read.dialect == "sqlite":
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
            text, values = read.select.bound("sqlite")
            cur.execute(text, values or None)
        else:
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(max(batch_rows * 64, 1 << 20))})
            cur.execute(read.select.inline("postgresql"))  # COPY: no parameters
        for batch in cur.fetch_record_batch():
            yield unsentinel(batch, read.leaves) if read.dialect == "sqlite" else batch
    finally:
        cur.close()


def unsentinel(batch: pa.RecordBatch, leaves: list[Leaf]) -> pa.RecordBatch:
    """SQLite: sentinels back to nulls; a numeric leaf with text values beside it becomes text."""
    kinds = {leaf.alias: leaf.kind for leaf in leaves}
    names = [n for n in batch.schema.names if not n.endswith(COMPANION)]
    arrays = []
    for name in names:
        col = batch.column(name)
        kind = kinds.get(name)
        if kind in ("text", "native") and pa.types.is_string(col.type):
            col = _null_where(col, NULL_TEXT)
        elif kind in ("real", "integer"):
            col = _null_where(col, NULL_REAL if kind == "real" else NULL_INT)
            other = _null_where(batch.column(name + COMPANION), NULL_TEXT)
            if other.null_count < len(other):
                col = pc.coalesce(other, col.cast(pa.string()))
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _null_where(col: pa.Array, sentinel: Any) -> pa.Array:
    if pa.types.is_null(col.type):
        return col
    return pc.if_else(pc.equal(col, pa.scalar(sentinel).cast(col.type)), pa.scalar(None, col.type), col)
