"""Chunking-independent streaming digests of Arrow tables (same rows, same digest, any batching).

Format 2 (``DIGEST_FORMAT``), per column, three sha256 streams:

* ``runs``: the validity as run lengths, little-endian int64, ``+n`` for ``n`` valid rows in a
  row and ``-n`` for ``n`` nulls (runs are merged across batch boundaries);
* ``lengths``: for string/binary columns, the int32 byte length of each non-null value;
* ``data``: the bytes of the non-null values (fixed-width values as stored, little-endian;
  strings concatenated; booleans one byte each).

Null rows contribute nothing but their run, so a batch without nulls is hashed straight from its
Arrow buffers (no copies), and an all-null column costs one integer per batch. The column digest
is ``sha256(runs.hex + lengths.hex + data.hex)``. Format 1 (before 2026-11) hashed a per-row null
byte and zero-filled null values; the manifest records which format made a digest.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pyarrow as pa

DIGEST_FORMAT = 2
_LITTLE = sys.byteorder == "little"


class TableHasher:
    """One :class:`ColumnHasher` per column of ``schema``."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self._hashes = {field.name: ColumnHasher(field.type) for field in schema}

    def update(self, table: pa.Table | pa.RecordBatch) -> None:
        """Feed the next rows (the table must have ``schema``'s column types)."""
        for name, hasher in self._hashes.items():
            column = table.column(name)
            for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
                hasher.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashes.items()}


class ColumnHasher:
    """The streaming digest of one column (see the module docstring for the format)."""

    def __init__(self, kind: pa.DataType):
        if not _LITTLE:  # the format hashes native buffers; define it for little-endian hosts only
            raise RuntimeError("snapshot digests (format 2) need a little-endian host")
        if not (_is_text(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind)
                or pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_timestamp(kind)
                or pa.types.is_date(kind) or pa.types.is_duration(kind)):
            raise TypeError(f"cannot digest column type {kind}")
        self.kind = kind
        self.runs, self.lengths, self.data = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
        self._pending = 0  # the open run: > 0 valid rows, < 0 nulls

    def update(self, arr: pa.Array) -> None:
        if arr.type != self.kind:
            raise TypeError(f"expected {self.kind}, got {arr.type}")
        n = len(arr)
        if n == 0:
            return
        nulls = arr.null_count
        if nulls == 0:
            self._runs(np.array([n], np.int64))
        elif nulls == n:
            self._runs(np.array([-n], np.int64))
            return
        else:
            valid = np.asarray(arr.is_valid())
            starts = np.concatenate(([0], np.flatnonzero(valid[1:] != valid[:-1]) + 1))
            sizes = np.diff(np.append(starts, n)).astype(np.int64)
            self._runs(np.where(valid[starts], sizes, -sizes))
            arr = arr.drop_null()
        self._values(arr)

    def _runs(self, runs: np.ndarray) -> None:
        """Append signed run lengths, merging the first with the open run when they agree."""
        if self._pending and (self._pending > 0) == (runs[0] > 0):
            runs[0] += self._pending
        elif self._pending:
            self.runs.update(np.int64(self._pending).tobytes())
        if len(runs) > 1:
            self.runs.update(runs[:-1].tobytes())
        self._pending = int(runs[-1])

    def _values(self, arr: pa.Array) -> None:
        """Hash a null-free array's values straight from its buffers."""
        kind, n, off = arr.type, len(arr), arr.offset
        if pa.types.is_null(kind):
            return
        if _is_text(kind):
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[off: off + n + 1]
            self.lengths.update(np.diff(offsets).tobytes())
            data = arr.buffers()[2]
            if data is not None and offsets[-1] > offsets[0]:
                self.data.update(memoryview(data)[offsets[0]: offsets[-1]])
            return
        if pa.types.is_boolean(kind):
            self.data.update(np.asarray(arr, dtype=np.uint8).tobytes())
            return
        width = kind.bit_width // 8
        self.data.update(memoryview(arr.buffers()[1])[off * width: (off + n) * width])

    def hexdigest(self) -> str:
        runs = self.runs.copy()
        if self._pending:
            runs.update(np.int64(self._pending).tobytes())
        text = runs.hexdigest() + self.lengths.hexdigest() + self.data.hexdigest()
        return hashlib.sha256(text.encode()).hexdigest()


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_binary(kind)
