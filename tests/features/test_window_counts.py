"""The window aggregates from per-day parts equal those the builder makes over the whole window."""

from __future__ import annotations

import numpy as np
import pytest

import features
from core.config.features import FeatureSettings, LabelSettings
from features.context import EXPOSURE
from features.partitioned import window_aggregates
from features.window import WindowCounts, day_parts, load_parts, save_parts, window_given
from tests.features.conftest import make_events

KEYS = {("past_rate", "click"), ("past_rate", "engage"), ("values", "position_weight")}


def _parts_by_day_groups(events, settings, groups: int):
    """Parts made from separate chunks of whole days (as day files on different workers would)."""
    day = events["ts"].dt.floor("D")
    days = np.array(sorted(day.unique()))
    parts = []
    for chunk in np.array_split(days, groups):
        parts += day_parts(events[day.isin(chunk)], settings)
    return parts


@pytest.mark.parametrize("groups", [1, 4])
def test_day_parts_give_the_window_aggregates(groups, tmp_path) -> None:
    settings = FeatureSettings()
    events = make_events(n_requests=400)
    imps = features.impressions(events, LabelSettings())
    per_query, per_event = window_aggregates(imps, events, KEYS, items=None, users=None, settings=settings)
    parts = _parts_by_day_groups(events, settings, groups)
    save_parts(parts, tmp_path / "parts")
    counts = WindowCounts(load_parts(tmp_path / "parts"), settings)
    given = window_given(counts, imps, events, KEYS)
    # The same from the files, each day's part read when a query falls on it.
    paths = []
    for i, chunk in enumerate(np.array_split(np.arange(len(parts)), 3)):
        paths.append(save_parts([parts[j] for j in chunk], tmp_path / f"block{i}"))
    lazy = window_given(WindowCounts.from_files(paths, settings), imps, events, KEYS)
    for key, value in given.items():
        assert np.array_equal(value, lazy[key]), key
    assert set(given) == set(per_query) | set(per_event)
    for key, value in {**per_query, **per_event}.items():
        assert value.dtype == given[key].dtype and np.array_equal(value, given[key]), key
    assert given[("values", "position_weight")].any() and len(set(given[("past_rate", "click")])) > 10
    # A subset of the events (a bucket's) gets the window's values for its own rows.
    rows = np.flatnonzero(events["user_id"].isin(["u1", "u2", "u3"]))
    mine = window_given(counts, imps.iloc[:5], events.iloc[rows], KEYS)
    assert np.array_equal(mine[("values", "position_weight")], per_event[("values", "position_weight")][rows])
    assert np.array_equal(mine[("mask", EXPOSURE)], per_event[("mask", EXPOSURE)][rows])


def test_missing_or_repeated_days_are_caught() -> None:
    settings = FeatureSettings()
    events = make_events(n_requests=200)
    imps = features.impressions(events, LabelSettings())
    parts = day_parts(events, settings)
    with pytest.raises(ValueError, match="overlap"):
        WindowCounts(parts + parts[:1], settings)
    whole = window_given(WindowCounts(parts, settings), imps, events, KEYS)
    gap = window_given(WindowCounts(parts[:3] + parts[4:], settings), imps, events, KEYS)  # a day lost
    assert not np.array_equal(whole[("past_rate", "click")], gap[("past_rate", "click")])
