"""A timeline builds its composite keys in place from the keys as given: int32 and int64 codes give the same
timeline, negative keys are left out, and the caller's arrays are never changed."""

from __future__ import annotations

import numpy as np

from features.timeline import DAY_MS, Timeline


def test_int32_and_int64_keys_build_the_same_timeline_and_leave_the_inputs_alone() -> None:
    rng = np.random.default_rng(7)
    n, q = 5_000, 3_000
    ev_key = rng.integers(-1, 40, n)
    ev_ms = rng.integers(0, 30 * DAY_MS, n)
    q_key = rng.integers(-1, 40, q)
    q_ms = rng.integers(0, 30 * DAY_MS, q)
    copies = [a.copy() for a in (ev_key, ev_ms, q_key, q_ms)]
    wide = Timeline(ev_key, ev_ms, q_key, q_ms, 7 * DAY_MS)
    narrow = Timeline(ev_key.astype(np.int32), ev_ms, q_key.astype(np.int32), q_ms, 7 * DAY_MS)
    for a, b in zip((ev_key, ev_ms, q_key, q_ms), copies, strict=True):
        assert (a == b).all()
    for name in ("order", "comp", "q_order", "q_comp", "q_valid", "hi"):
        assert (getattr(wide, name) == getattr(narrow, name)).all(), name
    assert len(wide.order) == int((ev_key >= 0).sum())  # events without a key are left out
    assert wide.comp.dtype == np.int64 and (np.diff(wide.comp) >= 0).all()
    # Each kept event's composite key: its key's block plus its time from t0, in the timeline's unit.
    rows = wide.order.astype(np.int64)
    expected = ev_key[rows] * wide.span + (ev_ms[rows] - wide.t0) // wide.unit
    assert (wide.comp == expected).all()
    counts = wide.total(wide.prefix(np.ones(n, dtype=np.int64)), 7 * DAY_MS)
    brute = np.array([((ev_key == k) & (ev_ms < t) & (ev_ms >= t - 7 * DAY_MS)).sum() if k >= 0 else 0
                      for k, t in zip(q_key, q_ms, strict=True)])
    assert (counts == brute).all() and counts.sum() > 0
