"""Graded labels: the grade table, view scaling, attribution horizon, fallback query grouping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config.features import LabelSettings
from features import impressions
from features.labels import OUTPUT_COLUMNS

COLUMNS = ("user_id", "item_id", "event_type", "ts", "request_id", "position", "value")


def _slate(make_frame, responses: list[tuple[str, str, float]], shown_at: str = "2026-01-01T00:00:00"):
    """One impression per response type (item = the response type), each followed by its response."""
    rows = []
    for pos, (etype, at, value) in enumerate(responses):
        rows.append(("u1", f"{etype}{pos}", "impression", shown_at, "r1", pos, np.nan))
        rows.append(("u1", f"{etype}{pos}", etype, at, "r1", pos, value))
    return make_frame(rows, COLUMNS)


def _grades(out: pd.DataFrame) -> dict[str, float]:
    return dict(zip(out["item_id"], out["grade"], strict=True))


def test_grade_table_order(make_frame):
    order = ["implement", "save", "share", "click", "view", "dismiss"]
    at = "2026-01-01T00:05:00"
    out = impressions(_slate(make_frame, [(e, at, 0.0 if e == "view" else np.nan) for e in order]), LabelSettings())
    grades = [_grades(out)[f"{e}{i}"] for i, e in enumerate(order)]
    assert grades == [1.0, 0.8, 0.6, 0.4, 0.1, 0.0]
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert out["label"].tolist() == [10, 8, 6, 4, 1, 0]
    assert (out["query_id"] == "r1").all()


def test_best_response_wins_and_ratings(make_frame):
    events = _slate(make_frame, [("click", "2026-01-01T00:01:00", np.nan), ("rating", "2026-01-01T00:02:00", 4.0)])
    extra = make_frame([("u1", "click0", "save", "2026-01-01T00:03:00", "r1", 0, np.nan)], COLUMNS)
    out = impressions(pd.concat([events, extra], ignore_index=True), LabelSettings())
    assert _grades(out) == {"click0": 0.8, "rating1": 0.8}


def test_view_scaled_by_duration(make_frame):
    at = "2026-01-01T00:05:00"
    views = [("view", at, 0.0), ("view", at, 30.0), ("view", at, 60.0), ("view", at, 600.0), ("view", at, np.nan)]
    out = impressions(_slate(make_frame, views), LabelSettings())
    assert [_grades(out)[f"view{i}"] for i in range(5)] == pytest.approx([0.1, 0.25, 0.4, 0.4, 0.1])


def test_attribution_horizon(make_frame):
    responses = [("click", "2026-01-01T23:00:00", np.nan), ("click", "2026-01-02T01:00:00", np.nan),
                 ("save", "2025-12-31T23:00:00", np.nan)]  # the save precedes the impression
    events = _slate(make_frame, responses)
    assert _grades(impressions(events, LabelSettings())) == {"click0": 0.4, "click1": 0.0, "save2": 0.0}
    wide = impressions(events, LabelSettings(), attribution_hours=48)
    assert _grades(wide) == {"click0": 0.4, "click1": 0.4, "save2": 0.0}


def test_fallback_grouping_without_impressions(make_frame):
    rows = [
        ("u1", "i1", "view", "2026-01-01T10:00:00", "s1", 20.0),
        ("u1", "i1", "click", "2026-01-01T10:01:00", "s1", np.nan),
        ("u1", "i2", "save", "2026-01-01T10:02:00", "s1", np.nan),
        ("u1", "i1", "click", "2026-01-02T09:00:00", None, np.nan),
        ("u2", "i1", "dismiss", "2026-01-02T09:30:00", None, np.nan),
    ]
    events = make_frame(rows, ("user_id", "item_id", "event_type", "ts", "session_id", "value"))
    out = impressions(events, LabelSettings())
    got = {(q, i): (g, str(t)) for q, i, g, t in zip(out["query_id"], out["item_id"], out["grade"], out["ts"], strict=True)}
    assert got == {
        ("u1|s1", "i1"): (0.4, "2026-01-01 10:00:00+00:00"),
        ("u1|s1", "i2"): (0.8, "2026-01-01 10:02:00+00:00"),
        ("u1|2026-01-02", "i1"): (0.4, "2026-01-02 09:00:00+00:00"),
        ("u2|2026-01-02", "i1"): (0.0, "2026-01-02 09:30:00+00:00"),
    }
    assert out["query_id"].tolist()[:2] == ["u1|s1", "u1|s1"], "a query's rows are contiguous"


def test_duplicate_impression_keeps_the_first(make_frame):
    rows = [("u1", "i1", "impression", "2026-01-01T00:00:00", "r1", 0, np.nan),
            ("u1", "i1", "impression", "2026-01-01T00:00:10", "r1", 3, np.nan),
            ("u1", "i1", "click", "2026-01-01T00:00:05", "r1", 0, np.nan)]
    out = impressions(make_frame(rows, COLUMNS), LabelSettings())
    assert len(out) == 1 and out.loc[0, "position"] == 0 and out.loc[0, "grade"] == 0.4


def test_invalid_inputs(make_frame):
    with pytest.raises(TypeError, match="DataFrame"):
        impressions([{"user_id": "u1"}], LabelSettings())
    with pytest.raises(ValueError, match=r"\['item_id', 'event_type'\]"):
        impressions(pd.DataFrame({"user_id": ["u1"], "ts": [pd.Timestamp("2026-01-01", tz="UTC")]}), LabelSettings())
    naive = make_frame([("u1", "i1", "click", "2026-01-01")]).assign(ts=pd.Timestamp("2026-01-01"))
    with pytest.raises(TypeError, match="tz-aware"):
        impressions(naive, LabelSettings())
    with pytest.raises(ValueError, match="attribution_hours"):
        impressions(make_frame([("u1", "i1", "click", "2026-01-01")]), LabelSettings(), attribution_hours=0)


def test_ratings_without_a_configured_grade_count_as_nothing(make_frame):
    at = "2026-01-01T00:05:00"
    out = impressions(_slate(make_frame, [("rating", at, 7.0), ("rating", at, 5.0), ("rating", at, np.nan)]),
                      LabelSettings())
    assert _grades(out) == {"rating0": 0.0, "rating1": 1.0, "rating2": 0.0}


def test_responses_without_request_id_join_the_latest_slate(make_frame):
    rows = [("u1", "i1", "impression", "2026-01-01T00:00:00", "r1", 0, np.nan),
            ("u1", "i1", "click", "2026-01-01T00:05:00", None, None, np.nan),  # same user/item, no request
            ("u1", "i2", "save", "2026-01-01T00:06:00", None, None, np.nan),  # never shown in a slate
            ("u1", "i1", "save", "2026-01-03T00:00:00", None, None, np.nan)]  # beyond the horizon
    out = impressions(make_frame(rows, COLUMNS), LabelSettings())
    got = {(q, i): g for q, i, g in zip(out["query_id"], out["item_id"], out["grade"], strict=True)}
    assert got == {("r1", "i1"): 0.4, ("u1|2026-01-01", "i2"): 0.8, ("u1|2026-01-03", "i1"): 0.8}


@pytest.mark.parametrize("coded", [False, True])
def test_event_grades_match_a_row_by_row_definition(coded: bool):
    """Every event's grade against the rule written per row: the type's grade; views and dwells scaled
    by seconds (missing seconds: the minimum); ratings by rounded stars (none configured: NaN)."""
    from features.labels import event_grades

    settings = LabelSettings()
    rng = np.random.default_rng(5)
    n = 4_000
    types = rng.choice(["impression", "click", "view", "dwell", "rating", "save", "purchase", "dismiss", "other", None], n)
    values = rng.choice([np.nan, -3.0, 0.0, 0.4, 2.5, 3.49, 3.5, 4.5, 5.0, 6.0, 12.0, 30.0, 1e4], n)
    events = pd.DataFrame({"event_type": pd.Series(types, dtype="category" if coded else "str"), "value": values})

    def by_row(kind, value) -> float:
        if kind in ("view", "dwell"):
            span = settings.view_max_grade - settings.view_min_grade
            seconds = 0.0 if np.isnan(value) else value
            return settings.view_min_grade + span * min(max(seconds / settings.view_full_seconds, 0.0), 1.0)
        if kind == "rating":
            stars = -1 if np.isnan(value) else int(np.rint(value))
            return settings.rating_grades.get(stars, np.nan) if stars >= 0 else np.nan
        return settings.grades.get(kind, np.nan) if isinstance(kind, str) else np.nan

    want = np.array([by_row(k, v) for k, v in zip(types, values, strict=True)])
    got = event_grades(events, settings)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float64 and np.isnan(got).any() and (got > 0).any()


def test_row_order_ranks_queries_first_and_equals_the_four_key_sort():
    """features.labels._order sorts the queries by (start, id) once and then the rows by (that rank,
    position, item): the same permutation as the rows' sort on all four keys, ties included (stable)."""
    from features.labels import _order

    rng = np.random.default_rng(4)
    n = 6_000
    qid = pd.Series(rng.choice([f"r{k:04d}" for k in range(700)], n), dtype="string")
    ts = rng.integers(0, 50, n).astype(np.int64)  # coarse: queries share start times
    position = np.where(rng.random(n) < 0.2, np.inf, rng.integers(0, 5, n).astype(np.float64))
    item = rng.integers(0, 30, n)  # repeats within a query: ties left in row order
    qcode, _ = pd.factorize(qid, sort=True)
    qstart = pd.Series(ts).groupby(qcode).transform("min").to_numpy()
    expected = np.lexsort((item, position, qcode, qstart))
    got = _order(qid, item, ts, position)
    assert (got == expected).all()
    assert not (np.lexsort((item, position, qcode)) == expected).all()  # the start time does reorder
    with_missing = qid.copy()
    with_missing.iloc[::50] = None  # rows without an id keep the first-written sort
    assert sorted(_order(with_missing, item, ts, position)) == list(range(n))
