"""The co-occurrence features: cosine over users who touched both items, before the query's day only."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
