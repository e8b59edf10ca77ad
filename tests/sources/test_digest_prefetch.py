"""Snapshot digest format 2 (checked against an independent reference) and the prefetching reader."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sources.snapshot as snapshot_mod
from core.schema import SNAPSHOT_SCHEMA
from sources import extract_snapshot, read_index, write_table
from sources.hashing import DIGEST_FORMAT, ColumnHasher, TableHasher
from sources.stream import prefetched

from .conftest import END, START, canonical_rows

_PACK = {pa.int64(): "<q", pa.int32(): "<i", pa.float64(): "<d", pa.float32(): "<f"}


def reference_digest(values: list[object], kind: pa.DataType) -> str:
    """Format 2 written out per row in plain Python, from the module docstring."""
    runs: list[int] = []
    for v in values:
        sign = 1 if v is not None else -1
        if runs and (runs[-1] > 0) == (sign > 0):
            runs[-1] += sign
        else:
            runs.append(sign)
    present = [v for v in values if v is not None]
    lengths, data = b"", b""
    if pa.types.is_string(kind):
        encoded = [str(v).encode() for v in present]
        lengths = b"".join(struct.pack("<i", len(e)) for e in encoded)
        data = b"".join(encoded)
    elif pa.types.is_boolean(kind):
        data = bytes(int(bool(v)) for v in present)
    elif pa.types.is_timestamp(kind):
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        data = b"".join(struct.pack("<q", (v - epoch) // timedelta(microseconds=1)) for v in present)  # type: ignore[operator]
    else:
        data = b"".join(struct.pack(_PACK[kind], v) for v in present)
    parts = [hashlib.sha256(b"".join(struct.pack("<q", r) for r in runs)), hashlib.sha256(lengths), hashlib.sha256(data)]
    return hashlib.sha256("".join(p.hexdigest() for p in parts).encode()).hexdigest()


def digest(chunks: list[pa.Array]) -> str:
    hasher = ColumnHasher(chunks[0].type)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


CASES = [
    (pa.string(), ["a", None, None, "bcd", "", None, "é€", "x", "y", None]),
    (pa.int64(), [5, None, -7, 2**40, None, None, 0, 1, 2, 3]),
    (pa.int32(), [None, 1, 2, None, 3, 4, 5, None, None, 6]),
    (pa.float64(), [0.5, None, -1.25, 3.0, None, 7.5, 1e300, None, 2.0, 0.0]),
    (pa.bool_(), [True, None, False, True, True, None, None, False, True, False]),
    (pa.timestamp("us", tz="UTC"), [datetime(2025, 1, 1, tzinfo=UTC), None, datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
                                    None, None, datetime(1999, 12, 31, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC),
                                    None, datetime(2030, 1, 1, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC)]),
]


@pytest.mark.parametrize(("kind", "values"), CASES, ids=[str(k) for k, _ in CASES])
@pytest.mark.parametrize("cuts", [[], [1], [2, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9], [5]])
def test_column_digest_matches_reference_for_any_batching(kind: pa.DataType, values: list[object], cuts: list[int]) -> None:
    whole = pa.array(values, kind)
    bounds = [0, *cuts, len(values)]
    chunks = [whole.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]  # sliced: nonzero offsets
    assert digest(chunks) == reference_digest(values, kind)


def test_all_null_and_null_free_columns_match_reference() -> None:
    assert digest([pa.nulls(3, pa.string()), pa.nulls(2, pa.string())]) == reference_digest([None] * 5, pa.string())
    assert digest([pa.array([1.0, 2.0]), pa.array([3.0])]) == reference_digest([1.0, 2.0, 3.0], pa.float64())


@pytest.mark.parametrize(("kind", "a", "b"), [
    (pa.string(), ["ab", "c"], ["a", "bc"]),       # same bytes, different boundaries
    (pa.string(), ["", "x"], [None, "x"]),          # empty is not null
    (pa.int64(), [0, 1], [None, 1]),                 # zero is not null
    (pa.int64(), [None, 1, 2], [1, None, 2]),        # a moved null
    (pa.float64(), [1.0, 2.0], [1.0, 2.000001]),
    (pa.string(), ["a", None, "b"], ["a", None, None, "b"]),
])
def test_digest_changes_with_the_data(kind: pa.DataType, a: list[object], b: list[object]) -> None:
    assert digest([pa.array(a, kind)]) != digest([pa.array(b, kind)])


def test_table_hasher_rejects_a_type_it_cannot_digest() -> None:
    with pytest.raises(TypeError, match="cannot digest"):
        TableHasher(pa.schema([("emb", pa.list_(pa.float32()))]))
    with pytest.raises(TypeError, match="expected string"):
        ColumnHasher(pa.string()).update(pa.array([1, 2]))


def counting(n: int, log: list[int], fail_at: int | None = None, closed: list[bool] | None = None) -> Iterator[int]:
    try:
        for i in range(n):
            if i == fail_at:
                raise RuntimeError(f"source failed at item {i}")
            log.append(i)
            yield i
    finally:
        if closed is not None:
            closed.append(threading.current_thread().name != "MainThread")


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetched_keeps_order_and_stays_bounded(depth: int) -> None:
    produced: list[int] = []
    got, ahead = [], []
    for item in prefetched(counting(50, produced), depth):
        got.append(item)
        ahead.append(len(produced) - len(got))
    assert got == list(range(50))
    # at most `depth` queued plus the one waiting to be queued
    assert max(ahead) <= depth + 1
    assert not [t for t in threading.enumerate() if t.name == "rankloop-source-prefetch"]


def test_prefetched_reraises_the_producers_error_after_closing_it() -> None:
    closed: list[bool] = []
    got: list[int] = []
    with pytest.raises(RuntimeError, match="failed at item 4"):
        for item in prefetched(counting(10, [], fail_at=4, closed=closed), 2):
            got.append(item)
    assert got == [0, 1, 2, 3] and closed == [True]


def test_prefetched_stops_and_closes_the_producer_when_the_consumer_stops() -> None:
    closed: list[bool] = []
    produced: list[int] = []
    stream = prefetched(counting(1000, produced, closed=closed), 2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # joins the producer
    assert closed == [True] and len(produced) <= 3 + 2 + 1
    assert not [t for t in threading.enumerate() if t.name == "rankloop-source-prefetch"]


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    write_table(uri, "interactions", canonical_rows(), indexes=[("ts",)])
    return uri


def test_snapshot_digest_does_not_depend_on_prefetch_or_batch_size(tmp_path: Path, sqlite_uri: str) -> None:
    a = extract_snapshot(sqlite_uri, "rankloop", START, END, tmp_path / "a", prefetch=0, batch_rows=1000)
    b = extract_snapshot(sqlite_uri, "rankloop", START, END, tmp_path / "b", prefetch=3, batch_rows=7)
    assert a.digest == b.digest and a.rows == b.rows == 200
    assert pq.read_table(a.path).equals(pq.read_table(b.path))
    assert a.manifest["digest_format"] == DIGEST_FORMAT == 2
    hasher = TableHasher(SNAPSHOT_SCHEMA)
    hasher.update(pq.read_table(a.path))
    assert a.manifest["column_digests"] == hasher.hexdigests()
    with pytest.raises(ValueError, match="prefetch"):
        extract_snapshot(sqlite_uri, "rankloop", START, END, tmp_path / "c", prefetch=-1)


def test_a_failure_while_writing_leaves_no_snapshot(tmp_path: Path, sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = snapshot_mod._extend

    def failing(lo, hi, ts):  # called once per written batch
        calls.append(len(ts))
        if len(calls) == 2:
            raise OSError("disk full")
        return real(lo, hi, ts)

    monkeypatch.setattr(snapshot_mod, "_extend", failing)
    snaps = tmp_path / "snaps"
    with pytest.raises(OSError, match="disk full"):
        extract_snapshot(sqlite_uri, "rankloop", START, END, snaps, batch_rows=20, prefetch=2)
    assert list(snaps.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name == "rankloop-source-prefetch"]


def _pretend_format_1(snaps: Path, snap_digest: str, old_digest: str) -> None:
    """Turn a snapshot into what format 1 left: another digest, no digest_format in the index."""
    shutil.move(snaps / snap_digest, snaps / old_digest)
    index = read_index(snaps)
    for entry in index.values():
        entry["digest"] = old_digest
        entry.pop("digest_format")
    (snaps / "index.json").write_text(json.dumps(index))


def test_digest_format_upgrade_compares_the_data_not_the_digests(tmp_path: Path, sqlite_uri: str) -> None:
    snaps = tmp_path / "snaps"
    first = extract_snapshot(sqlite_uri, "rankloop", START, END, snaps)
    _pretend_format_1(snaps, first.digest, "f" * 64)
    same = extract_snapshot(sqlite_uri, "rankloop", START, END, snaps)
    assert not same.reused and same.digest == first.digest
    assert same.previous == {"digest": "f" * 64, "rows_before": 200, "rows_after": 200, "changed": False,
                             "digest_format_before": 1}
    _pretend_format_1(snaps, same.digest, "e" * 64)
    old = pq.read_table(snaps / ("e" * 64) / "data.parquet")
    pq.write_table(old.slice(0, 199), snaps / ("e" * 64) / "data.parquet")  # the old data differed
    changed = extract_snapshot(sqlite_uri, "rankloop", START, END, snaps)
    assert changed.previous is not None and changed.previous["changed"] is True
