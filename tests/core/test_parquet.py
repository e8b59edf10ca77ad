"""Opening a Parquet file for streaming: the same values as a whole read, without keeping what was read."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.parquet import open_for_streaming


def _file(path: Path, rows: int = 400_000, group: int = 50_000) -> Path:
    rng = np.random.default_rng(7)
    table = pa.table({
        "user_id": pa.array([f"u{i % 97}" for i in range(rows)]),
        "x": rng.random(rows),
        "n": pa.array(np.where(np.arange(rows) % 11 == 0, None, rng.integers(0, 1000, rows)), type=pa.int64()),
        "f": rng.random(rows).astype(np.float32),
    })
    pq.write_table(table, path, row_group_size=group, compression="none")
    return path


def test_a_batched_read_equals_the_whole_read(tmp_path: Path) -> None:
    path = _file(tmp_path / "t.parquet")
    file = open_for_streaming(path)
    assert isinstance(file, pq.ParquetFile)
    assert file.metadata.num_row_groups == 8
    batches = list(file.iter_batches(batch_size=30_000))
    assert len(batches) > 8  # batches that do not line up with the row groups
    assert pa.Table.from_batches(batches).equals(pq.read_table(path))
    groups = [file.read_row_group(g, columns=["x", "n"]) for g in range(file.metadata.num_row_groups)]
    assert pa.concat_tables(groups).equals(pq.read_table(path, columns=["x", "n"]))
    # the other ParquetFile arguments pass through
    coded = open_for_streaming(path, read_dictionary=["user_id"])
    read = pa.Table.from_batches(list(coded.iter_batches(columns=["user_id"])))
    assert pa.types.is_dictionary(read.schema.field("user_id").type)
    assert read.column("user_id").cast(pa.string()).equals(pq.read_table(path, columns=["user_id"]).column("user_id"))


def test_what_was_read_is_not_kept(tmp_path: Path) -> None:
    """The reason for the helper: a pre-buffered reader (pyarrow's default) keeps every row group it has
    read; opened for streaming, a read a batch at a time holds about one batch."""
    path = _file(tmp_path / "t.parquet")
    size = path.stat().st_size

    def allocated() -> int:
        # Every pool: once a test has switched Arrow's default pool (core.memory.use_arrow_pool), Parquet's
        # readers still allocate from the pool they started with, which the default pool's count misses.
        total = 0
        for pool in ("jemalloc_memory_pool", "mimalloc_memory_pool", "system_memory_pool"):
            with contextlib.suppress(NotImplementedError):
                total += getattr(pa, pool)().bytes_allocated()
        return total

    def held_after_reading(file: pq.ParquetFile) -> int:
        before = allocated()
        for batch in file.iter_batches(batch_size=10_000, use_threads=False):
            del batch
        return allocated() - before

    assert held_after_reading(pq.ParquetFile(path)) > size // 2  # the default (guards the measure itself)
    assert held_after_reading(open_for_streaming(path)) < size // 10
