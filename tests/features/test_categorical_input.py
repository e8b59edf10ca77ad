"""The weekly run reads the few-valued text columns and the ids as categoricals (``core.schema.FEW_VALUED_COLUMNS``,
``core.schema.CODED_ID_COLUMNS``): labels and every feature come out the same as from plain text, with logged
slates and with implicit queries; the labels' ids come out as text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from core.config.features import FeatureSettings, LabelSettings
from core.schema import CODED_ID_COLUMNS, FEW_VALUED_COLUMNS
from features import ranking_queries
from features.build import build_columns
from features.implicit import IMPLICIT, LOGGED
from features.registry import REGISTRY

from .conftest import make_events


def _context(events: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Every few-valued column filled, some values missing (own item attributes on some rows only)."""
    rng = np.random.default_rng(seed)
    n = len(events)
    return events.assign(device=rng.choice(["mobile", "tv", "desktop", None], n),
                         mood=rng.choice(["calm", "happy", None], n),
                         time_of_day=rng.choice(["night", "morning", "evening"], n),
                         policy_version=rng.choice(["v2", "v1", None], n),
                         category=np.where(rng.random(n) < 0.3, rng.choice(["c9", "c1"], n), None),
                         content_type=np.where(rng.random(n) < 0.3, "video", None))


def _as_read(events: pd.DataFrame) -> pd.DataFrame:
    """The columns as Parquet's dictionaries give them: categories in an order of their own (here
    reverse-sorted, so nothing may depend on sorted categories)."""
    out = events.copy()
    for c in (*FEW_VALUED_COLUMNS, *CODED_ID_COLUMNS):
        if c in out.columns:
            values = sorted(out[c].dropna().unique(), reverse=True)
            out[c] = pd.Categorical(out[c], categories=values)
    return out


def _no_slates(events: pd.DataFrame) -> pd.DataFrame:
    kept = events[events["event_type"] != "impression"]
    return kept.drop(columns=["request_id", "position", "propensity"]).reset_index(drop=True)


def _same_as_text(coded, text, read, events, items, users) -> pd.DataFrame:
    """``coded`` (from ``read``) is ``text`` (from ``events``) with some columns categorical, and every registered
    feature is the same from either: returns the features from ``text``."""
    as_text = coded.assign(**{c: coded[c].astype(text[c].dtype) for c in coded.columns
                              if isinstance(coded[c].dtype, pd.CategoricalDtype)})
    pdt.assert_frame_equal(as_text, text)
    names = tuple(REGISTRY)
    settings = FeatureSettings()
    expected = build_columns(text, events, names, items=items, users=users, settings=settings)
    got = build_columns(coded, read, names, items=items, users=users, settings=settings)
    pdt.assert_frame_equal(got, expected)
    return expected


@pytest.mark.parametrize("slates", [True, False])
def test_categorical_columns_give_the_same_labels_and_features(items, users, slates):
    events = _context(make_events(n_requests=400), seed=4)
    if not slates:
        events = _no_slates(events)
    else:  # some slates without positions: a query's rows are then ordered by item id
        unknown = np.random.default_rng(5).random(len(events)) < 0.3
        events["position"] = events["position"].astype("float64").mask(unknown)
    read = _as_read(events)
    assert all(isinstance(read[c].dtype, pd.CategoricalDtype) for c in (*FEW_VALUED_COLUMNS, *CODED_ID_COLUMNS)
               if c in read.columns)
    labels = LabelSettings()
    text, protocol = ranking_queries(events, labels)
    coded, coded_protocol = ranking_queries(read, labels)
    assert coded_protocol == protocol and protocol.name == (LOGGED if slates else IMPLICIT)
    for c in ("query_id", "user_id", "item_id"):  # what the split's key files hold: text, as before
        assert coded[c].dtype == text[c].dtype, c
    expected = _same_as_text(coded, text, read, events, items, users)
    for column in ("ctx_device", "ctx_mood", "ctx_time_of_day"):
        assert expected[column].nunique() > 1, column  # the context is read, not constant


@pytest.mark.parametrize("case", ["text", "categorical", "mixed", "numbers", "edges"])
def test_codes_are_those_of_one_factorize_over_the_columns(case):
    from features.context import _codes_and_uniques, _concatenated_codes  # the latter: the definition

    rng = np.random.default_rng(len(case))
    words = np.array(["b", "a", "é", "c", None, "d"], dtype=object)
    text = [pd.Series(rng.choice(words, n), dtype="str") for n in (50, 30, 7)]
    if case == "text":
        columns = text
    elif case == "categorical":  # categories in their own orders, some never used
        columns = [t.astype(pd.CategoricalDtype(["z", "d", "c", "b", "a", "é"])) for t in text[:2]] + [text[2]]
    elif case == "mixed":
        columns = [text[0].astype(pd.CategoricalDtype(["é", "d", "c", "b", "a"])), 12, text[1].astype(object), text[2]]
    elif case == "numbers":  # 1 == 1.0 across columns; the text "1" is another value
        columns = [pd.Series([3, 1, 2, 1]), pd.Series([1.0, np.nan, 4.5]), pd.Series(["1", None], dtype=object)]
    else:
        columns = [pd.Series([], dtype="str"), pd.Series([None, None], dtype=object), 3, pd.Series(["x"], dtype="str")]
    got, got_values = _codes_and_uniques(*columns)
    want, want_values = _concatenated_codes(tuple(columns))
    assert [g.tolist() for g in got] == [w.tolist() for w in want]
    assert got_values.tolist() == want_values.tolist()
    assert max((int(g.max(initial=-1)) for g in got), default=-1) >= 0 or case == "edges"


@pytest.mark.parametrize("categories", [pd.Index(["u3", "u1", "u2"], dtype="str"), pd.Index([30, 10, 20]),
                                        pd.Index(["b", "a"], dtype=object)])
def test_ids_decoded_from_codes_are_what_astype_gives(categories):
    """The labels turn categorical ids back into their values through the categories (no Python string per
    row): the same values, missing ones included, and the same dtype as ``astype``."""
    from features.labels import _decoded

    codes = np.array([0, 2, -1, 1, 1, 0, -1], dtype=np.int8)[: len(categories) + 4]
    codes = np.where(codes < len(categories), codes, -1)
    values = pd.Series(pd.Categorical.from_codes(codes, categories=categories), index=np.arange(10, 10 + len(codes)),
                       name="user_id")
    expected = values.astype(categories.dtype) if (codes >= 0).all() else values.astype(object).where(codes >= 0)
    got = _decoded(values)
    if isinstance(categories.dtype, pd.api.extensions.ExtensionDtype):
        pdt.assert_series_equal(got, values.astype(categories.dtype))
    assert got.index.equals(values.index) and got.name == "user_id"
    assert got.isna().tolist() == (codes < 0).tolist()
    assert [v for v in got.tolist() if not pd.isna(v)] == [v for v in expected.tolist() if not pd.isna(v)]


@pytest.mark.parametrize("as_read", [False, True])
def test_implicit_queries_with_categorical_ids_are_the_text_ones_coded(items, users, as_read):
    """``categorical_ids`` (the weekly stage's implicit queries: a code per row, not a text): the same rows, each id
    column's values those of the text frame (its categories sorted, so a sort by code is a sort by text), and every
    feature the same from them."""
    events = _no_slates(_context(make_events(n_requests=400), seed=6))
    read = _as_read(events) if as_read else events
    labels = LabelSettings()
    text, _ = ranking_queries(events, labels)
    coded, protocol = ranking_queries(read, labels, categorical_ids=True)
    assert protocol.name == IMPLICIT and len(coded) == len(text) > 0
    for c in ("query_id", "user_id", "item_id"):
        assert isinstance(coded[c].dtype, pd.CategoricalDtype), c
        categories = coded[c].cat.categories
        assert categories.is_monotonic_increasing and categories.is_unique, c
        assert coded[c].cat.codes.min() >= 0, c
    _same_as_text(coded, text, read, events, items, users)
