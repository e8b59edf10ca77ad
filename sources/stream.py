"""Open a mapped, windowed stream of target Arrow tables from any kind of source.

Every table of a mapping (one, or the parts of a ``union:``) is prepared before the first row is
read, so a missing table or column fails before anything is written. Each windowed part records
the source's own count of its window (``COUNT(*)``, ``count_documents``, ``Dataset.count_rows``)
and, once read, compares the rows it received with it: a difference fails the extraction
(``Reason.SOURCE_COUNT``) instead of passing a partial window on.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from core.errors import Reason, SourceError
from sources import connect, doc_readers, mysql_slices, sql_reader
from sources.mapping import Mapping, TableSpec, split_source
from sources.transform import Leaf, apply_mapping, leaf_plan, mapping_schema
from sources.uri import SourceURI

T = TypeVar("T")
_POLL_S = 0.05


@dataclass
class ReadCounts:
    """Rows the source counted in the window, rows read, and rows the mapping's filters dropped
    (filled in as the stream is consumed)."""

    source_rows: int | None = None
    rows_read: int = 0
    rows_filtered: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Stream:
    """A query (recorded in the manifest and the digest), its target batches, and its counts."""

    query: str
    batches: Iterator[pa.Table]
    counts: ReadCounts


@dataclass
class _Part:
    name: str
    query: str
    expected: Callable[[], int | None]  # the source's count of the window (may wait for it)
    raw: Callable[[], Iterator[pa.RecordBatch]]
    spec: TableSpec
    close: Callable[[], None]
    transient_count: bool  # a count taken outside the read's snapshot may race a writer


def open_stream(src: SourceURI, spec: Mapping | TableSpec, schema: pa.Schema, *, start: datetime | None = None,
                end: datetime | None = None, batch_rows: int = 250_000, prefetch: int = 0) -> Stream:
    """Prepare every table of ``spec`` and stream the window ``[start, end)`` (no window: everything).

    ``prefetch`` raw batches are fetched ahead in a background thread (see :func:`prefetched`); the
    mapping runs in the caller's thread, so the fetching thread does nothing but fetch. Failures
    while connecting or checking raise here (:class:`SourceError`); the returned iterator closes
    its connections when exhausted or closed.
    """
    parts_specs = spec.parts() if isinstance(spec, Mapping) else [spec]
    parts: list[_Part] = []
    try:
        for part in parts_specs:
            parts.append(_open_part(src, part, schema, start, end, batch_rows))
    except BaseException:
        for p in parts:
            p.close()
        raise
    counts = ReadCounts()
    query = parts[0].query if len(parts) == 1 else json.dumps([p.query for p in parts])
    return Stream(query, _chain(src, parts, schema, counts, prefetch), counts)


def window_queries(uri: str, mapping: str | Path, start: datetime, end: datetime) -> list[str]:
    """The statements :func:`sources.extract_snapshot` runs for a window (values inlined), one per
    table of the mapping: what benchmarks give the raw drivers to compare like with like."""
    from sources.mapping import load_mapping
    from sources.uri import parse_uri

    src, (spec, _) = parse_uri(uri), load_mapping(mapping)
    parts = [_open_part(src, part, mapping_schema(spec), start, end, 250_000) for part in spec.parts()]
    for part in parts:
        part.close()
    return [part.query for part in parts]


def _chain(src: SourceURI, parts: list[_Part], schema: pa.Schema, counts: ReadCounts,
           prefetch: int) -> Iterator[pa.Table]:
    try:
        for part in parts:
            yield from _read_part(src, part, schema, counts, prefetch)
    finally:
        for part in parts:
            part.close()


def _fetched(src: SourceURI, part: _Part) -> Iterator[pa.RecordBatch]:
    raw = part.raw()
    try:
        while True:
            batch = connect.guarded(src, f"reading rows of {part.name}", lambda: next(raw, None))
            if batch is None:
                return
            yield batch
    finally:
        close = getattr(raw, "close", None)
        if close is not None:
            close()


def _read_part(src: SourceURI, part: _Part, schema: pa.Schema, counts: ReadCounts, prefetch: int) -> Iterator[pa.Table]:
    read = kept = 0
    batches = prefetched(_fetched(src, part), prefetch)
    try:
        for batch in batches:
            read += batch.num_rows
            if batch.num_rows:
                table = apply_mapping(part.spec, batch, schema)
                kept += table.num_rows
                counts.rows_read, counts.rows_filtered = counts.rows_read + batch.num_rows, \
                    counts.rows_filtered + batch.num_rows - table.num_rows
                if table.num_rows:
                    yield table
    finally:
        batches.close()
    expected = part.expected()
    counts.parts.append({"part": part.name, "source_rows": expected, "rows_read": read, "rows_kept": kept})
    counts.source_rows = None if expected is None or (counts.source_rows is None and len(counts.parts) > 1) \
        else (counts.source_rows or 0) + expected
    if expected is not None and read != expected:
        raise SourceError(
            f"read {read} rows of {part.name} in the window but the source counts {expected} "
            f"({src.kind}, {src.where})", reason=Reason.SOURCE_COUNT, transient=part.transient_count,
            details={"part": part.name, "rows_read": read, "source_rows": expected})


def _order(spec: TableSpec, windowed: bool) -> list[str]:
    if not windowed:
        return []
    event_id = spec.columns.get("event_id")
    tie = [leaf.source for leaf in event_id.leaves() if leaf.source] if event_id is not None else []
    return [spec.columns["ts"].source or "", *tie]


def _open_part(src: SourceURI, part: TableSpec, schema: pa.Schema, start: datetime | None, end: datetime | None,
               batch_rows: int) -> _Part:
    leaves = leaf_plan(part, schema)
    windowed = start is not None and end is not None and "ts" in part.columns
    if src.kind == "mongodb":
        return _mongo_part(src, part, leaves, start if windowed else None, end, batch_rows)
    if src.kind == "parquet":
        return _parquet_part(src, part, leaves, start if windowed else None, end, batch_rows)
    return _sql_part(src, part, leaves, start if windowed else None, end, batch_rows)


def _sql_part(src: SourceURI, part: TableSpec, leaves: list[Leaf], start: datetime | None, end: datetime | None,
              batch_rows: int) -> _Part:
    order = _order(part, start is not None)
    read = sql_reader.prepare(src, part, leaves, start, end, order)
    try:
        if read.count is None:
            def expected() -> int | None:
                return None
        elif src.kind == "postgresql":  # counted on a second connection sharing the read's snapshot, meanwhile
            expected = sql_reader.count_alongside(read)
        else:
            count = sql_reader.count_rows(read)

            def expected() -> int | None:
                return count
    except BaseException:
        read.close()
        raise
    name = f"table {read.relation!r}" if part.query is None else "the query"
    if src.kind == "mysql":
        if start is not None and end is not None:
            ts_column = split_source(part.columns["ts"].source or "")[0]

            def raw() -> Iterator[pa.RecordBatch]:
                return mysql_slices.window_batches(read, ts_column, start, end, order, batch_rows)
        else:
            def raw() -> Iterator[pa.RecordBatch]:
                return mysql_slices.read_all(read)
        return _Part(name, read.query_text, expected, raw, part, read.close, transient_count=True)
    return _Part(name, read.query_text, expected, lambda: sql_reader.stream_rows(read, batch_rows), part, read.close,
                 transient_count=False)


def _mongo_part(src: SourceURI, part: TableSpec, leaves: list[Leaf], start: datetime | None, end: datetime | None,
                batch_rows: int) -> _Part:
    ts = part.columns.get("ts") if start is not None else None
    ts_field = ts.source if ts is not None else None
    client, collection, storage = doc_readers.open_collection(src, part, leaves, ts_field, ts.unit if ts else None,
                                                              ts.format if ts else None)
    try:
        bounds = (storage.encode(start), storage.encode(end)) if storage is not None and start and end else None
        pipeline = doc_readers.mongo_pipeline(leaves, ts_field, bounds)
        count = None
        if bounds is not None and ts_field is not None:
            match = doc_readers.window_match(ts_field, bounds)
            count = connect.guarded(src, f"counting documents of {collection.name}",
                                    lambda: collection.count_documents(match))
    except BaseException:
        client.close()
        raise
    query = json.dumps({"collection": collection.name, "pipeline": pipeline}, default=str, sort_keys=True)
    names = [leaf.alias for leaf in leaves]
    return _Part(f"collection {collection.name!r}", query, lambda: count,
                 lambda: doc_readers.mongo_batches(collection, pipeline, names, batch_rows), part, client.close,
                 transient_count=True)


def _parquet_part(src: SourceURI, part: TableSpec, leaves: list[Leaf], start: datetime | None, end: datetime | None,
                  batch_rows: int) -> _Part:
    ts = part.columns.get("ts") if start is not None else None
    scanner, _, count = doc_readers.parquet_scan(src, part, leaves, ts.source if ts else None, ts.unit if ts else None,
                                                    ts.format if ts else None, start, end, batch_rows)
    query = json.dumps({"parquet": str(src.path), "table": part.table,
                        "columns": {leaf.alias: leaf.source for leaf in leaves},
                        "ts": ts.source if ts else None, "start": str(start), "end": str(end)}, sort_keys=True)
    return _Part(f"Parquet {src.path}", query, lambda: count, lambda: iter(scanner.to_batches()), part, lambda: None,
                 transient_count=False)


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
