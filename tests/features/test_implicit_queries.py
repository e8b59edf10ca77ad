"""Implicit-feedback queries for logs without slates: engaged items plus sampled candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config.features import FeatureSettings, ImplicitQuerySettings, LabelSettings
from features import build_features, implicit_queries, ranking_queries
from features.implicit import IMPLICIT, LOGGED, choose_protocol, logged_query_count

from .conftest import make_events


def _no_slates(events: pd.DataFrame) -> pd.DataFrame:
    """The same log as a source without impressions would hold it: no impressions, request ids or positions."""
    kept = events[events["event_type"] != "impression"]
    return kept.drop(columns=["request_id", "position", "propensity"]).reset_index(drop=True)


def _labels(**implicit) -> LabelSettings:
    return LabelSettings(implicit=ImplicitQuerySettings(**implicit))


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return _no_slates(make_events(n_requests=400))


def test_logged_query_count_falls_back_per_impression(events):
    """Impressions without a request count by (user, session), without a session by (user, day),
    as labels' query ids do; a request id spelled like a fallback id counts once."""
    from features.labels import _fallback_query

    mixed = events.copy()
    rng = np.random.default_rng(8)
    shown = (mixed["event_type"] == "impression").to_numpy()
    no_request = shown & (rng.random(len(mixed)) < 0.4)
    mixed["request_id"] = mixed["request_id"].astype(object).where(~no_request, None)
    mixed["session_id"] = mixed["session_id"].astype(object).where(~(no_request & (rng.random(len(mixed)) < 0.5)), None)
    first = np.flatnonzero(no_request & mixed["session_id"].notna().to_numpy())[0]
    mixed.loc[mixed.index[np.flatnonzero(shown & ~no_request)[0]], "request_id"] = (
        f"{mixed['user_id'].iloc[first]}|{mixed['session_id'].iloc[first]}")
    expected = _fallback_query(mixed[shown]).nunique()
    assert logged_query_count(mixed) == expected
    # the pipeline reads the ids as categoricals: counted the same
    assert logged_query_count(mixed.astype({c: "category" for c in ("user_id", "request_id", "session_id")})) == expected
    assert expected > events["request_id"].nunique()  # the fallback ids are counted, more than the requests
    assert logged_query_count(mixed.drop(columns=["request_id", "session_id"])) == \
        _fallback_query(mixed[shown].assign(request_id=None, session_id=None)).nunique()


def test_protocol_follows_the_log_and_the_settings(events, log):
    assert logged_query_count(events) == events["request_id"].nunique() == 300
    assert choose_protocol(events, ImplicitQuerySettings()).name == LOGGED
    assert logged_query_count(log) == 0 and choose_protocol(log, ImplicitQuerySettings()).name == IMPLICIT
    too_few = choose_protocol(events, ImplicitQuerySettings(min_logged_queries=301))
    assert too_few.name == IMPLICIT and "300 logged slates < min_logged_queries 301" in too_few.reason
    assert choose_protocol(log, ImplicitQuerySettings(mode="logged")).name == LOGGED
    forced = choose_protocol(events, ImplicitQuerySettings(mode="implicit"))
    assert forced.name == IMPLICIT and forced.settings["popular_negatives"] == 10  # what was used is recorded


def test_a_slate_log_keeps_its_logged_impressions(events):
    from features import impressions

    rows, protocol = ranking_queries(events, LabelSettings())
    assert protocol.name == LOGGED
    pd.testing.assert_frame_equal(rows, impressions(events, LabelSettings()))


def test_engaged_items_are_graded_and_sampled_candidates_are_zero(make_frame):
    rows = [("u1", f"old{i}", "view", "2026-01-01T08:00:00") for i in range(30)]
    rows += [("u1", "x", "purchase", "2026-01-03T10:00:05"), ("u1", "x", "view", "2026-01-03T10:00:00"),
             ("u1", "y", "view", "2026-01-03T11:00:00"), ("u1", "z", "dismiss", "2026-01-03T12:00:00")]
    events = make_frame(rows).assign(value=np.nan)
    out = implicit_queries(events, _labels(query_by="day", popular_negatives=5, uniform_negatives=5))
    query = out[out["query_id"] == "u1|d:2026-01-03"]
    grades = dict(zip(query["item_id"], query["grade"], strict=True))
    assert (grades["x"], grades["y"], grades["z"]) == (1.0, 0.1, 0.0)  # purchase, a view of 0 s, dismiss
    sampled = query[~query["item_id"].isin(["x", "y", "z"])]
    assert len(sampled) == 10 and sampled["item_id"].str.startswith("old").all() and (sampled["label"] == 0).all()
    assert query["ts"].nunique() == 1 and query["ts"].iloc[0] == pd.Timestamp("2026-01-03T10:00:00", tz="UTC")
    assert query["position"].isna().all() and query["propensity"].isna().all()
    first_day = out[out["query_id"] == "u1|d:2026-01-01"]
    assert len(first_day) == 30  # nothing was known before the window's first day: no candidates


def test_candidates_exclude_the_query_s_items_and_respect_the_counts(log):
    settings = _labels(popular_negatives=4, uniform_negatives=3)
    out = implicit_queries(log, settings)
    touched = log.assign(query=log["user_id"] + "|s:" + log["session_id"])
    engaged = set(zip(touched["query"], touched["item_id"], strict=True))
    per_query = out.groupby("query_id").size()
    n_engaged = touched.groupby("query")["item_id"].nunique()
    sampled = per_query - n_engaged.reindex(per_query.index)
    assert sampled.max() == 7 and sampled.min() >= 0 and (sampled == 7).mean() > 0.5
    zero = out[out["label"] == 0]
    assert not out.duplicated(["query_id", "item_id"]).any()
    extra = [(q, i) for q, i in zip(zero["query_id"], zero["item_id"], strict=True) if (q, i) not in engaged]
    assert len(extra) == int(sampled.sum())
    assert out["query_id"].nunique() == touched["query"].nunique()


def test_candidates_come_from_items_seen_before_the_query_s_day(log):
    out = implicit_queries(log, _labels(query_by="day"))
    day = out["ts"].dt.floor("D")
    first_seen = log.groupby("item_id")["ts"].min().dt.floor("D")
    touched = set(zip(log["user_id"] + "|d:" + log["ts"].dt.strftime("%Y-%m-%d"), log["item_id"], strict=True))
    sampled = np.array([(q, i) not in touched for q, i in zip(out["query_id"], out["item_id"], strict=True)])
    assert sampled.sum() > 1000
    assert (out.loc[sampled, "item_id"].map(first_seen) < day[sampled]).all()


def test_popularity_weighted_draws_favour_popular_items(make_frame):
    rows = [(f"u{i}", "hit", "view", "2026-01-01T08:00:00") for i in range(200)]
    rows += [(f"u{i}", f"rare{i}", "view", "2026-01-01T09:00:00") for i in range(20)]
    rows += [(f"v{i}", "new", "click", "2026-01-02T10:00:00") for i in range(300)]
    events = make_frame(rows).assign(value=np.nan)
    day2 = lambda out: out[out["ts"].dt.day == 2]  # noqa: E731
    popular = day2(implicit_queries(events, _labels(query_by="day", popular_negatives=1, uniform_negatives=0)))
    uniform = day2(implicit_queries(events, _labels(query_by="day", popular_negatives=0, uniform_negatives=1)))
    share = lambda out: float((out.loc[out["item_id"] != "new", "item_id"] == "hit").mean())  # noqa: E731
    assert share(popular) > 0.85  # 200 of 220 past events
    assert share(uniform) < 0.15  # 1 of 21 items


def test_draws_are_seeded_and_do_not_depend_on_later_events(log):
    settings = _labels(query_by="day")
    a, b = implicit_queries(log, settings), implicit_queries(log, settings)
    pd.testing.assert_frame_equal(a, b)
    other = implicit_queries(log, _labels(query_by="day", seed=1))
    assert not other["item_id"].equals(a["item_id"])
    cut = pd.Timestamp("2026-03-20", tz="UTC")
    early = implicit_queries(log[log["ts"] < cut], settings)
    pd.testing.assert_frame_equal(early, a[a["ts"] < cut].reset_index(drop=True))
    shuffled = implicit_queries(log.sample(frac=1.0, random_state=3), settings)
    pd.testing.assert_frame_equal(shuffled, a)


def test_sampled_candidates_see_only_events_before_the_query(log, items, users):
    settings = _labels(query_by="day")
    rows = implicit_queries(log, settings)
    cut = rows["ts"].sort_values().iloc[len(rows) // 2]
    base = build_features(rows, log, items=items, users=users, settings=FeatureSettings())
    after = log["ts"] >= cut
    future = pd.concat([log[~after], log[after].assign(event_type="click", value=999.0),
                        log[~after].assign(ts=cut + pd.Timedelta(hours=1), event_type="save")], ignore_index=True)
    rebuilt = build_features(rows, future, items=items, users=users, settings=FeatureSettings())
    past = (rows["ts"] <= cut).to_numpy()
    sampled = (rows["label"] == 0).to_numpy()
    assert (past & sampled).sum() > 500
    pd.testing.assert_frame_equal(rebuilt[past], base[past], check_exact=True)
    assert not rebuilt[~past].equals(base[~past]), "the altered future should change later queries"


def test_item_attributes_and_context_do_not_tell_candidates_apart(log):
    out = implicit_queries(log.assign(category=log["item_id"].str[-1:]), _labels())
    assert out.groupby("item_id")["category"].nunique().max() == 1
    assert out["category"].notna().all()  # sampled items get the same catalogue value as engaged ones
    assert out.groupby("query_id")["device"].nunique(dropna=False).max() == 1


def test_a_short_history_is_noted_with_the_protocol(log):
    _, short = ranking_queries(log, LabelSettings())
    assert "holds 39 days of history" in short.note and "HISTORY_DAYS=91" in short.note
    _, enough = ranking_queries(log, _labels(advised_history_days=30))
    assert enough.note == "" and enough.as_dict()["note"] == ""


def test_rows_are_in_query_order_for_text_or_categorical_ids(log):
    """The stage reads ids and few-valued columns as categoricals (``stages.build_dataset``): the same rows, in
    (query start, query id, item id) order; events without a user or an item name no query."""
    settings = _labels(popular_negatives=4, uniform_negatives=3)
    at = log["ts"].iloc[len(log) // 2]  # two queries starting together, the later id logged first
    log = pd.concat([log, log.head(2).assign(user_id=["zz-tie", "aa-tie"], session_id=["t1", "t2"], ts=at)],
                    ignore_index=True)
    out = implicit_queries(log, settings)
    assert {"zz-tie|s:t1", "aa-tie|s:t2"} <= set(out["query_id"])
    resorted = out.sort_values(["ts", "query_id", "item_id"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(out, resorted)
    as_codes = log.astype({c: "category" for c in ("user_id", "item_id", "session_id", "device", "event_type")})
    text = {"user_id": str, "item_id": str, "device": str}
    pd.testing.assert_frame_equal(implicit_queries(as_codes, settings).astype(text), out.astype(text))
    orphan = pd.concat([log, log.head(3).assign(user_id=None), log.tail(2).assign(item_id=None)], ignore_index=True)
    pd.testing.assert_frame_equal(implicit_queries(orphan, settings), out)


def test_only_the_columns_asked_for_are_made(log, events):
    """``columns`` (the weekly stage asks for the split's keys and the features' query columns): the same rows and
    values as the whole frame's columns, in ``OUTPUT_COLUMNS``' order, for implicit queries (text or categorical
    ids, an empty log) and logged slates; a column that is not a query column is refused."""
    from features.labels import OUTPUT_COLUMNS

    settings = _labels(popular_negatives=4, uniform_negatives=3)
    asked = ["label", "ts", "query_id", "position", "device", "item_id"]
    in_order = [c for c in OUTPUT_COLUMNS if c in asked]
    for categorical in (False, True):
        whole = implicit_queries(log, settings, categorical_ids=categorical)
        some = implicit_queries(log, settings, categorical_ids=categorical, columns=asked)
        assert list(some.columns) == in_order != asked
        pd.testing.assert_frame_equal(some, whole[in_order])
        unset = implicit_queries(log, settings, categorical_ids=categorical, columns=asked, null_columns=False)
        assert "position" in some and "position" not in unset
        pd.testing.assert_frame_equal(unset, whole[[c for c in in_order if c != "position"]])
        assert whole[["position", "propensity", "policy_version"]].isna().all().all()  # what is left out holds nothing
    empty = log.iloc[:0]
    pd.testing.assert_frame_equal(implicit_queries(empty, settings, columns=asked), implicit_queries(empty, settings)[in_order])
    logged, protocol = ranking_queries(events, settings, columns=asked)
    assert protocol.name == LOGGED
    pd.testing.assert_frame_equal(logged, ranking_queries(events, settings)[0][in_order])
    kept, _ = ranking_queries(events, settings, columns=asked, null_columns=False)  # logged slates have positions
    pd.testing.assert_frame_equal(kept, logged)
    with pytest.raises(ValueError, match=r"no query column\(s\) \['score'\]"):
        implicit_queries(log, settings, columns=["label", "score"])


@pytest.mark.parametrize("buckets", [2, 7])
def test_a_bucket_of_users_with_the_window_pool_gives_its_users_window_rows(log, buckets):
    """Each bucket of users' queries, made from its own events and the window's pool (items, per-day counts, the
    items' first attributes), are the window's rows of those users, in the window's order: popularity and the
    candidate pool count every user's events, including events of days before the bucket's first."""
    from features.implicit import implicit_pool
    from features.partitioned import key_buckets

    settings = _labels(popular_negatives=4, uniform_negatives=3)
    log = log.assign(category=log["item_id"].str[-1:])
    # an item only one late user touches: in a bucket's pool only through the window's
    log = pd.concat([log, log.tail(1).assign(user_id="late", item_id="only-late", category="z")], ignore_index=True)
    as_codes = log.astype({c: "category" for c in ("user_id", "item_id", "session_id", "device", "category")})
    for events, categorical in ((log, False), (as_codes, True)):
        whole = implicit_queries(events, settings, categorical_ids=categorical)
        pool = implicit_pool(events)
        bucket = key_buckets(events["user_id"], buckets)
        parts = [implicit_queries(events[bucket == b], settings, categorical_ids=categorical, pool=pool)
                 for b in range(buckets)]
        assert all(len(p) for p in parts) and sum(map(len, parts)) == len(whole)
        text = {c: "string" for c in ("query_id", "user_id", "item_id")}
        joined = pd.concat([p.astype(text) for p in parts], ignore_index=True)
        joined = joined.sort_values(["ts", "query_id", "item_id"], kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(joined, whole.astype(text))
        if categorical:  # the item ids' categories are the window's in every bucket
            assert all(p["item_id"].cat.categories.equals(whole["item_id"].cat.categories) for p in parts)
        # the pool matters: a bucket's own pool draws other candidates
        alone = implicit_queries(events[bucket == 0], settings, categorical_ids=categorical)
        assert not alone.astype(text).reset_index(drop=True).equals(parts[0].astype(text).reset_index(drop=True))
    with pytest.raises(ValueError, match="1 event.* an item the window's pool does not hold"):
        implicit_queries(log.tail(1).assign(item_id="unknown"), settings, pool=implicit_pool(log))


@pytest.mark.parametrize("span_days", [0, 40, 50_000])
def test_the_pool_holds_each_utc_days_item_codes_in_the_windows_order(span_days):
    """ImplicitPool.by_day: per UTC day holding events (days since 1970, before it too), its events' item codes in
    the window's order, as int32; first_day the earliest. Days are counted by a radix sort of their offsets (a
    span past int16's range takes int64): the same as grouping the events by day by hand."""
    from features.implicit import implicit_pool

    rng = np.random.default_rng(span_days)
    n = 3_000
    day_us = 86_400 * 1_000_000
    us = rng.integers(-3 * day_us, (span_days + 1) * day_us - 3 * day_us, n)
    if span_days:
        us[:2] = [-3 * day_us, (span_days - 3) * day_us + 5]  # both ends of the span present
    events = pd.DataFrame({"user_id": [f"u{k}" for k in rng.integers(0, 50, n)],
                           "item_id": [f"i{k:03d}" for k in rng.integers(0, 200, n)],
                           "ts": pd.to_datetime(us, unit="us", utc=True)})
    pool = implicit_pool(events)
    day = us // day_us
    assert pool.first_day == int(day.min())
    code = pd.Index(pool.items).get_indexer(events["item_id"])
    expected = {int(d): code[day == d] for d in np.unique(day)}
    assert list(pool.by_day) == sorted(expected) == list(expected)
    for d, codes in expected.items():
        assert pool.by_day[d].dtype == np.int32
        np.testing.assert_array_equal(pool.by_day[d], codes)
    empty = implicit_pool(events.iloc[:0])
    assert empty.by_day == {} and empty.n_items == 0
