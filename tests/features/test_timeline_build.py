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


def test_totals_in_sorted_order_unsort_to_the_totals() -> None:
    """A feature may combine totals in the timeline's query order and unsort once (emb_cos_engaged_mean):
    the same values, query by query, as the totals in the original order."""
    rng = np.random.default_rng(11)
    ev_key, ev_ms = rng.integers(-1, 25, 4_000), rng.integers(0, 20 * DAY_MS, 4_000)
    q_key, q_ms = rng.integers(-1, 25, 2_500), rng.integers(0, 20 * DAY_MS, 2_500)
    values = rng.integers(0, 1_000, 4_000)
    line = Timeline(ev_key, ev_ms, q_key, q_ms, 7 * DAY_MS)
    for window in (DAY_MS, 7 * DAY_MS, None):
        prefix = line.prefix(values)
        expected = line.total(prefix, window)
        in_order = line.total_sorted(prefix, window)
        assert not (in_order == expected).all()  # a different order: the check below means something
        assert (line.unsort(in_order) == expected).all() and expected.sum() > 0
    assert (line.unsort(line.queries_sorted(q_ms)) == q_ms).all()
