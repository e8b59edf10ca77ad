"""Keys hashed into buckets and rows spilled one file per bucket (``core.spill``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core.spill import BucketSpill, key_buckets, key_hashes


def test_a_value_has_one_hash_in_any_batch() -> None:
    first, present = key_hashes(pa.array(["a", None, "b", "a"]))
    second, _ = key_hashes(pa.chunked_array([["c", "b"], ["a"]]))
    assert present.tolist() == [True, False, True, True]
    assert first[0] == first[3] == second[2] and first[2] == second[1] and first[0] != first[2] != second[0]
    assert first[1] == 0
    numbers, _ = key_hashes(pa.array([7, 8, 7], pa.int64()))
    assert numbers[0] == numbers[2] != numbers[1]
    coded, _ = key_hashes(pa.array(["b", "a", "b"]).dictionary_encode())
    assert coded[1] == first[0] and coded[0] == first[2]
    empty, none = key_hashes(pa.array([None, None], pa.string()))
    assert empty.tolist() == [0, 0] and not none.any()


def test_buckets_spread_the_keys_and_keep_a_key_in_one() -> None:
    values = pa.array([f"k{i % 500}" for i in range(5000)] + [None])
    bucket = key_buckets(values, 8)
    assert bucket.min() == 0 and bucket.max() == 7 and bucket[-1] == 0
    per_key = {}
    for v, b in zip(values.to_pylist(), bucket, strict=True):
        per_key.setdefault(v, set()).add(int(b))
    assert all(len(b) == 1 for b in per_key.values())
    assert np.bincount(bucket[:-1], minlength=8).min() > 300  # 500 keys, ~62 per bucket: none left empty
    assert not key_buckets(values, 1).any()


def test_the_spill_keeps_each_buckets_rows_in_order_and_removes_its_files(tmp_path: Path) -> None:
    schema = pa.schema([("key", pa.string()), ("row", pa.int64())])
    spill = BucketSpill(tmp_path, 3, schema)
    with spill:
        for lo in range(0, 30, 7):
            rows = np.arange(lo, min(lo + 7, 30))
            table = pa.table({"key": [f"k{r % 5}" for r in rows], "row": rows}, schema=schema)
            spill.append(table, (rows % 5 % 3).astype(np.int64))  # bucket 2 gets keys k2 only
        with pytest.raises(RuntimeError, match="before its with block closed"):
            next(spill.buckets())
    got = []
    for table in spill.buckets():
        got.append(table.column("row").to_pylist())
        assert table.schema == schema
    assert got == [[r for r in range(30) if r % 5 % 3 == b] for b in range(3)]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="outside its with block"):
        spill.append(pa.table({"key": ["a"], "row": [1]}, schema=schema), np.zeros(1, dtype=np.int64))


def test_an_empty_bucket_reads_back_empty(tmp_path: Path) -> None:
    schema = pa.schema([("row", pa.int64())])
    spill = BucketSpill(tmp_path, 4, schema)
    with spill:
        spill.append(pa.table({"row": [1, 2]}, schema=schema), np.array([3, 3]))
    assert [t.num_rows for t in spill.buckets()] == [0, 0, 0, 2]
    with pytest.raises(ValueError, match="at least 1"):
        BucketSpill(tmp_path, 0, schema)
