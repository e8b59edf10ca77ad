"""Stream a mapped window out of MongoDB (batched cursor; works with mongomock) and Parquet."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from rankloop.errors import Reason, SourceError
from rankloop.schema import REQUIRED_COLUMNS
from sources import connect
from sources.mapping import FieldSpec, TableSpec
from sources.sql_reader import _micros, epoch_bound
from sources.uri import SourceURI

log = logging.getLogger(__name__)


def collection_name(src: SourceURI, spec: TableSpec) -> str:
    """The collection: ``?collection=`` in the URI wins over the mapping."""
    name = src.option("collection") or spec.collection or spec.table
    if not name:
        raise SourceError(f"no MongoDB collection: give ?collection= in {src.redacted} or `collection:` in the mapping",
                          reason=Reason.BAD_MAPPING)
    return name


def mongo_pipeline(aliases: dict[str, FieldSpec], ts: FieldSpec | None, start: datetime | None,
                   end: datetime | None) -> list[dict[str, Any]]:
    """Aggregation pipeline: window $match on the timestamp, sort by (ts, _id), project leaves."""
    pipeline: list[dict[str, Any]] = []
    if ts is not None and start is not None and end is not None:
        pipeline.append({"$match": {ts.source: {"$gte": _mongo_bound(start, ts.unit), "$lt": _mongo_bound(end, ts.unit)}}})
        pipeline.append({"$sort": {ts.source: 1, "_id": 1}})
    pipeline.append({"$project": {"_id": 0, **{alias: f"${leaf.source}" for alias, leaf in aliases.items()}}})
    return pipeline


def _mongo_bound(moment: datetime, unit: str | None) -> Any:
    if unit in (None, "timestamp", "auto"):
        return moment.astimezone(UTC)
    return epoch_bound(_micros(moment.astimezone(UTC)), unit)


def open_collection(src: SourceURI, spec: TableSpec, aliases: dict[str, FieldSpec]) -> tuple[Any, Any]:
    """(client, collection) after checking the collection and the mapped fields exist."""
    client = connect.connect_mongo(src)
    name = collection_name(src, spec)
    db = client[src.database]
    found = connect.guarded(src, "listing collections", db.list_collection_names)
    if name not in found:
        client.close()
        raise SourceError(f"MongoDB collection {name!r} not found ({src.where}); expected {name!r}, found {sorted(found)}",
                          reason=Reason.MISSING_TABLE, details={"expected": name, "found": sorted(found)})
    sample = connect.guarded(src, f"reading collection {name}", lambda: db[name].find_one()) or {}
    # documents omit null fields, so only the fields of required columns must be in a sample document
    expected = sorted({(leaf.source or "").split(".")[0] for alias, leaf in aliases.items()
                       if alias.rsplit("__", 1)[0] in REQUIRED_COLUMNS})
    missing = [f for f in expected if sample and f not in sample]
    if missing:
        client.close()
        raise SourceError(f"MongoDB collection {name!r} lacks mapped field(s) {missing}; expected {expected}, "
                          f"found {sorted(sample)}", reason=Reason.MISSING_COLUMN,
                          details={"missing": missing, "found": sorted(sample)})
    return client, db[name]


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
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # ObjectId, mixed types: keep their text
        return pa.array([None if v is None else str(v) for v in values], pa.string())


# --- Parquet ---------------------------------------------------------------------------------

def parquet_dataset(src: SourceURI, spec: TableSpec) -> pads.Dataset:
    """The Parquet file or folder (``table:`` in the mapping, if set, is a path relative to the URI)."""
    path = src.path if src.path is not None else None
    if spec.table and path is not None and path.is_dir() and (path / spec.table).exists():
        path = path / spec.table
    if path is None or not path.exists():
        raise SourceError(f"Parquet source {path} does not exist", reason=Reason.NOT_FOUND, details={"path": str(path)})
    return pads.dataset(str(path), format="parquet")


def parquet_batches(src: SourceURI, spec: TableSpec, aliases: dict[str, FieldSpec], ts: FieldSpec | None,
                    start: datetime | None, end: datetime | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Scan with the window as a pushed-down filter (row-group statistics) and leaves as projections."""
    dataset = parquet_dataset(src, spec)
    found = dataset.schema.names
    expected = sorted({(leaf.source or "").split(".")[0] for leaf in aliases.values()})
    missing = [c for c in expected if c not in found]
    if missing:
        raise SourceError(f"Parquet source {src.path} lacks mapped column(s) {missing}; expected {expected}, found {found}",
                          reason=Reason.MISSING_COLUMN, details={"missing": missing, "found": found})
    columns = {alias: pads.field(*(leaf.source or "").split(".")) for alias, leaf in aliases.items()}
    flt = None
    if ts is not None and start is not None and end is not None:
        field = pads.field(*(ts.source or "").split("."))
        kind = dataset.schema.field((ts.source or "").split(".")[0]).type
        flt = (field >= _parquet_bound(start, ts.unit, kind)) & (field < _parquet_bound(end, ts.unit, kind))
    scanner = dataset.scanner(columns=columns, filter=flt, batch_size=batch_rows, use_threads=True)
    for batch in scanner.to_batches():
        if batch.num_rows:
            yield batch


def _parquet_bound(moment: datetime, unit: str | None, kind: pa.DataType) -> pa.Scalar:
    moment = moment.astimezone(UTC)
    if unit == "auto":
        unit = "us" if pa.types.is_integer(kind) else "timestamp"
    if unit not in (None, "timestamp"):
        return pa.scalar(epoch_bound(_micros(moment), unit))
    if pa.types.is_timestamp(kind) and kind.tz is None:
        return pa.scalar(moment.replace(tzinfo=None), pa.timestamp("us"))
    return pa.scalar(moment, pa.timestamp("us", tz="UTC"))
