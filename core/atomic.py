"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A process killed at any point leaves either the previous file or the complete new one, never a
half-written file that a rerun or the serving code would read (the temporary file carries a
leading dot and a ``.tmp`` suffix, so readers and globs skip it).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary path beside ``path``, then move it into place.

    Args:
        path: the final file; its folder is created if missing.
        write: writes the whole content to the path it is given.

    Returns:
        ``path``. On any error (or interruption) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """``data`` to ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any, *, indent: int | None = 2) -> Path:
    """``obj`` as JSON (sorted keys, ``default=str``, trailing newline) to ``path``, atomically."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def write_arrow(table: pa.Table, path: Path, *, compression: str = "lz4") -> Path:
    """``table`` as an Arrow IPC file (Feather v2) to ``path``, atomically: for a task's output that another
    task of the same run reads whole (no Parquet encoding: on a day of 93 feature columns it wrote in a fifth and
    read in under half of lz4 Parquet's CPU time, for about the same size)."""
    import pyarrow.feather as feather

    return atomic_write(path, lambda tmp: feather.write_feather(table, tmp, compression=compression))


def write_parquet(table: pa.Table, path: Path, *, compression: str = "zstd",
                  row_group_size: int | None = None) -> Path:
    """``table`` as Parquet to ``path``, atomically (``compression``: zstd for kept files, lz4 for
    intermediates read back within the run; ``row_group_size``: rows per group, for files read back
    in slices)."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression=compression,
                                                         row_group_size=row_group_size))
