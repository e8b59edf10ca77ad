"""Write Arrow tables into sources: SQLite and PostgreSQL through ADBC ingest, MariaDB/MySQL
through ``LOAD DATA LOCAL INFILE``, MongoDB through batched ``insert_many``.

Storage conventions (the readers rely on them):

* timestamps: SQLite INTEGER microseconds since the epoch (UTC); PostgreSQL ``timestamptz``;
  MariaDB ``DATETIME(6)`` holding UTC; MongoDB BSON dates (millisecond precision).
* lists and structs (embeddings, JSON contexts): JSON text in SQL, arrays/sub-documents in MongoDB.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sources import connect
from sources.arrow_text import json_text, timestamp_micros
from sources.uri import SourceURI, parse_uri

log = logging.getLogger(__name__)

Mode = Literal["replace", "append"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_MONGO_CHUNK = 10_000


def write_table(
    uri: str,
    table_name: str,
    table: pa.Table,
    *,
    mode: Mode = "replace",
    indexes: Sequence[Sequence[str]] = (),
) -> int:
    """Write ``table`` into ``table_name`` of the SQL database at ``uri`` and create ``indexes``.

    Args:
        uri: ``sqlite:///path``, ``postgresql://...`` or ``mysql://...`` (MariaDB too).
        table_name: target table (``[schema.]name``, letters/digits/underscores).
        table: the rows; timestamps, lists and structs are stored as described in the module doc.
        mode: ``replace`` drops and recreates the table; ``append`` creates it when absent.
        indexes: column tuples to index, e.g. ``[("ts",), ("user_id", "ts")]``.

    Returns:
        The number of rows written.
    """
    src = parse_uri(uri)
    _check_args(src, table_name, table, mode, indexes)
    writers = {"sqlite": _write_sqlite, "postgresql": _write_postgres, "mysql": _write_mysql}
    rows = writers[src.kind](src, table_name, table, mode, [tuple(ix) for ix in indexes])
    log.info("wrote %d rows into %s.%s (%s)", rows, src.redacted, table_name, mode)
    return rows


def _check_args(src: SourceURI, name: str, table: pa.Table, mode: str, indexes: Sequence[Sequence[str]]) -> None:
    if src.kind not in ("sqlite", "postgresql", "mysql"):
        raise ValueError(f"write_table writes SQL databases (sqlite, postgresql, mysql); got a {src.kind} URI "
                         f"{src.redacted} (use write_collection for MongoDB)")
    if not isinstance(table, pa.Table):
        raise TypeError(f"table must be a pyarrow.Table, got {type(table).__name__}")
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"table_name must be [schema.]identifier of letters, digits, underscores; got {name!r}")
    if mode not in ("replace", "append"):
        raise ValueError(f"mode must be 'replace' or 'append', got {mode!r}")
    bad = sorted({c for ix in indexes for c in ix if c not in table.column_names})
    if bad or any(not ix for ix in indexes):
        raise ValueError(f"index columns {bad} (or an empty index) not in table columns {table.column_names}")


def _sql_ready(table: pa.Table, *, timestamps: Literal["micros", "keep", "naive"]) -> pa.Table:
    """Convert columns SQL can't hold natively: lists/structs -> JSON text, timestamps per dialect."""
    columns = []
    for name in table.column_names:
        col = table.column(name)
        kind = col.type
        if pa.types.is_dictionary(kind):
            col, kind = col.cast(kind.value_type), kind.value_type
        if pa.types.is_nested(kind):
            col = json_text(col)
        elif pa.types.is_timestamp(kind) and timestamps == "micros":
            col = timestamp_micros(col)
        elif pa.types.is_timestamp(kind) and timestamps == "naive":
            col = _as_utc(col).cast(pa.timestamp("us"))
        elif pa.types.is_timestamp(kind):
            col = _as_utc(col)
        columns.append(col)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _as_utc(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Naive timestamps are taken as UTC; aware ones are converted."""
    return col.cast(pa.timestamp("us", tz="UTC"))


def _qualified(table_name: str, quote: str) -> str:
    return ".".join(f"{quote}{p}{quote}" for p in table_name.split("."))


def _index_sql(table_name: str, columns: tuple[str, ...], quote: str) -> str:
    ix_name = f"ix_{table_name.replace('.', '_')}_{'_'.join(columns)}"[:60]
    cols = ", ".join(f"{quote}{c}{quote}" for c in columns)
    return f"CREATE INDEX IF NOT EXISTS {quote}{ix_name}{quote} ON {_qualified(table_name, quote)} ({cols})"


def _adbc_write(src: SourceURI, conn: Any, name: str, table: pa.Table, mode: str, indexes: list[tuple[str, ...]]) -> int:
    schema, _, plain = name.rpartition(".")
    with conn.cursor() as cur:
        rows = cur.adbc_ingest(plain, table, mode="replace" if mode == "replace" else "create_append",
                               db_schema_name=schema or None)
        for ix in indexes:
            cur.execute(_index_sql(name, ix, '"'))
        if src.kind == "postgresql":  # fresh statistics so window scans use the ts index
            cur.execute(f"ANALYZE {_qualified(name, chr(34))}")
    conn.commit()
    return table.num_rows if rows in (None, -1) else int(rows)


def _write_sqlite(src: SourceURI, name: str, table: pa.Table, mode: str, indexes: list[tuple[str, ...]]) -> int:
    if src.path is not None and src.path.parent != src.path:
        src.path.parent.mkdir(parents=True, exist_ok=True)
    ready = _sql_ready(table, timestamps="micros")
    ready = _cast_columns(ready, pa.types.is_boolean, pa.int8())
    with contextlib.closing(connect.connect_sqlite(src)) as conn:
        return connect.guarded(src, f"writing table {name}", lambda: _adbc_write(src, conn, name, ready, mode, indexes))


def _write_postgres(src: SourceURI, name: str, table: pa.Table, mode: str, indexes: list[tuple[str, ...]]) -> int:
    ready = _sql_ready(table, timestamps="keep")
    with contextlib.closing(connect.connect_postgres(src)) as conn:
        return connect.guarded(src, f"writing table {name}", lambda: _adbc_write(src, conn, name, ready, mode, indexes))


def _cast_columns(table: pa.Table, predicate: Any, to: pa.DataType) -> pa.Table:
    for i, field in enumerate(table.schema):
        if predicate(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(to))
    return table


# --- MariaDB / MySQL ------------------------------------------------------------------------

def _mysql_type(field: pa.Field, indexed: bool) -> str:
    kind = field.type
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_integer(kind):
        return "BIGINT" if kind.bit_width == 64 or kind == pa.uint32() else "INT"
    if pa.types.is_float32(kind):
        return "FLOAT"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "DOUBLE"
    if pa.types.is_timestamp(kind):
        return "DATETIME(6)"
    if pa.types.is_date(kind):
        return "DATE"
    return "VARCHAR(191)" if indexed else "LONGTEXT"


def _mysql_create(name: str, schema: pa.Schema, indexes: list[tuple[str, ...]]) -> str:
    indexed = {c for ix in indexes for c in ix}
    cols = ", ".join(f"`{f.name}` {_mysql_type(f, f.name in indexed)}" for f in schema)
    return f"CREATE TABLE IF NOT EXISTS `{name}` ({cols}) CHARACTER SET utf8mb4"


def _mysql_csv_table(table: pa.Table) -> pa.Table:
    """Every column as text for LOAD DATA: NULL as ``\\N``, backslashes doubled, bools as 0/1."""
    ready = _sql_ready(table, timestamps="naive")
    columns = []
    for col in ready.columns:
        if pa.types.is_boolean(col.type):
            col = col.cast(pa.int8())
        if pa.types.is_floating(col.type):
            col = pc.if_else(pc.is_finite(col), col, pa.scalar(None, col.type))
        text = col.cast(pa.string())
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            text = pc.replace_substring(text, "\\", "\\\\")
        columns.append(text.fill_null("\\N"))
    return pa.Table.from_arrays(columns, names=ready.column_names)


def _write_mysql(src: SourceURI, name: str, table: pa.Table, mode: str, indexes: list[tuple[str, ...]]) -> int:
    if "." in name:
        raise ValueError(f"MySQL table names take no schema prefix (the URI names the database), got {name!r}")
    text = _mysql_csv_table(table)
    fd, tmp = tempfile.mkstemp(prefix="rankloop_load_", suffix=".csv")
    os.close(fd)
    try:
        pacsv.write_csv(text, tmp, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        with contextlib.closing(connect.connect_mysql(src)) as conn:
            return connect.guarded(src, f"writing table {name}",
                                   lambda: _mysql_load(conn, name, table.schema, tmp, mode, indexes))
    finally:
        os.unlink(tmp)


def _mysql_load(conn: Any, name: str, schema: pa.Schema, csv_path: str, mode: str,
                indexes: list[tuple[str, ...]]) -> int:
    with conn.cursor() as cur:
        if mode == "replace":
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")
        cur.execute(_mysql_create(name, schema, indexes))
        cols = ", ".join(f"`{c}`" for c in schema.names)
        path = csv_path.replace("\\", "\\\\").replace("'", "\\'")
        rows = cur.execute(
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{name}` CHARACTER SET utf8mb4 "
            f"FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' "
            f"LINES TERMINATED BY '\\n' ({cols})"
        )
        for ix in indexes:
            cur.execute(_index_sql(name, ix, "`"))
    return int(rows)


# --- MongoDB ---------------------------------------------------------------------------------

def write_collection(
    uri: str,
    collection: str,
    documents: pa.Table | Iterable[Mapping[str, Any]],
    *,
    mode: Mode = "replace",
    indexes: Sequence[Sequence[str]] = (),
) -> int:
    """Insert ``documents`` (an Arrow table or dicts) into ``collection`` of the MongoDB at ``uri``.

    Args:
        uri: ``mongodb://host[:port]/db``; works with ``mongomock.patch``-ed clients.
        collection: collection name (overrides any ``?collection=`` in the URI).
        documents: rows; Arrow lists become arrays, structs sub-documents, timestamps BSON dates.
        mode: ``replace`` empties the collection first; ``append`` adds.
        indexes: field tuples to index ascending, e.g. ``[("timestamp",)]``.

    Returns:
        The number of documents inserted.
    """
    src = parse_uri(uri)
    if src.kind != "mongodb":
        raise ValueError(f"write_collection needs a mongodb:// URI, got a {src.kind} URI {src.redacted}")
    if mode not in ("replace", "append"):
        raise ValueError(f"mode must be 'replace' or 'append', got {mode!r}")
    client = connect.connect_mongo(src)
    try:
        coll = client[src.database][collection]
        return connect.guarded(src, f"writing collection {collection}",
                               lambda: _mongo_insert(coll, documents, mode, indexes))
    finally:
        client.close()


def _mongo_insert(coll: Any, documents: Any, mode: str, indexes: Sequence[Sequence[str]]) -> int:
    if mode == "replace":
        coll.delete_many({})
    total = 0
    for chunk in _document_chunks(documents):
        if chunk:
            coll.insert_many(chunk, ordered=False)
            total += len(chunk)
    for ix in indexes:
        coll.create_index([(f, 1) for f in ix])
    return total


def _document_chunks(documents: Any) -> Iterable[list[dict[str, Any]]]:
    if isinstance(documents, pa.Table):
        for batch in documents.to_batches(max_chunksize=_MONGO_CHUNK):
            yield [{k: v for k, v in row.items() if v is not None} for row in batch.to_pylist()]
        return
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Iterable):
        raise TypeError(f"documents must be a pyarrow.Table or an iterable of mappings, got {type(documents).__name__}")
    chunk: list[dict[str, Any]] = []
    for doc in documents:
        chunk.append(dict(doc))
        if len(chunk) >= _MONGO_CHUNK:
            yield chunk
            chunk = []
    yield chunk


