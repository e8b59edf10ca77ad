"""Read mapped windows out of MongoDB (batched cursor; works with mongomock) and Parquet.

The window is a ``$match`` (MongoDB) or a pushed-down dataset filter (Parquet) on ``ts`` in its
stored encoding: BSON dates or Arrow timestamps, epoch numbers, or text in its layout. The
driver's row count of the same window (``count_documents``, ``Dataset.count_rows``) is what the
read must match.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from core.errors import Reason, SourceError
from core.schema import REQUIRED_COLUMNS
from sources import connect
from sources.mapping import TableSpec, split_source
from sources.transform import Leaf
from sources.uri import SourceURI
from sources.window import Found, TsStorage, arrow_found, resolve_storage

log = logging.getLogger(__name__)


def collection_name(src: SourceURI, spec: TableSpec) -> str:
    """The collection: ``?collection=`` in the URI wins over the mapping."""
    name = src.option("collection") or spec.collection or spec.table
    if not name:
        raise SourceError(f"no MongoDB collection: give ?collection= in {src.redacted} or `collection:` in the mapping",
                          reason=Reason.BAD_MAPPING, hint="add ?collection=<name> to the URI or `collection:` to the mapping")
    return name


def mongo_pipeline(leaves: list[Leaf], ts_field: str | None, bounds: tuple[Any, Any] | None) -> list[dict[str, Any]]:
    """Aggregation pipeline: window $match on the timestamp, sort by (ts, _id), project leaves."""
    pipeline: list[dict[str, Any]] = []
    if ts_field is not None and bounds is not None:
        pipeline.append({"$match": window_match(ts_field, bounds)})
        pipeline.append({"$sort": {ts_field: 1, "_id": 1}})
    # $literal-free projection of field paths only: the mapping's checked names, never values
    pipeline.append({"$project": {"_id": 0, **{leaf.alias: f"${leaf.source}" for leaf in leaves}}})
    return pipeline


def window_match(ts_field: str, bounds: tuple[Any, Any]) -> dict[str, Any]:
    return {ts_field: {"$gte": bounds[0], "$lt": bounds[1]}}


def _found(value: Any) -> tuple[Found, str]:
    if value is None:
        return "unknown", "no values"
    if isinstance(value, datetime):
        return ("timestamp" if value.tzinfo else "naive"), "BSON date"
    if isinstance(value, bool):
        return "other", "bool"
    if isinstance(value, int | float):
        return ("integer" if isinstance(value, int) else "real"), type(value).__name__
    if isinstance(value, str):
        return "text", "string"
    return "other", type(value).__name__


def _dig(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def open_collection(src: SourceURI, spec: TableSpec, leaves: list[Leaf], ts_field: str | None, unit: str | None,
                    layout: str | None) -> tuple[Any, Any, TsStorage | None]:
    """(client, collection, storage of ts) after checking the collection and the mapped fields exist."""
    client = connect.connect_mongo(src)
    try:
        name = collection_name(src, spec)
        db = client[src.database]
        found = connect.guarded(src, "listing collections", db.list_collection_names)
        if name not in found:
            raise SourceError(f"MongoDB collection {name!r} not found ({src.where}); expected {name!r}, found {sorted(found)}",
                              reason=Reason.MISSING_TABLE, details={"expected": name, "found": sorted(found)},
                              hint=f"point the mapping's `collection:` (or ?collection=) at one of {sorted(found)}")
        sample = connect.guarded(src, f"reading collection {name}", lambda: db[name].find_one()) or {}
        # documents omit null fields, so only the fields of required columns must be in a sample document
        expected = sorted({split_source(leaf.source)[0] for leaf in leaves if leaf.alias.rsplit("__", 1)[0] in REQUIRED_COLUMNS})
        missing = [f for f in expected if sample and f not in sample]
        if missing:
            raise SourceError(f"MongoDB collection {name!r} lacks mapped field(s) {missing}; expected {expected}, "
                              f"found {sorted(sample)}", reason=Reason.MISSING_COLUMN,
                              details={"missing": missing, "found": sorted(sample)})
        storage = None
        if ts_field is not None:
            one = connect.guarded(src, f"reading collection {name}",
                                  lambda: db[name].find_one({ts_field: {"$ne": None}}, {ts_field: 1}))
            kind, type_name = _found(_dig(one or {}, ts_field))
            storage = resolve_storage(kind, unit or "timestamp", layout, column=ts_field,
                                      where=f"MongoDB collection {name!r}", found_type=type_name,
                                      sample=_dig(one or {}, ts_field) if kind == "text" else None)
            if storage.kind == "naive":
                storage = TsStorage("timestamp")  # BSON dates are UTC; the client reads them aware
        return client, db[name], storage
    except BaseException:
        client.close()
        raise


def mongo_batches(collection: Any, pipeline: list[dict[str, Any]], names: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Run ``pipeline`` with a batched cursor and yield Arrow batches of ``batch_rows`` documents."""
    cursor = collection.aggregate(pipeline, batchSize=min(batch_rows, 100_000), allowDiskUse=True)
    try:
        chunk: list[dict[str, Any]] = []
        for doc in cursor:
            chunk.append(doc)
            if len(chunk) >= batch_rows:
                yield _docs_to_batch(chunk, names)
                chunk = []
        if chunk:
            yield _docs_to_batch(chunk, names)
    finally:
        cursor.close()


def _docs_to_batch(docs: list[dict[str, Any]], names: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([_array([d.get(n) for d in docs]) for n in names], names=names)


def _array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # ObjectId, mixed types: keep their text
        return pa.array([None if v is None else str(v) for v in values], pa.string())


# --- Parquet ---------------------------------------------------------------------------------

def parquet_path(src: SourceURI, spec: TableSpec, *, catalog: bool = False) -> Path | None:
    """The file or folder a spec reads: ``table:`` relative to a folder URI (``<table>`` or
    ``<table>.parquet``); a file URI is the interactions themselves, and its catalogue tables sit
    beside it. None: a catalogue table that is not there."""
    path = src.path
    if path is None or not path.exists():
        raise SourceError(f"Parquet source {path} does not exist", reason=Reason.NOT_FOUND, details={"path": str(path)},
                          hint="check the path given as the source")
    if not spec.table or (path.is_file() and not catalog):
        return path
    folder = path if path.is_dir() else path.parent
    found = [p for p in (folder / spec.table, folder / f"{spec.table}.parquet") if p.exists()]
    if found:
        return found[0]
    return None if catalog else path


def parquet_dataset(src: SourceURI, spec: TableSpec) -> pads.Dataset:
    """The Parquet file or folder the interactions are read from."""
    return pads.dataset(str(parquet_path(src, spec)), format="parquet")


def parquet_scan(src: SourceURI, spec: TableSpec, leaves: list[Leaf], ts_field: str | None, unit: str | None,
                 layout: str | None, start: datetime | None, end: datetime | None,
                 batch_rows: int) -> tuple[pads.Scanner, Any, int | None]:
    """(scanner with the window pushed down and leaves projected, the filter, the dataset's count of the window)."""
    dataset = parquet_dataset(src, spec)
    found = dataset.schema.names
    expected = sorted({split_source(leaf.source)[0] for leaf in leaves})
    missing = [c for c in expected if c not in found]
    if missing:
        raise SourceError(f"Parquet source {src.path} lacks mapped column(s) {missing}; expected {expected}, found {found}",
                          reason=Reason.MISSING_COLUMN, details={"missing": missing, "found": found})
    columns = {leaf.alias: pads.field(*leaf.source.split(".")) for leaf in leaves}
    flt, count = None, None
    if ts_field is not None and start is not None and end is not None:
        kind = _nested_type(dataset.schema, ts_field)
        storage = resolve_storage(arrow_found(kind), unit or "timestamp", layout, column=ts_field,
                                  where=f"Parquet source {src.path}", found_type=str(kind))
        field = pads.field(*ts_field.split("."))
        flt = (field >= _scalar(storage.encode(start), kind)) & (field < _scalar(storage.encode(end), kind))
        count = dataset.count_rows(filter=flt)
    return dataset.scanner(columns=columns, filter=flt, batch_size=batch_rows, use_threads=True), flt, count


def _nested_type(schema: pa.Schema, path: str) -> pa.DataType:
    head, *rest = path.split(".")
    kind = schema.field(head).type
    for part in rest:
        kind = kind.field(part).type if pa.types.is_struct(kind) and kind.get_field_index(part) >= 0 else pa.null()
    return kind


def _scalar(value: Any, kind: pa.DataType) -> pa.Scalar:
    if isinstance(value, datetime) and pa.types.is_timestamp(kind):
        return pa.scalar(value, pa.timestamp("us", tz=kind.tz) if kind.tz else pa.timestamp("us"))
    return pa.scalar(value)
