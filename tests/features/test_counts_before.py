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


def test_position_buckets_are_one_byte_and_count_as_the_int64_ones():
    """Buckets of odd positions (missing, negative, fractional, beyond max_position) in int8 give the counts the
    int64 buckets gave: a negative bucket counts nothing, whatever its value."""
    from types import SimpleNamespace

    import pandas as pd

    from core.config.features import FeatureSettings
    from features.defs_activity import _position_bucket

    positions = pd.Series([None, -300, -1.5, -0.5, 0, 3, 2.7, 10**6, 1, 3], dtype="Float64")
    ctx = SimpleNamespace(events=pd.DataFrame({"position": positions}), ev_ms=np.arange(10),
                          settings=FeatureSettings())
    bucket = _position_bucket(ctx)
    values = positions.to_numpy(dtype=np.float64, na_value=np.nan)
    old = np.where(np.isnan(values), -1, np.minimum(np.nan_to_num(values, nan=0), FeatureSettings().max_position))
    old = old.astype(np.int64)
    assert bucket.dtype == np.int8 and (bucket[old >= 0] == old[old >= 0]).all() and (bucket[old < 0] < 0).all()
    ms = np.arange(10) * 1000
    np.testing.assert_array_equal(timeline.counts_before(bucket, ms, bucket, ms + 5000),
                                  timeline.counts_before(old, ms, old, ms + 5000))
