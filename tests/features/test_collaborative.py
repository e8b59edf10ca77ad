"""The co-occurrence features: cosine over users who touched both items, before the query's day only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config.features import FeatureSettings
from features import build_features

COLS = ["ui_cooccur_sum", "ui_cooccur_mean", "ui_cooccur_max"]


def _events(make_frame, extra=()):
    rows = [("A", "x", "rating", "2026-01-01T09:00:00"), ("A", "y", "rating", "2026-01-01T09:01:00"),
            ("B", "x", "rating", "2026-01-01T10:00:00"), ("B", "y", "view", "2026-01-01T10:01:00"),
            ("C", "x", "rating", "2026-01-01T11:00:00"), ("C", "z", "rating", "2026-01-01T11:05:00"),
            ("D", "z", "rating", "2026-01-01T12:00:00"), *extra]
    return make_frame(rows)


def _features(make_frame, events, queries):
    q = make_frame(queries)
    return build_features(q, events, settings=FeatureSettings(), feature_set="ranker_implicit")[COLS]


def test_cosine_co_occurrence_with_the_user_s_earlier_items(make_frame):
    out = _features(make_frame, _events(make_frame), [("C", "y", "impression", "2026-01-02T08:00:00"),
                                                      ("D", "y", "impression", "2026-01-02T08:00:00"),
                                                      ("E", "y", "impression", "2026-01-02T08:00:00")])
    # C touched x and z; y co-occurs with x for A and B: 2 / sqrt(3 users of x * 2 users of y); never with z.
    xy = 2 / np.sqrt(6)
    np.testing.assert_allclose(out.iloc[0].to_numpy(), [xy, xy / 2, xy], rtol=1e-6)
    np.testing.assert_array_equal(out.iloc[1].to_numpy(), [0, 0, 0])  # D's only item z never met y
    np.testing.assert_array_equal(out.iloc[2].to_numpy(), [0, 0, 0])  # E has no history


def test_the_query_s_own_day_and_later_are_invisible(make_frame):
    same_day = [("C", "y", "impression", "2026-01-01T23:00:00")]
    assert (_features(make_frame, _events(make_frame), same_day).to_numpy() == 0).all()
    query = [("C", "y", "impression", "2026-01-02T08:00:00")]
    base = _features(make_frame, _events(make_frame), query)
    later = [("C", "y", "rating", "2026-01-02T00:00:00"), ("F", "x", "rating", "2026-01-02T07:00:00"),
             ("F", "y", "rating", "2026-01-03T07:00:00")]
    pd.testing.assert_frame_equal(_features(make_frame, _events(make_frame, later), query), base, check_exact=True)


def test_slices_and_the_dense_read_give_the_row_by_row_scores_to_the_last_bit(monkeypatch):
    """A day's rows are scored a slice at a time, reading S dense for a small catalogue: the same float64
    values as taking each row's row of S (S is symmetric only up to rounding: S[item, j] is what it reads)."""
    from features import defs_collaborative as dc

    rng = np.random.default_rng(7)
    n_users, n_items, n_events, n_queries = 300, 120, 20_000, 6_000
    day = 86_400_000
    args = (rng.integers(0, n_users, n_events), rng.integers(0, n_items, n_events), rng.integers(0, 20, n_events) * day,
            rng.integers(0, n_users, n_queries), rng.integers(0, n_items, n_queries), rng.integers(1, 21, n_queries) * day)
    monkeypatch.setattr(dc, "DENSE_ITEMS", 0)
    monkeypatch.setattr(dc, "PAIRS_PER_SLICE", 10**12)
    by_rows = np.vstack(dc.cooccurrence_scores(*args, n_users, n_items))
    monkeypatch.setattr(dc, "DENSE_ITEMS", 4096)
    monkeypatch.setattr(dc, "PAIRS_PER_SLICE", 500)
    sliced = np.vstack(dc.cooccurrence_scores(*args, n_users, n_items))
    assert (by_rows[0] > 0).mean() > 0.9 and np.array_equal(sliced, by_rows)
    monkeypatch.setattr(dc, "DENSE_ITEMS", 0)
    monkeypatch.setattr(dc, "PAIRS_PER_SLICE", 1)  # a row a slice, by rows of S
    assert np.array_equal(np.vstack(dc.cooccurrence_scores(*args, n_users, n_items)), by_rows)


def test_first_pairs_are_each_pairs_earliest_day():
    """Each (user, item) pair with both codes known, once, with the UTC day of its first event: the groupby it
    replaced, over random logs with missing codes, repeats and empty ones."""
    from features.defs_collaborative import DAY_MS, _first_pairs

    rng = np.random.default_rng(11)
    for n in (0, 1, 50, 5_000):
        user, item = rng.integers(-1, 40, n), rng.integers(-1, 25, n)
        ms = rng.integers(0, 30 * DAY_MS, n)
        got = _first_pairs(user, item, ms)
        keep = (user >= 0) & (item >= 0)
        expected = (pd.DataFrame({"u": user[keep], "i": item[keep], "day": ms[keep] // DAY_MS})
                    .groupby(["u", "i"])["day"].min().reset_index())
        pd.testing.assert_frame_equal(got.sort_values(["u", "i"]).reset_index(drop=True), expected, check_dtype=False)
        assert got["u"].dtype == user.dtype and len(got) == len(expected)


@pytest.mark.parametrize("pack_rows", [7, 1 << 22])
def test_first_pairs_packed_are_the_argsorted_pairs(monkeypatch: pytest.MonkeyPatch, pack_rows: int):
    """The pairs sorted as packed (key and day in one int64, sorted in place, a few events at a time) are the
    frame the argsort of keys made, row for row and dtype for dtype; keys too wide to pack take the argsort."""
    import features.defs_collaborative as dc
    from features.defs_collaborative import DAY_MS

    monkeypatch.setattr(dc, "PACK_ROWS", pack_rows)  # 7: the key changes are found across chunks
    rng = np.random.default_rng(5)
    for n, users, items in ((1, 3, 3), (300, 40, 25), (20_000, 3_000, 900)):
        user = rng.integers(-1, users, n).astype(np.int32)
        item = rng.integers(-1, items, n).astype(np.int32)
        ms = rng.integers(-3 * DAY_MS, 40 * DAY_MS, n)  # days before 1970 too
        got = dc._first_pairs(user, item, ms)
        pd.testing.assert_frame_equal(got, dc._first_pairs_by_argsort(user, item, ms))
    user = np.array([2**40, 5, 2**40], dtype=np.int64)  # 2**40 users x 2**22 items: no room for the day
    item = np.array([2**22, 1, 2**22], dtype=np.int64)
    ms = np.array([5 * DAY_MS, DAY_MS, 2 * DAY_MS])
    pd.testing.assert_frame_equal(dc._first_pairs(user, item, ms), pd.DataFrame(
        {"u": np.array([5, 2**40]), "i": np.array([1, 2**22]), "day": np.array([1, 2])}))
