"""Features per day partition equal the whole-window build for the same impressions (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

import features
from core.config.features import FeatureSettings, LabelSettings
from features.partitioned import build_partition, day_starts, query_days, split_by_query_day


def _events() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 3000
    ts = pd.Timestamp("2026-03-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 10 * 86400, n)), unit="s")
    request = [f"r{i // 5}" for i in range(n)]
    kind = rng.choice(["impression", "impression", "impression", "click", "save", "view"], n)
    return pd.DataFrame({
        "user_id": [f"u{(i // 5) % 40}" for i in range(n)], "item_id": [f"i{(i * 7) % 30}" for i in range(n)],
        "event_type": kind, "ts": ts, "request_id": request, "position": rng.integers(0, 5, n).astype(float),
        "value": np.where(kind == "view", rng.random(n) * 60, np.nan),
    })


def test_day_starts_cover_the_window() -> None:
    days = day_starts(datetime(2026, 3, 1, 6, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))
    assert days == [datetime(2026, 3, d, tzinfo=UTC) for d in (1, 2, 3)]
    with pytest.raises(ValueError, match="tz-aware"):
        day_starts(datetime(2026, 3, 1), datetime(2026, 3, 2))
    with pytest.raises(ValueError, match="start < end"):
        day_starts(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))


def test_a_query_lives_in_the_day_of_its_first_impression() -> None:
    imps = pd.DataFrame({"query_id": ["a", "a", "b"],
                         "ts": pd.to_datetime(["2026-03-01 23:59", "2026-03-02 00:01", "2026-03-02 10:00"], utc=True)})
    assert [str(d) for d in query_days(imps)] == ["2026-03-01", "2026-03-01", "2026-03-02"]
    parts = split_by_query_day(imps)
    assert [len(p) for p in parts.values()] == [2, 1]


def test_partitions_give_the_whole_build_values() -> None:
    events = _events()
    settings = FeatureSettings()
    imps = features.impressions(events, LabelSettings())
    whole = pd.concat([imps[["query_id", "item_id"]], features.build_features(imps, events, settings=settings)], axis=1)
    day = events["ts"].dt.floor("D")
    parts = []
    for part in split_by_query_day(imps).values():
        before = events[day <= part["ts"].max().floor("D")]  # every day up to its latest impression's
        parts.append(build_partition(part, before, items=None, users=None, settings=settings))
    combined = pd.concat(parts, ignore_index=True)
    assert len(combined) == len(whole) and len(parts) >= 9
    merged = whole.merge(combined, on=["query_id", "item_id"], suffixes=("_w", "_p"), validate="one_to_one")
    names = features.get_feature_set(settings.feature_set).features
    differing = [n for n in names if not np.array_equal(merged[f"{n}_w"].to_numpy(np.float64),
                                                        merged[f"{n}_p"].to_numpy(np.float64), equal_nan=True)]
    assert differing == []


def test_a_partition_without_its_history_differs() -> None:
    """The check above can fail: dropping the earlier days changes history features."""
    events = _events()
    settings = FeatureSettings()
    imps = features.impressions(events, LabelSettings())
    last_day, part = list(split_by_query_day(imps).items())[-1]
    alone = events[events["ts"].dt.floor("D") == pd.Timestamp(last_day, tz="UTC")]
    full = build_partition(part, events, items=None, users=None, settings=settings)
    cut = build_partition(part, alone, items=None, users=None, settings=settings)
    assert not np.array_equal(full["user_event_count_7d"].to_numpy(), cut["user_event_count_7d"].to_numpy())
