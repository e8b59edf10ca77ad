"""Optional catalogue extraction (items and users) when the mapping declares it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from rankloop.schema import ITEM_SCHEMA, USER_SCHEMA
from sources.mapping import TableSpec, load_mapping
from sources.stream import open_stream
from sources.uri import parse_uri


def read_catalog(uri: str, mapping: str | Path, *, batch_rows: int = 250_000) -> tuple[pa.Table | None, pa.Table | None]:
    """Read the item and user catalogues the mapping declares.

    Args:
        uri: source URI.
        mapping: shipped mapping name or mapping file path.
        batch_rows: rows per streamed batch.

    Returns:
        ``(items, users)`` in ITEM_SCHEMA / USER_SCHEMA; ``None`` for a table the mapping doesn't declare.
    """
    src = parse_uri(uri)
    spec, _ = load_mapping(mapping)
    catalog = spec.catalog
    if catalog is None:
        return None, None
    items = _read(src, catalog.items, ITEM_SCHEMA, batch_rows) if catalog.items else None
    users = _read(src, catalog.users, USER_SCHEMA, batch_rows) if catalog.users else None
    return items, users


def _read(src: object, spec: TableSpec, schema: pa.Schema, batch_rows: int) -> pa.Table:
    stream = open_stream(src, spec, schema, batch_rows=batch_rows)  # type: ignore[arg-type]
    tables = list(stream.batches)
    return pa.concat_tables(tables) if tables else schema.empty_table()
