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


# --- features by key bucket --------------------------------------------------------------------------------------

def _all_request_features() -> tuple[str, ...]:
    from features.registry import REGISTRY

    return tuple(n for n, s in REGISTRY.items() if s.known == "request")


def _every_request_feature() -> tuple[str, ...]:
    from features.registry import REGISTRY

    return tuple(n for n, s in REGISTRY.items() if s.known == "request")


def _compare(imps, events, buckets, tmp_path, **tables) -> tuple[list[str], dict]:
    from features.build import iter_columns
    from features.partitioned import iter_keyed_columns

    names, settings = _every_request_feature(), FeatureSettings()
    whole = dict(iter_columns(imps, events, names, settings=settings, **tables))
    keyed = dict(iter_keyed_columns(imps.copy(), events.copy(), names, settings=settings, buckets=buckets,
                                    scratch=tmp_path, **tables))
    assert sorted(keyed) == sorted(names)
    assert list(tmp_path.iterdir()) == []  # the buckets' folder is gone
    differing = [n for n in names if whole[n].dtype != keyed[n].dtype
                 or not np.array_equal(whole[n].astype(np.float64), keyed[n].astype(np.float64), equal_nan=True)]
    return differing, whole


@pytest.mark.parametrize("buckets", [2, 7, 40])
def test_key_buckets_give_the_whole_build_values(buckets, tmp_path) -> None:
    """Every registered request-time feature, users and items tables given (so traits, embeddings, categories,
    item ages are read), in 2, 7 and 40 buckets of users and of items (40: some buckets empty): the values of
    the one-piece build."""
    from tests.features.conftest import make_events, make_items, make_users

    events = make_events(n_users=30, n_items=25, n_requests=400)
    imps = features.impressions(events, LabelSettings())
    differing, whole = _compare(imps, events, buckets, tmp_path, items=make_items(), users=make_users())
    assert differing == []
    assert np.nanmax(whole["user_click_rate_28d"]) > 0 and np.nanmax(whole["item_pbc_click_ratio_28d"]) != 1.0


def test_key_buckets_without_logged_impressions(tmp_path) -> None:
    """Exposures inferred from sessions (no impression events), no tables: still the same values."""
    from tests.features.conftest import make_events

    events = make_events(seed=11, n_requests=300)
    imps = features.impressions(events, LabelSettings())  # the queries: the logged slates
    events = events[events["event_type"] != "impression"].reset_index(drop=True)
    differing, _ = _compare(imps, events, 3, tmp_path)
    assert differing == []


def test_the_window_aggregates_are_needed(tmp_path) -> None:
    """The check above can fail: buckets that make the global past rate and the position curve from their own
    events, or co-occurrence from one bucket's users, give other values."""
    from features.build import iter_columns
    from features.partitioned import ACROSS_KEYS, key_buckets
    from tests.features.conftest import make_events

    events = make_events(n_requests=400)
    imps = features.impressions(events, LabelSettings())
    names, settings = ("user_click_rate_28d", "item_pbc_click_ratio_28d", *sorted(ACROSS_KEYS)), FeatureSettings()
    whole = dict(iter_columns(imps, events, names, settings=settings))
    naive = {n: np.empty(len(imps)) for n in names}
    for key, group in (("user_id", names[:1] + names[2:]), ("item_id", names[1:2])):
        q, e = key_buckets(imps[key], 3), key_buckets(events[key], 3)
        for b in range(3):
            rows = np.flatnonzero(q == b)
            for n, v in iter_columns(imps.iloc[rows], events[e == b], group, settings=settings):
                naive[n][rows] = v
    assert all(not np.array_equal(whole[n].astype(np.float64), naive[n], equal_nan=True) for n in names)



@pytest.mark.parametrize("dense", [True, False])
def test_cooccurrence_by_user_bucket_is_the_whole_windows_to_the_last_bit(dense, tmp_path, monkeypatch) -> None:
    """A log without slates (implicit queries, ``ranker_implicit``'s co-occurrence): each bucket of users scores
    its queries with the window's saved S of each day (dense, or sparse rows for a large catalogue) and gets the
    one-piece build's values bit for bit; the catalogue lists items no event names."""
    from features import defs_collaborative
    from features.build import iter_columns
    from features.implicit import implicit_queries
    from features.partitioned import ACROSS_KEYS, iter_keyed_columns
    from tests.features.conftest import make_events, make_items

    if not dense:
        monkeypatch.setattr(defs_collaborative, "DENSE_ITEMS", 0)
    events = make_events(seed=12, n_users=40, n_items=20, n_requests=500)
    events = events[events["event_type"] != "impression"].reset_index(drop=True)
    queries = implicit_queries(events, LabelSettings(), categorical_ids=True)
    items = make_items()
    assert set(items["item_id"]) - set(events["item_id"])  # items without an event
    names, settings = (*sorted(ACROSS_KEYS), "ctx_hour", "user_click_rate_28d"), FeatureSettings()
    whole = dict(iter_columns(queries, events, names, settings=settings, items=items))
    keyed = dict(iter_keyed_columns(queries.copy(), events.copy(), names, settings=settings, buckets=5,
                                    scratch=tmp_path, items=items))
    for name in names:
        assert whole[name].dtype == keyed[name].dtype and np.array_equal(whole[name], keyed[name], equal_nan=True), name
    assert (whole["ui_cooccur_sum"] > 0).mean() > 0.3 and len(np.unique(whole["ui_cooccur_max"])) > 50
    assert list(tmp_path.iterdir()) == []  # the S files went with the buckets' folder
