"""Hand-computed feature values on tiny frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config.features import FeatureSettings
from features import build_features

T = "2026-01-09T12:00:00"


@pytest.fixture()
def tiny(make_frame):
    events = make_frame([
        ("u1", "i1", "impression", "2026-01-01T00:00:00"),
        ("u1", "i1", "click", "2026-01-01T00:01:00"),
        ("u1", "i2", "impression", "2026-01-02T12:00:00"),  # exactly t - 7 days: inside the 7-day window
        ("u1", "i2", "view", "2026-01-05T00:00:00"),
        ("u1", "i2", "click", T),  # at t: invisible
        ("u2", "i1", "impression", "2026-01-09T00:00:00"),
    ])
    events["value"] = [np.nan, np.nan, np.nan, 30.0, np.nan, np.nan]
    items = pd.DataFrame({"item_id": ["i1", "i2"], "category": ["c1", "c1"]})
    queries = make_frame([("u1", "i1", "impression", T), ("u2", "i2", "impression", T)])
    return build_features(queries, events, items=items, settings=FeatureSettings())


def test_window_counts(tiny):
    assert tiny.loc[0, "user_impression_count_1d"] == 0
    assert tiny.loc[0, "user_impression_count_7d"] == 1
    assert tiny.loc[0, "user_impression_count_28d"] == 2
    assert tiny.loc[0, "user_click_count_28d"] == 1
    assert tiny.loc[0, "user_event_count_7d"] == 2
    assert tiny.loc[0, "item_impression_count_1d"] == 1  # u2 saw i1 at 00:00 on the 9th
    assert tiny.loc[1, "user_event_count_28d"] == 1


def test_smoothed_ctr(tiny):
    prior = 1 / 3  # one click over three impressions before t, globally
    expected = (1 + 20 * prior) / (2 + 20)  # i1: one click, two impressions
    assert tiny.loc[0, "item_click_rate_28d"] == pytest.approx(expected, rel=1e-6)
    assert tiny.loc[1, "item_click_rate_28d"] == pytest.approx((0 + 20 * prior) / (1 + 20), rel=1e-6)


def test_affinity(tiny):
    assert tiny.loc[0, "ui_impression_count_28d"] == 1
    assert tiny.loc[0, "ui_engage_count_all"] == 1
    assert tiny.loc[0, "uc_impression_count_28d"] == 2  # both items are in c1
    assert tiny.loc[0, "uc_engage_count_28d"] == 1
    assert tiny.loc[0, "uc_engage_share_28d"] == pytest.approx(1.0)
    assert tiny.loc[1, "ui_impression_count_28d"] == 0


def test_recency_and_dwell(tiny):
    t = pd.Timestamp(T, tz="UTC")
    assert tiny.loc[0, "user_secs_since_last_click"] == pytest.approx((t - pd.Timestamp("2026-01-01T00:01", tz="UTC")).total_seconds())
    assert tiny.loc[0, "user_secs_since_last_event"] == pytest.approx(4.5 * 86400)
    assert tiny.loc[0, "item_secs_since_first_impression"] == pytest.approx(8.5 * 86400)
    assert tiny.loc[0, "ui_secs_since_last_impression"] == pytest.approx(8.5 * 86400)
    assert np.isnan(tiny.loc[1, "user_secs_since_last_click"])
    assert tiny.loc[0, "user_view_seconds_mean_28d"] == pytest.approx(30.0)
    assert np.isnan(tiny.loc[1, "user_view_seconds_mean_28d"])


def test_position_bias_corrected_ctr(make_frame):
    rows = [("u1", f"i{p}", "impression", "2026-01-01T00:00:00", p) for p in range(2)]
    rows += [("u1", "i0", "click", "2026-01-01T00:00:05", 0)]
    rows += [("u2", "i1", "impression", "2026-01-02T00:00:00", 1), ("u2", "i1", "click", "2026-01-02T00:00:05", 1)]
    events = make_frame(rows, ("user_id", "item_id", "event_type", "ts", "position"))
    queries = make_frame([("u3", "i1", "impression", "2026-01-03T00:00:00")])
    settings = FeatureSettings(ctr_prior_strength=1.0, ctr_prior_mean=0.5)
    out = build_features(queries, events, settings=settings)
    # i1's exposures at position 1: the first saw an empty curve (prior 0.5), the second saw
    # position 1 with 0 clicks of 1 (global prior 1/2): (0 + 1 * 0.5) / (1 + 1) = 0.25.
    a = 1.0 * 0.5
    assert out.loc[0, "item_pbc_click_ratio_28d"] == pytest.approx((1 + a) / (0.5 + 0.25 + a), rel=1e-5)


def test_sources_without_impression_events_use_first_events_as_exposures(make_frame):
    events = make_frame([
        ("u1", "i1", "view", "2026-01-01T10:00:00", "s1"),
        ("u1", "i1", "click", "2026-01-01T10:01:00", "s1"),
        ("u1", "i2", "save", "2026-01-02T10:00:00", None),
        ("u1", "i2", "click", "2026-01-02T11:00:00", None),
        ("u1", "i2", "click", "2026-01-03T11:00:00", None),
    ], ("user_id", "item_id", "event_type", "ts", "session_id"))
    queries = make_frame([("u1", "i2", "impression", "2026-01-04T00:00:00")])
    out = build_features(queries, events, settings=FeatureSettings())
    assert out.loc[0, "user_impression_count_28d"] == 3  # (i1, s1), (i2, Jan 2), (i2, Jan 3)
    assert out.loc[0, "ui_impression_count_28d"] == 2
    assert out.loc[0, "user_click_count_28d"] == 3


def test_object_and_arrow_string_columns_give_the_same_features(events, items):
    from core.config.features import LabelSettings
    from features import impressions

    as_object = events.astype({c: object for c in ("user_id", "item_id", "event_type", "request_id", "device")})
    a, b = impressions(events, LabelSettings()), impressions(as_object, LabelSettings())
    pd.testing.assert_series_equal(a["grade"], b["grade"])
    fa = build_features(a, events, items=items, settings=FeatureSettings(), feature_set="ranker_core")
    fb = build_features(b, as_object, items=items, settings=FeatureSettings(), feature_set="ranker_core")
    pd.testing.assert_frame_equal(fa, fb, check_exact=True)
