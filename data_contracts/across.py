"""The rules that look across rows, over a window too large to hold: keys hashed into buckets.

A repeated ``event_id`` (:class:`~data_contracts.checks.Unique`), a repeated event key and an engagement
without an exposure (:class:`~data_contracts.checks.CompoundUnique`, :class:`~data_contracts.checks.HasExposure`)
each compare a row with other rows anywhere in the window. :func:`across_rows` finds them without the
window's key columns in memory:

* one streamed read of the key columns, record batch by record batch, keeps per row only the hash of
  each unique column, the event time and the event type's code, and writes the columns the user-keyed
  rules read to one spill file per bucket of users (the user id's hash, modulo the bucket count);
* a unique column's repeats are found among the rows whose 64-bit hash repeats; only those rows' values
  are read back (a second read of that one column, when any hash repeats) and compared exactly;
* every link of the user-keyed rules is within one user (the event key holds ``user_id``; an exposure
  explains only the same user's engagement), so they run one bucket at a time, with the same masks as
  over the whole window: a bucket keeps the window's row order, so "the first occurrence is kept" holds.

Memory: a few bytes per row (hashes, times, codes, masks) and one bucket's key columns
(:data:`data_contracts.checks.BUCKET_ROWS` rows of them), not the window's key columns.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.schema import INTERACTION_SCHEMA
from core.spill import BucketSpill, key_buckets
from data_contracts import checks
from data_contracts.checks import Batch, CompoundUnique, HasExposure, Unique, repeat_mask
from data_contracts.rules import RowRule

KEY_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id", "event_type", "ts", "session_id", "request_id")
# What a bucket's spill file holds: the user-keyed rules' columns and the row's place in the window.
_BUCKET_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "event_type", "ts", "session_id", "request_id")
_ROW = "_row"
_KEY_SCHEMA = pa.schema([INTERACTION_SCHEMA.field(c).with_nullable(True) for c in KEY_COLUMNS])


@dataclass(frozen=True)
class Across:
    """What the rules that look across rows found in a window of ``len(keys)`` rows."""

    masks: dict[str, np.ndarray]  # per rule: True where the row breaks it
    repeated: dict[str, int]  # per uniqueness rule: distinct values (keys) among its flagged rows
    keys: Batch  # every row's event type and time, already encoded (the records and profile read them)


def is_across_rows(rule: RowRule) -> bool:
    """The rule compares a row with other rows (it cannot run one record batch at a time)."""
    return isinstance(rule.check, Unique | CompoundUnique | HasExposure)


def across_rows(
    files: list[pq.ParquetFile], rules: tuple[RowRule, ...] | list[RowRule], params: dict[str, Any],
    prior_exposures: pa.Table | None, *, scratch: Path, batch_rows: int = 262_144,
) -> Across:
    """Masks of ``rules`` that look across rows (:func:`is_across_rows`) over the rows of ``files``.

    The masks are those of ``rule.mask`` over the whole window's table; ``scratch`` is the folder in which
    the buckets' spill files live while this runs (a temporary folder, removed on the way out). ``files``
    are read a record batch at a time: open them with :func:`core.parquet.open_for_streaming`.
    """
    rules = [r for r in rules if is_across_rows(r)]
    unique = [r for r in rules if isinstance(r.check, Unique)]
    by_user = [r for r in rules if not isinstance(r.check, Unique)]
    for r in by_user:
        if isinstance(r.check, CompoundUnique) and "user_id" not in r.check.columns:
            raise ValueError(f"rule {r.name!r}: a compound key without user_id cannot be checked in user buckets")
    n = sum(f.metadata.num_rows for f in files)
    buckets = max(1, -(-n // checks.BUCKET_ROWS))
    hashes = {r.name: np.zeros(n, dtype=np.uint64) for r in unique}
    present = {r.name: np.zeros(n, dtype=bool) for r in unique}
    ts = np.zeros(n, dtype=np.int64)
    types = np.zeros(n, dtype=np.int32)
    type_codes: dict[str, int] = {}
    masks = {r.name: np.zeros(n, dtype=bool) for r in rules}
    repeated = dict.fromkeys((r.name for r in rules), 0)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".keys.", suffix=".tmp") as folder:
        spill = BucketSpill(Path(folder), buckets, _bucket_schema())
        with spill:
            offset = 0
            for table in _key_batches(files, batch_rows):
                rows = slice(offset, offset + table.num_rows)
                for r in unique:
                    column = table.column(r.column)
                    present[r.name][rows] = ~checks.to_numpy(pc.is_null(column))
                    hashes[r.name][rows] = _hash(column)
                ts[rows] = pc.fill_null(table.column("ts").cast(pa.int64()), 0).to_numpy()
                types[rows] = _type_codes(table.column("event_type"), type_codes)
                spill.append(table.select(list(_BUCKET_COLUMNS)).append_column(
                    _ROW, pa.array(np.arange(offset, offset + table.num_rows, dtype=np.int64))),
                    key_buckets(table.column("user_id"), buckets))
                offset += table.num_rows
        for r in unique:
            masks[r.name], repeated[r.name] = _repeats(files, r.column, hashes.pop(r.name), present.pop(r.name),
                                                      batch_rows)
        for bucket in spill.buckets():
            if bucket.num_rows == 0:
                continue
            rows = bucket.column(_ROW).to_numpy()
            batch = Batch(bucket.drop_columns([_ROW]), params, prior_exposures)
            for r in by_user:
                mask = r.mask(batch)
                masks[r.name][rows] = mask
                if isinstance(r.check, CompoundUnique) and mask.any():
                    columns = list(r.check.columns)
                    repeated[r.name] += batch.table.select(columns).filter(pa.array(mask)).group_by(columns) \
                        .aggregate([]).num_rows
            del bucket, batch
    types[types < 0] = len(type_codes)  # a null event type: the dictionary's last entry, None
    keys = Batch.encoded(ts, types, np.array([*type_codes, None], dtype=object), params)
    for r in unique:
        if r.when_event_types is not None:
            masks[r.name] &= keys.event_type_in(r.when_event_types)
    return Across(masks, repeated, keys)


def _key_batches(files: list[pq.ParquetFile], batch_rows: int) -> Iterator[pa.Table]:
    """The files' key columns, a record batch at a time, typed as the contract types them (nulls where
    a file lacks one)."""
    for f in files:
        names = set(f.schema_arrow.names)
        for batch in f.iter_batches(batch_size=batch_rows, columns=[c for c in KEY_COLUMNS if c in names],
                                    use_threads=False):
            if batch.num_rows:
                yield pa.Table.from_arrays(
                    [batch.column(c) if c in names else pa.nulls(batch.num_rows, _KEY_SCHEMA.field(c).type)
                     for c in KEY_COLUMNS], schema=_KEY_SCHEMA)


def _bucket_schema() -> pa.Schema:
    return pa.schema([*(_KEY_SCHEMA.field(c) for c in _BUCKET_COLUMNS), pa.field(_ROW, pa.int64())])


def _hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of strings (pandas' hash of the values: the same string, the same hash, in any batch)."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pd.util.hash_pandas_object(pd.Series(pd.arrays.ArrowExtensionArray(array)), index=False,
                                      categorize=False).to_numpy()


def _type_codes(types: pa.ChunkedArray, codes: dict[str, int]) -> np.ndarray:
    """Per row, the event type's code in ``codes`` (first seen, first numbered; new types are added);
    -1 for a missing type."""
    encoded = pc.dictionary_encode(types.combine_chunks())
    for value in encoded.dictionary.to_pylist():
        codes.setdefault(value, len(codes))
    of_value = np.array([codes[v] for v in encoded.dictionary.to_pylist()], dtype=np.int32)
    indices = pc.fill_null(encoded.indices, -1).to_numpy()
    return np.where(indices >= 0, of_value[np.maximum(indices, 0)] if len(of_value) else -1, -1)


def _repeats(files: list[pq.ParquetFile], column: str, hashes: np.ndarray, present: np.ndarray,
             batch_rows: int) -> tuple[np.ndarray, int]:
    """:func:`~data_contracts.checks.repeat_mask` of ``column`` over the files, from its hashes: only the
    rows whose hash repeats are read back and compared; and the number of distinct repeated values."""
    mask = np.zeros(len(hashes), dtype=bool)
    kept = np.sort(hashes[present])
    twice = np.unique(kept[1:][kept[1:] == kept[:-1]])
    del kept
    if len(twice) == 0:
        return mask, 0
    candidates = np.flatnonzero(present & np.isin(hashes, twice))
    values, offset = [], 0
    for f in files:
        if column not in f.schema_arrow.names:  # its rows are all null: never candidates
            offset += f.metadata.num_rows
            continue
        for batch in f.iter_batches(batch_size=batch_rows, columns=[column], use_threads=False):
            mine = candidates[(candidates >= offset) & (candidates < offset + batch.num_rows)] - offset
            if len(mine):
                values.append(batch.column(0).take(pa.array(mine)))
            offset += batch.num_rows
    values = pa.chunked_array(values, type=_KEY_SCHEMA.field(column).type)
    flagged = repeat_mask(values)
    mask[candidates] = flagged
    return mask, pc.count_distinct(values.filter(pa.array(flagged))).as_py()
