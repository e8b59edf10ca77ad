"""Open a mapped, windowed stream of canonical Arrow tables from any kind of source."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pyarrow as pa

from sources import connect, doc_readers, mysql_slices, sql_reader
from sources.mapping import TableSpec
from sources.transform import apply_mapping, leaf_aliases, raw_kind
from sources.uri import SourceURI

T = TypeVar("T")
_POLL_S = 0.05


@dataclass
class Stream:
    """A query (recorded in the manifest and the digest) and its canonical batches."""

    query: str
    batches: Iterator[pa.Table]


def open_stream(src: SourceURI, spec: TableSpec, schema: pa.Schema, *, start: datetime | None = None,
                end: datetime | None = None, batch_rows: int = 250_000) -> Stream:
    """Connect, check the table/collection and mapped columns, and start streaming the window.

    Failures while connecting or checking raise here (:class:`SourceError`); the returned
    iterator closes its connection when exhausted or closed.
    """
    aliases = leaf_aliases(spec)
    ts = spec.columns.get("ts") if start is not None else None
    if src.kind == "mongodb":
        return _mongo_stream(src, spec, schema, aliases, ts, start, end, batch_rows)
    if src.kind == "parquet":
        raw = doc_readers.parquet_batches(src, spec, aliases, ts, start, end, batch_rows)
        query = json.dumps({"parquet": str(src.path), "columns": {a: leaf.source for a, leaf in aliases.items()},
                            "ts": ts.source if ts else None, "start": str(start), "end": str(end)}, sort_keys=True)
        return Stream(query, (apply_mapping(spec, b, schema) for b in raw))
    return _sql_stream(src, spec, schema, aliases, ts, start, end, batch_rows)


def _order(spec: TableSpec, ts: Any) -> list[str]:
    if ts is None:
        return []
    event_id = spec.columns.get("event_id")
    tie = [event_id.source] if event_id is not None and event_id.source else []
    return [ts.source, *tie]


def _sql_stream(src: SourceURI, spec: TableSpec, schema: pa.Schema, aliases: dict[str, Any], ts: Any,
                start: datetime | None, end: datetime | None, batch_rows: int) -> Stream:
    relation = spec.table or spec.collection or ""
    leaves = sql_reader.typed_leaves(spec, schema, aliases)
    conn = sql_reader.open_connection(src)
    try:
        found = sql_reader.table_columns(src, conn, relation)
        sql_reader.check_columns(src, relation, found, leaves)
        sql = sql_reader.build_query(src.kind, relation, leaves, ts, start, end, _order(spec, ts))
    except BaseException:
        conn.close()
        raise
    raw = {alias: raw_kind(leaf, t) for alias, (leaf, t) in leaves.items()}
    if src.kind == "mysql" and ts is not None and start is not None and end is not None:
        sliced = mysql_slices.window_batches(src, conn, relation, leaves, ts, start, end, _order(spec, ts), batch_rows)
        return Stream(sql, _guarded_batches(src, conn, sliced, spec, schema))
    return Stream(sql, _guarded_batches(src, conn, sql_reader.stream_query(src, conn, sql, batch_rows, raw), spec, schema))


def _guarded_batches(src: SourceURI, conn: Any, batches: Iterator[pa.RecordBatch], spec: TableSpec,
                     schema: pa.Schema) -> Iterator[pa.Table]:
    with contextlib.closing(conn):
        while True:
            batch = connect.guarded(src, "reading rows", lambda: next(batches, None))
            if batch is None:
                return
            if batch.num_rows:
                yield apply_mapping(spec, batch, schema)


def _mongo_stream(src: SourceURI, spec: TableSpec, schema: pa.Schema, aliases: dict[str, Any], ts: Any,
                  start: datetime | None, end: datetime | None, batch_rows: int) -> Stream:
    client, collection = doc_readers.open_collection(src, spec, aliases)
    pipeline = doc_readers.mongo_pipeline(aliases, ts, start, end)
    query = json.dumps({"collection": collection.name, "pipeline": pipeline}, default=str, sort_keys=True)

    def batches() -> Iterator[pa.Table]:
        with contextlib.closing(client):
            raw = doc_readers.mongo_batches(collection, pipeline, list(aliases), batch_rows)
            while True:
                batch = connect.guarded(src, "reading documents", lambda: next(raw, None))
                if batch is None:
                    return
                yield apply_mapping(spec, batch, schema)

    return Stream(query, batches())


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the caller.

    The drivers (ADBC, connectorx, pymongo) release the GIL while they fetch and decode, so the
    next batch is read while the caller maps, hashes and writes this one. Memory stays bounded:
    ``depth`` queued items plus the one being produced. The producer's exception is re-raised
    here; when the caller stops early the producer stops at its next item and closes ``items``
    (in its own thread, so a generator's cleanup such as closing a connection runs). ``depth`` 0
    iterates in the caller's thread.
    """
    if depth < 1:
        yield from items
        return
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        outcome: tuple[bool, Any] = (False, None)
        try:
            for item in items:
                if not offer((True, item)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            outcome = (False, e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        offer(outcome)

    worker = threading.Thread(target=produce, name="rankloop-source-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            has_item, value = slots.get()
            if not has_item:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        worker.join()
