"""Ranking metrics: hand-computed values, sklearn and LightGBM agreement, conventions, errors."""

from __future__ import annotations

import math

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from models import metrics

# One query: labels [3, 2, 0, 1] scored so that the ranking is rows 0, 2, 3, 1.
LABELS = np.array([3, 2, 0, 1])
SCORES = np.array([0.9, 0.1, 0.8, 0.3])
DCG = 7 / math.log2(2) + 0 / math.log2(3) + 1 / math.log2(4) + 3 / math.log2(5)
IDEAL = 7 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)


def test_ndcg_hand_computed():
    assert metrics.ndcg_at_k(LABELS, SCORES, [4], 4) == pytest.approx(DCG / IDEAL)
    assert metrics.ndcg_at_k(LABELS, SCORES, [4], 2) == pytest.approx(7 / (7 + 3 / math.log2(3)))


def test_average_precision_and_mrr_hand_computed():
    # relevant rows 0, 3, 1 sit at ranks 1, 3, 4
    assert metrics.map_at_k(LABELS, SCORES, [4], 4) == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)
    assert metrics.map_at_k(LABELS, SCORES, [4], 2) == pytest.approx((1 / 1) / 2)
    labels = np.array([3, 2, 0, 1, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.9, 0.8, 0.1])
    assert metrics.mrr(labels, scores, [4, 3]) == pytest.approx((1 + 1 / 3) / 2)


def test_query_without_relevant_item_counts_as_one_for_ndcg_and_map_zero_for_mrr():
    labels, scores = np.array([0, 0, 0, 2, 0]), np.array([0.3, 0.2, 0.1, 0.1, 0.9])
    assert metrics.per_query_ndcg(labels, scores, [3, 2], 10).tolist() == [1.0, pytest.approx(1 / math.log2(3))]
    assert metrics.per_query_average_precision(labels, scores, [3, 2], 10).tolist() == [1.0, 0.5]
    assert metrics.per_query_reciprocal_rank(labels, scores, [3, 2]).tolist() == [0.0, 0.5]


def test_ties_keep_the_original_row_order():
    assert metrics.ndcg_at_k([0, 1], [0.5, 0.5], [2], 2) == pytest.approx(1 / math.log2(3))
    assert metrics.ndcg_at_k([1, 0], [0.5, 0.5], [2], 2) == pytest.approx(1.0)


def test_agrees_with_sklearn_ndcg_on_random_queries():
    rng = np.random.default_rng(0)
    sizes = rng.integers(2, 15, size=40)
    labels = rng.integers(0, 4, size=sizes.sum())
    scores = rng.normal(size=sizes.sum())
    ours = metrics.per_query_ndcg(labels, scores, sizes, 5)
    bounds = np.cumsum(np.concatenate([[0], sizes]))
    for q, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if labels[lo:hi].max() == 0:
            assert ours[q] == 1.0
            continue
        gains = 2.0 ** labels[lo:hi] - 1  # sklearn's gain is the label itself
        assert ours[q] == pytest.approx(ndcg_score([gains], [scores[lo:hi]], k=5))


def test_agrees_with_lightgbm_evaluation_including_tied_scores():
    rng = np.random.default_rng(3)
    sizes = rng.integers(3, 25, size=80)
    X = rng.normal(size=(sizes.sum(), 3))
    y = np.clip((X[:, 0] * 1.5 + rng.normal(size=len(X))).round(), 0, 3)
    train = lgb.Dataset(X, y, group=sizes)
    history: dict = {}
    params = {"objective": "lambdarank", "metric": ["ndcg", "map"], "eval_at": [1, 3, 10],
              "num_leaves": 4, "verbosity": -1, "num_threads": 1}
    booster = lgb.train(params, train, 8, valid_sets=[train], valid_names=["t"],
                        callbacks=[lgb.record_evaluation(history)])
    scores = booster.predict(X)
    assert len(np.unique(scores)) < len(scores)  # few leaves: plenty of ties
    for k in (1, 3, 10):
        assert metrics.ndcg_at_k(y, scores, sizes, k) == pytest.approx(history["t"][f"ndcg@{k}"][-1], abs=1e-9)
        assert metrics.map_at_k(y, scores, sizes, k) == pytest.approx(history["t"][f"map@{k}"][-1], abs=1e-9)


def test_query_ids_give_the_same_result_as_group_sizes_in_any_row_order():
    rng = np.random.default_rng(1)
    sizes = np.array([4, 6, 5])
    labels, scores = rng.integers(0, 3, size=15), rng.normal(size=15)
    ids = np.repeat(["a", "b", "c"], sizes)
    perm = rng.permutation(15)
    by_group = metrics.per_query_ndcg(labels, scores, sizes, 3)
    by_id = metrics.per_query_ndcg(labels[perm], scores[perm], ids[perm], 3)
    # ties never occur (continuous scores), so shuffling rows cannot change any ranking
    assert np.allclose(by_group, by_id)


def test_ranking_report_keys_and_values():
    report = metrics.ranking_report(LABELS, SCORES, [4])
    assert list(report) == ["ndcg_at_5", "ndcg_at_10", "map_at_10", "mrr"]
    assert report["ndcg_at_10"] == pytest.approx(DCG / IDEAL)
    assert report["mrr"] == 1.0


@pytest.mark.parametrize(
    ("labels", "scores", "queries", "k", "error", "pattern"),
    [
        ([1, 0], [0.1], [2], 5, ValueError, "same length, found 2 and 1"),
        ([1, 0], [np.nan, 0.1], [2], 5, ValueError, "1 NaN score"),
        ([1, -1], [0.2, 0.1], [2], 5, ValueError, "non-negative"),
        ([1, 0, 1], [0.2, 0.1, 0.3], [2, 2], 5, ValueError, r"add up to the number of rows \(3\), they add up to 4"),
        ([1, 0], [0.2, 0.1], [2], 0, ValueError, "k must be >= 1"),
        ([1, 0], [0.2, 0.1], [2], 2.0, TypeError, "k must be an int"),
        ([1, 0], ["a", "b"], [2], 2, TypeError, "scores must be numeric"),
        ([], [], [], 2, ValueError, "at least one row"),
    ],
)
def test_invalid_inputs_are_named(labels, scores, queries, k, error, pattern):
    with pytest.raises(error, match=pattern):
        metrics.ndcg_at_k(labels, scores, queries, k)
