"""User x item pair codes: numbered through a table of possible pairs, or hashed; the same grouping, the same
number of pairs, the same features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features
import features.context as context
from core.settings import Settings

from .conftest import make_events

SETTINGS = Settings()


def _hashed(ev_user, ev_item, q_user, q_item, n_items):
    ev, q = ev_user.astype(np.int64) * n_items + ev_item, q_user.astype(np.int64) * n_items + q_item
    return context._codes(pd.Series(ev), pd.Series(q))


@pytest.mark.parametrize(("n_users", "n_items"), [(50, 40), (3000, 2000), (3000, 20000)])
def test_pair_codes_group_rows_as_their_pairs_do(n_users, n_items):
    rng = np.random.default_rng(4)
    ev_user, ev_item = rng.integers(0, n_users, 5000).astype(np.int32), rng.integers(0, n_items, 5000).astype(np.int32)
    q_user, q_item = rng.integers(0, n_users, 3000).astype(np.int32), rng.integers(0, n_items, 3000).astype(np.int32)
    ev, q = context._pair_codes(ev_user, ev_item, q_user, q_item, n_users, n_items)
    h_ev, h_q = _hashed(ev_user, ev_item, q_user, q_item, n_items)
    both, hashed = np.concatenate([ev, q]), np.concatenate([h_ev, h_q])
    assert both.dtype == np.int64 and both.min() == 0
    assert both.max() + 1 == hashed.max() + 1 == len(np.unique(hashed))  # as many keys: the same time unit
    # one code per pair and one pair per code
    assert len(np.unique(np.stack([both, hashed]), axis=1)[0]) == len(np.unique(hashed))


def test_missing_codes_take_the_hashed_numbering():
    ev_user, ev_item = np.array([0, -1, 1], np.int32), np.array([1, 1, -1], np.int32)
    q_user, q_item = np.array([0], np.int32), np.array([1], np.int32)
    got = context._pair_codes(ev_user, ev_item, q_user, q_item, 2, 2)
    for a, b in zip(got, _hashed(ev_user, ev_item, q_user, q_item, 2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_features_are_the_same_either_way(monkeypatch):
    events = make_events(seed=9, n_users=40, n_items=30, n_requests=500)
    imps, _ = features.ranking_queries(events, SETTINGS.labels)
    names = tuple(n for n in features.get_feature_set(SETTINGS.features.feature_set).features if n.startswith("ui_"))
    assert len(names) >= 4
    table = features.build_features(imps, events, settings=SETTINGS.features)[list(names)]
    monkeypatch.setattr(context, "_pair_codes", lambda eu, ei, qu, qi, nu, ni: _hashed(eu, ei, qu, qi, ni))
    hashed = features.build_features(imps, events, settings=SETTINGS.features)[list(names)]
    pd.testing.assert_frame_equal(table, hashed, check_exact=True)
    assert (table.notna() & (table != 0)).any().all()  # every pair feature has values to compare
