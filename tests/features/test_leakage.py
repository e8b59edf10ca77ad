"""Point-in-time correctness: events at or after t never reach a feature of an impression at t."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.config.features import FeatureSettings, LabelSettings
from features import build_features, impressions

ROTATE = {"impression": "click", "click": "save", "save": "dismiss", "dismiss": "view", "view": "impression"}


def _future(events: pd.DataFrame, cut: pd.Timestamp, at_cut: pd.DataFrame) -> pd.DataFrame:
    """Alter every event after ``cut``, add copies of past events after it, and add events exactly at it."""
    altered = events.copy()
    after = altered["ts"] > cut
    altered.loc[after, "event_type"] = altered.loc[after, "event_type"].map(ROTATE).fillna("share")
    altered.loc[after, "value"] = 999.0
    altered.loc[after, "ts"] = altered.loc[after, "ts"] - pd.Timedelta(seconds=1)  # still after: ts are whole seconds
    copies = events[events["ts"] <= cut].copy()
    copies["ts"] = cut + pd.to_timedelta(np.arange(len(copies)) % 5000 + 1, unit="s")
    copies["event_id"] = "copy-" + copies["event_id"]
    clicks = at_cut.assign(event_type="click", event_id=[f"at-cut-{i}" for i in range(len(at_cut))], value=np.nan)
    return pd.concat([altered, copies, clicks[events.columns]], ignore_index=True)


def test_features_at_or_before_t_ignore_the_future(events, items, users):
    labelled = impressions(events, LabelSettings())
    cut = labelled["ts"].sort_values().iloc[len(labelled) // 2]
    at_cut = events[(events["ts"] == cut) & (events["event_type"] == "impression")]
    assert len(at_cut) > 0
    base = build_features(labelled, events, items=items, users=users, settings=FeatureSettings())
    future = _future(events, cut, at_cut)
    rebuilt = build_features(labelled, future, items=items, users=users, settings=FeatureSettings())
    past = (labelled["ts"] <= cut).to_numpy()
    pd.testing.assert_frame_equal(rebuilt[past], base[past], check_exact=True)
    assert not rebuilt[~past].equals(base[~past]), "the altered future should change later impressions"


def test_event_exactly_at_t_is_invisible(make_frame):
    events = make_frame([
        ("u1", "i1", "impression", "2026-01-01T00:00:00"),
        ("u1", "i1", "click", "2026-01-02T00:00:00"),
        ("u1", "i2", "click", "2026-01-02T00:00:00.000500"),
    ])
    query = make_frame([("u1", "i1", "impression", "2026-01-02T00:00:00")])
    out = build_features(query, events, settings=FeatureSettings())
    assert out.loc[0, "user_click_count_1d"] == 0
    assert out.loc[0, "ui_engage_count_all"] == 0
    later = make_frame([("u1", "i1", "impression", "2026-01-02T00:00:00.001")])
    assert build_features(later, events, settings=FeatureSettings()).loc[0, "user_click_count_1d"] == 2
