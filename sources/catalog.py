"""Optional catalogue extraction (items and users) when the mapping declares it."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from core.schema import ITEM_SCHEMA, USER_SCHEMA
from sources.doc_readers import parquet_path
from sources.mapping import TableSpec, load_mapping
from sources.stream import open_stream
from sources.uri import SourceURI, parse_uri

log = logging.getLogger(__name__)


def read_catalog(uri: str, mapping: str | Path, *, batch_rows: int = 250_000) -> tuple[pa.Table | None, pa.Table | None]:
    """Read the item and user catalogues the mapping declares.

    Args:
        uri: source URI.
        mapping: shipped mapping name or mapping file path.
        batch_rows: rows per streamed batch.

    Returns:
        ``(items, users)`` in ITEM_SCHEMA / USER_SCHEMA; ``None`` for a table the mapping doesn't declare
        (or, for a Parquet source, a catalogue file that is not there).
    """
    src = parse_uri(uri)
    spec, _ = load_mapping(mapping)
    catalog = spec.catalog
    if catalog is None:
        return None, None
    items = _read(src, catalog.items, ITEM_SCHEMA, batch_rows) if catalog.items else None
    users = _read(src, catalog.users, USER_SCHEMA, batch_rows) if catalog.users else None
    return items, users


def _read(src: SourceURI, spec: TableSpec, schema: pa.Schema, batch_rows: int) -> pa.Table | None:
    if src.kind == "parquet" and parquet_path(src, spec, catalog=True) is None:
        log.info("catalogue table %r not found beside %s: none read", spec.table, src.path)
        return None
    stream = open_stream(src, spec, schema, batch_rows=batch_rows)
    tables = list(stream.batches)
    return pa.concat_tables(tables) if tables else schema.empty_table()
