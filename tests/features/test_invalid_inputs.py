"""build_features refuses bad inputs with messages naming what was expected and found."""

from __future__ import annotations

import pandas as pd
import pytest

from core.config.features import FeatureSettings
from features import build_features


@pytest.fixture()
def small(make_frame):
    events = make_frame([("u1", "i1", "impression", "2026-01-01"), ("u1", "i1", "click", "2026-01-01T00:01")])
    return events.iloc[:1], events


def test_wrong_types(small):
    queries, events = small
    with pytest.raises(TypeError, match="impressions must be a pandas DataFrame, got list"):
        build_features([], events, settings=FeatureSettings())
    with pytest.raises(TypeError, match="events.ts must be tz-aware"):
        build_features(queries, events.assign(ts=pd.Timestamp("2026-01-01")), settings=FeatureSettings())


def test_missing_columns_are_all_named(small):
    queries, events = small
    with pytest.raises(ValueError, match=r"events lack required column\(s\) \['item_id', 'event_type'\]"):
        build_features(queries, events[["user_id", "ts"]], settings=FeatureSettings())


def test_unknown_feature_set(small):
    queries, events = small
    with pytest.raises(KeyError, match="available"):
        build_features(queries, events, settings=FeatureSettings(), feature_set="nope")


def test_windows_beyond_the_configured_ones_are_refused(small):
    queries, events = small
    with pytest.raises(ValueError, match=r"user_event_count_28d.*\[28\]"):
        build_features(queries, events, settings=FeatureSettings(windows_days=(1, 7)))
