"""Keys hashed into buckets, and rows spilled to one file per bucket: a window too large to hold, worked
one bucket of keys at a time.

:func:`key_hashes` gives each value of a key column a 64-bit hash that depends only on the value (the
same in any record batch and any process). :class:`BucketSpill` appends rows to one Arrow IPC stream
file per bucket, keeping the order in which they were appended, and reads the buckets back one at a
time. Used by the contract's rules that look across rows (``data_contracts.across``: users) and the
drift report's rewards and slates (``rankloop.drift_events``: requests).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def key_hashes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Per value, a 64-bit hash of it (pandas' hash of the value: the same value, the same hash, in any
    batch), and whether it is present (a null's hash is 0). Each distinct value is hashed once."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
    of_value = pd.util.hash_pandas_object(pd.Series(pd.arrays.ArrowExtensionArray(encoded.dictionary)),
                                          index=False, categorize=False).to_numpy()
    codes = pc.fill_null(encoded.indices.cast(pa.int64()), -1).to_numpy()
    present = codes >= 0
    hashes = of_value[np.maximum(codes, 0)] if len(of_value) else np.zeros(len(codes), dtype=np.uint64)
    return np.where(present, hashes, np.uint64(0)), present


def key_buckets(values: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Per value, its bucket: the hash modulo ``buckets`` (a null: bucket 0)."""
    if buckets == 1:
        return np.zeros(len(values), dtype=np.int64)
    hashes, present = key_hashes(values)
    return np.where(present, hashes % np.uint64(buckets), np.uint64(0)).astype(np.int64)


class BucketSpill:
    """One Arrow IPC stream file per bucket in ``folder``; each holds the rows appended to it, in order.

    Use as a context manager: the files are closed on the way out (the caller owns ``folder``, a
    temporary one). :meth:`buckets` reads them back one at a time, removing each file as it is read.
    """

    def __init__(self, folder: Path, buckets: int, schema: pa.Schema) -> None:
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets}")
        self.schema = schema
        self.paths = [Path(folder) / f"bucket-{b:05d}.arrow" for b in range(buckets)]
        self._writers: list[pa.ipc.RecordBatchStreamWriter] | None = None

    def __enter__(self) -> BucketSpill:
        self._writers = [pa.ipc.new_stream(p, self.schema) for p in self.paths]
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for w in self._writers or []:
            w.close()
        self._writers = None

    def append(self, table: pa.Table, bucket: np.ndarray) -> None:
        """Append each row of ``table`` to its bucket's file (``bucket``: one entry per row), in row order."""
        if self._writers is None:
            raise RuntimeError("BucketSpill.append outside its with block")
        order = np.argsort(bucket, kind="stable")
        ends = np.cumsum(np.bincount(bucket, minlength=len(self._writers)))
        spilled = table.take(pa.array(order))
        start = 0
        for b, end in enumerate(ends):
            if end > start:
                self._writers[b].write_table(spilled.slice(start, end - start))
            start = end

    def buckets(self) -> Iterator[pa.Table]:
        """Each bucket's rows, in the order appended (empty buckets too), its file removed once read."""
        if self._writers is not None:
            raise RuntimeError("BucketSpill.buckets before its with block closed the files")
        for path in self.paths:
            with pa.ipc.open_stream(path) as reader:
                table = reader.read_all()
            path.unlink()
            yield table
