"""counts_before answers the queries a chunk at a time: the counts are a brute-force count's, whatever the chunk."""

from __future__ import annotations

import numpy as np
import pytest

import features.timeline as timeline


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_counts_before_is_the_brute_force_count_in_any_chunk(monkeypatch, chunk):
    rng = np.random.default_rng(11)
    event_key = rng.integers(-1, 5, 400).astype(np.int8)  # -1: an event no query counts
    event_ms = rng.integers(0, 50, 400) * 1000
    query_key = rng.integers(-1, 6, 150)  # key 5: no event has it; -1: no key
    query_ms = rng.integers(0, 52, 150) * 1000  # ties with event times: strictly before
    monkeypatch.setattr(timeline, "_QUERY_CHUNK", chunk)
    got = timeline.counts_before(event_key, event_ms, query_key, query_ms)
    expected = [int(np.sum((event_key == k) & (event_ms < t))) if k >= 0 else 0 for k, t in zip(query_key, query_ms, strict=True)]
    assert got.dtype == np.int64 and got.tolist() == expected and got.max() > 0
    assert timeline.counts_before(event_key[:0], event_ms[:0], query_key, query_ms).tolist() == [0] * 150
