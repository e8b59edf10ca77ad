"""The vectorised code agrees with a slow, obvious reference on the seeded fixture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config.features import FeatureSettings, LabelSettings
from features import build_features, impressions
from features.labels import event_grades

DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def labelled(events):
    return impressions(events, LabelSettings())


def test_labels_match_a_row_by_row_reference(events, labelled):
    settings = LabelSettings()
    graded = events.assign(grade=event_grades(events, settings))
    shown = graded[graded["event_type"] == "impression"].drop_duplicates(["user_id", "item_id", "request_id"])
    expected = {}
    for imp in shown.itertuples():
        same = graded[(graded["user_id"] == imp.user_id) & (graded["item_id"] == imp.item_id)
                      & (graded["request_id"] == imp.request_id) & (graded["event_type"] != "impression")
                      & (graded["ts"] >= imp.ts) & (graded["ts"] <= imp.ts + 24 * pd.Timedelta(hours=1))]
        expected[(imp.request_id, imp.item_id)] = max([0.0, *same["grade"].dropna()])
    got = dict(zip(zip(labelled["query_id"], labelled["item_id"], strict=True), labelled["grade"], strict=True))
    assert got == pytest.approx(expected)
    assert len(labelled) == len(expected)


@pytest.mark.parametrize("sample", range(3))
def test_features_match_a_row_by_row_reference(events, labelled, items, sample):
    rows = labelled.sample(25, random_state=sample)
    out = build_features(rows, events, items=items, settings=FeatureSettings())
    category = dict(zip(items["item_id"], items["category"], strict=True))
    for idx, imp in rows.iterrows():
        past = events[events["ts"] < imp.ts]
        mine = past[past["user_id"] == imp.user_id]
        week = mine[mine["ts"] >= imp.ts - 7 * DAY]
        assert out.loc[idx, "user_click_count_7d"] == (week["event_type"] == "click").sum()
        assert out.loc[idx, "user_event_count_7d"] == len(week)
        on_item = past[past["item_id"] == imp.item_id]
        assert out.loc[idx, "item_impression_count_28d"] == (
            (on_item["event_type"] == "impression") & (on_item["ts"] >= imp.ts - 28 * DAY)).sum()
        same_cat = mine[mine["item_id"].map(category) == category[imp.item_id]]
        assert out.loc[idx, "uc_impression_count_28d"] == (
            (same_cat["event_type"] == "impression") & (same_cat["ts"] >= imp.ts - 28 * DAY)).sum()
        last = mine["ts"].max()
        expected = (imp.ts - last).total_seconds() if len(mine) else np.nan
        np.testing.assert_allclose(out.loc[idx, "user_secs_since_last_event"], expected, rtol=1e-6)
