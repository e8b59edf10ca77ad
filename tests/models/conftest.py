"""Seeded synthetic ranking data shaped like the real feature table (one row per impression)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from models.ranker import Ranker

FEATURES = ["emb_cos_user_profile", "item_quality_estimate", "noise_a", "noise_b"]


@dataclass(frozen=True)
class Split:
    """One period: features, labels, slate sizes and the canonical id columns."""

    X: pd.DataFrame
    y: np.ndarray
    group: np.ndarray
    frame: pd.DataFrame  # request_id, item_id, label and the features


def make_split(n_queries: int, seed: int, n_items: int = 60, slate: int = 10) -> Split:
    """Slates of ``slate`` items; relevance = user-item affinity plus a little item quality."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(1234)  # items are the same in every split
    item_vectors = world.normal(size=(n_items, 8))
    quality = world.normal(size=n_items)
    items = np.concatenate([rng.choice(n_items, size=slate, replace=False) for _ in range(n_queries)])
    users = np.repeat(rng.normal(size=(n_queries, 8)), slate, axis=0)
    vectors = item_vectors[items]
    cosine = (users * vectors).sum(1) / np.linalg.norm(users, axis=1) / np.linalg.norm(vectors, axis=1)
    truth = 2.0 * cosine + 0.5 * quality[items] + rng.normal(scale=0.3, size=len(items))
    labels = np.digitize(truth, [0.8, 1.4, 2.0]).astype(np.int64)
    X = pd.DataFrame(
        {
            "emb_cos_user_profile": cosine + rng.normal(scale=0.05, size=len(items)),
            "item_quality_estimate": quality[items] + rng.normal(scale=0.2, size=len(items)),
            "noise_a": rng.normal(size=len(items)),
            "noise_b": rng.integers(0, 5, size=len(items)),
        }
    )
    frame = X.assign(
        request_id=np.repeat([f"r{seed}-{q}" for q in range(n_queries)], slate),
        item_id=[f"i{i}" for i in items],
        label=labels,
    )
    return Split(X=X, y=labels, group=np.full(n_queries, slate), frame=frame)


@pytest.fixture(scope="session")
def train_split() -> Split:
    return make_split(200, seed=1)


@pytest.fixture(scope="session")
def valid_split() -> Split:
    return make_split(60, seed=2)


@pytest.fixture(scope="session")
def test_split() -> Split:
    return make_split(60, seed=3)


SMALL_PARAMS = {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 20,
                "early_stopping_rounds": 10, "num_threads": 1, "seed": 7}


def small_ranker(**overrides) -> Ranker:
    """Fast settings for a 2,000-row problem."""
    return Ranker(**(SMALL_PARAMS | overrides))


@pytest.fixture
def make_ranker():
    """A factory of fast Rankers; keyword overrides replace the small settings."""
    return small_ranker


@pytest.fixture(scope="session")
def fitted_ranker(train_split: Split, valid_split: Split) -> Ranker:
    return small_ranker().fit(
        train_split.X, train_split.y, group=train_split.group,
        eval_set=[(valid_split.X, valid_split.y)], eval_group=[valid_split.group],
    )
