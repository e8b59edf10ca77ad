"""Chunking-independent streaming digests of Arrow tables (same rows, same digest, any batching)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class TableHasher:
    """Per column, separate sha256 streams over null flags, string lengths and value bytes."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self._hashes = {name: _Streams() for name in schema.names}

    def update(self, table: pa.Table) -> None:
        """Feed the next rows (columns in ``schema`` order)."""
        for name in self.schema.names:
            for chunk in table.column(name).chunks:
                _update(self._hashes[name], chunk)

    def hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashes.items()}


class _Streams:
    def __init__(self) -> None:
        self.nulls, self.lengths, self.data = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()

    def hexdigest(self) -> str:
        return hashlib.sha256((self.nulls.hexdigest() + self.lengths.hexdigest() + self.data.hexdigest()).encode()).hexdigest()


def _update(h: _Streams, arr: pa.Array) -> None:
    if len(arr) == 0:
        return
    h.nulls.update(np.asarray(arr.is_null().cast(pa.uint8())).tobytes())
    kind = arr.type
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        filled = pc.fill_null(arr, "" if pa.types.is_string(kind) else b"")
        h.lengths.update(np.asarray(pc.binary_length(filled)).tobytes())
        offsets = np.frombuffer(filled.buffers()[1], dtype=np.int32)[filled.offset: filled.offset + len(filled) + 1]
        data = filled.buffers()[2]
        if data is not None and offsets[-1] > offsets[0]:
            h.data.update(memoryview(data)[offsets[0]: offsets[-1]])
        return
    if pa.types.is_timestamp(kind):
        arr = arr.cast(pa.int64())
    elif pa.types.is_boolean(kind):
        arr = arr.cast(pa.uint8())
    elif pa.types.is_null(kind):
        return
    h.data.update(np.asarray(pc.fill_null(arr, 0)).tobytes())
