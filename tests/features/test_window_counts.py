"""The window aggregates from per-day parts equal those the builder makes over the whole window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features
from core.config.features import FeatureSettings, LabelSettings
from features.context import EXPOSURE
from features.window import WindowCounts, day_parts, load_parts, save_parts, window_given
from tests.features.conftest import make_events

KEYS = {("past_rate", "click"), ("past_rate", "engage"), ("values", "position_weight")}


def window_aggregates(impressions, events, keys, *, items, users, settings):
    """The reference: the window-wide aggregates ``keys`` names (and the exposure mask) from a builder over all of
    ``events`` (per query, per event)."""
    from features import defs_activity
    from features.build import KEPT_COUNTS
    from features.context import BuildContext

    ctx = BuildContext(impressions, events, items, users, settings, kept_counts=KEPT_COUNTS)
    per_query, per_event = {}, {("mask", EXPOSURE): ctx.mask(EXPOSURE)}
    for key in sorted(keys, key=repr):
        if key[0] == "past_rate":
            per_query[key] = defs_activity.past_rate(ctx, key[1])
        elif key == ("values", "position_weight"):
            defs_activity.position_weights(ctx)
            per_event[key] = ctx.values("position_weight")
    return per_query, per_event


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


def test_inferred_exposures_give_the_builders_aggregates(tmp_path) -> None:
    """A window without logged impressions: the exposures inferred from sessions over the whole window
    (``window_exposures``) give the day parts the builder's past rates and position weights, and a bucket of
    users infers its own events' part of the mask (the stage hands each bucket that part)."""
    from features.context import _ms, column_or_null, inferred_exposures
    from features.partitioned import key_buckets, window_exposures

    settings = FeatureSettings()
    events = make_events(n_requests=400)
    imps = features.impressions(events, LabelSettings())
    events = events[events["event_type"] != "impression"].reset_index(drop=True)
    events.loc[events.index[::5], "session_id"] = None  # some events without a session: their UTC day
    per_query, per_event = window_aggregates(imps, events, KEYS, items=None, users=None, settings=settings)
    exposures = window_exposures(events)
    assert 0 < exposures.sum() < len(exposures)
    counts = WindowCounts(day_parts(events, settings, exposures), settings)
    given = window_given(counts, imps, events, KEYS, exposures)
    assert set(given) == set(per_query) | set(per_event)
    for key, value in {**per_query, **per_event}.items():
        assert value.dtype == given[key].dtype and np.array_equal(value, given[key]), key
    assert len(set(given[("past_rate", "click")])) > 10
    logged = window_given(WindowCounts(day_parts(events, settings), settings), imps, events, KEYS)
    assert not np.array_equal(logged[("past_rate", "click")], given[("past_rate", "click")])  # the mask is read
    for key in ("user_id", "item_id"):
        bucket = key_buckets(events[key], 3)
        for b in range(3):
            own = events[bucket == b]
            mine = inferred_exposures(pd.factorize(own["user_id"])[0], pd.factorize(own["item_id"])[0],
                                      column_or_null(own, "session_id"), _ms(own["ts"]))
            assert np.array_equal(mine, exposures[bucket == b]), (key, b)


def test_inferred_exposures_are_each_groups_first_event() -> None:
    """``inferred_exposures`` (one stable sort) marks exactly the earliest event of each (user, item, session or
    UTC day), of equal times the first in order: the rows a groupby over those keys picks."""
    from features.context import inferred_exposures
    from features.timeline import DAY_MS

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        user, item = rng.integers(-1, 5, n), rng.integers(-1, 6, n)  # -1: a missing id
        ms = rng.integers(0, 3 * DAY_MS, n) // rng.choice([1, 3_600_000]) * 1  # some trials with many equal times
        session = pd.Series(np.where(rng.random(n) < 0.3, None, rng.choice(["a", "b", "c"], n)), dtype=object)
        day = np.where(session.isna(), ms // DAY_MS, -1)
        frame = pd.DataFrame({"u": user, "i": item, "s": session.fillna("").to_numpy(), "d": day, "ms": ms,
                              "row": np.arange(n)})
        expected = np.zeros(n, dtype=bool)
        expected[frame.sort_values(["ms", "row"]).groupby(["u", "i", "s", "d"]).head(1)["row"].to_numpy()] = True
        assert np.array_equal(inferred_exposures(user, item, session, ms), expected), trial


@pytest.mark.parametrize("dtype", ["category", "string", object])
def test_selections_of_categorical_event_types_are_those_of_their_text(dtype) -> None:
    """The stage reads event types as categoricals: each row's answer is its category's (a null: no selection),
    the same as the text's, and so are the window parts made from them."""
    from features.window import selections

    settings = FeatureSettings()
    rng = np.random.default_rng(3)
    kinds = np.array(["impression", "click", "view", "purchase", "save", "dwell", None], dtype=object)
    text = pd.Series(kinds[rng.integers(0, len(kinds), 500)], dtype=object)
    typed = text.astype(dtype)
    reference = selections(text, settings)
    got = selections(typed, settings)
    assert set(got) == set(reference)
    for name in reference:
        assert got[name].dtype == bool
        np.testing.assert_array_equal(got[name], reference[name])
    assert reference["click"].sum() > 0 and (~reference["click"]).sum() > 0  # both answers are checked
    # Categories no row holds, and a column of nulls only
    wider = pd.Series(pd.Categorical(text, categories=["zzz", *sorted(set(kinds) - {None})]))
    np.testing.assert_array_equal(selections(wider, settings)["impression"], reference["impression"])
    empty = selections(pd.Series(pd.Categorical([None, None])), settings)
    assert all(not v.any() and len(v) == 2 for v in empty.values())
    events = make_events(seed=5, n_users=8, n_items=6, n_requests=80)
    for a, b in zip(day_parts(events, settings), day_parts(events.assign(event_type=events["event_type"].astype("category")),
                                                           settings), strict=True):
        assert a.day == b.day
        for name in a.series:
            np.testing.assert_array_equal(a.series[name], b.series[name])
            np.testing.assert_array_equal(a.counts[name], b.counts[name])
