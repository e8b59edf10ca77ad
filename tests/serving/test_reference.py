"""The reference serving recipes: 0.6/0.4 similarity-bandit blend with 15% exploration, MMR with lambda 0.7."""

from __future__ import annotations

from datetime import UTC, datetime

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from serving.reference import ReferenceRecommender, ServingConfig, blend_scores, diversity, explore, mmr


class FixedBandit:
    def __init__(self, draws: dict[str, float]):
        self.draws = draws

    def sample(self, item_ids, rng):
        return np.array([self.draws[i] for i in item_ids])


def test_config_defaults_are_the_seed_values_and_are_validated() -> None:
    c = ServingConfig()
    assert (c.similarity_weight, c.bandit_weight, c.exploration_rate, c.mmr_lambda) == (0.6, 0.4, 0.15, 0.7)
    with pytest.raises(ValueError, match="must be 1"):
        ServingConfig(similarity_weight=0.5, bandit_weight=0.4)
    with pytest.raises(ValueError, match="exploration_rate"):
        ServingConfig(exploration_rate=1.5)


def test_blend_weights_similarity_and_bandit_draws() -> None:
    scores = blend_scores(np.array([1.0, -1.0]), np.array([0.0, 1.0]), ServingConfig())
    np.testing.assert_allclose(scores, [0.6, 0.4])


def test_blend_without_exploration_is_the_score_order() -> None:
    items = ["a", "b", "c"]
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    rec = ReferenceRecommender(
        bandit=FixedBandit({"a": 0.0, "b": 1.0, "c": 1.0}), config=ServingConfig(exploration_rate=0.0)
    )
    # a: 0.6*1 + 0 = 0.6; b: 0.6*0.5 + 0.4 = 0.7; c: 0 + 0.4 = 0.4
    assert rec.blend(np.array([1.0, 0.0]), items, emb, 3, np.random.default_rng(0)) == ["b", "a", "c"]


def test_exploration_replaces_about_15_percent_of_slots() -> None:
    rng = np.random.default_rng(1)
    ranked = list(range(100))
    explored = [explore(ranked, 1, 0.15, rng)[0] != 0 for _ in range(4000)]
    # an explored slot still picks the top item 1% of the time: expect 0.15 * 0.99 = 0.1485
    assert 0.13 < np.mean(explored) < 0.17
    assert explore(ranked, 5, 0.0, rng) == [0, 1, 2, 3, 4]
    assert sorted(explore([1, 2], 5, 1.0, rng)) == [1, 2]


def test_mmr_trades_relevance_for_diversity() -> None:
    items = ["a", "a_twin", "b", "junk"]
    emb = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [-1.0, -1.0]])
    relevance = np.array([1.0, 0.95, 0.9, 0.0])  # scaled to [1, .95, .9, 0]
    assert mmr(items, relevance, emb, 2, lambda_=1.0) == ["a", "a_twin"]
    assert mmr(items, relevance, emb, 2, lambda_=0.7) == ["a", "b"]
    # a_twin: .7 * .95 - .3 * 1.0 = .365 < b: .7 * .9 - .3 * 0 = .63
    assert diversity(emb[[0, 2]]) > diversity(emb[[0, 1]])


def test_ranked_uses_a_real_lightgbm_ranker_and_beta_tables(tmp_path) -> None:
    from core.config.policy import BanditSettings
    from models.ranker import Ranker
    from models.thompson import BetaTables

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 2)), columns=["f_a", "f_b"])
    y = (X["f_a"] > 0).astype(int).to_numpy()
    booster = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "num_leaves": 4, "min_data_in_leaf": 5},
        lgb.Dataset(X, y, group=[10] * 20),
        num_boost_round=5,
    )
    booster.save_model(str(tmp_path / "model.txt"))
    ranker = Ranker.load(tmp_path / "model.txt")
    items = [f"i{n}" for n in range(8)]
    tables = BetaTables(
        items=pd.DataFrame({"item_id": items, "successes": np.arange(8.0), "failures": np.ones(8)}),
        user_items=pd.DataFrame({"user_id": [], "item_id": [], "successes": [], "failures": []}),
        settings=BanditSettings(),
        fitted_at=datetime(2026, 11, 16, tzinfo=UTC),
        data_end=None,
    )
    rec = ReferenceRecommender(ranker=ranker, bandit=tables)
    emb = rng.normal(size=(8, 4))
    slate = rec.ranked(X.iloc[:8], items, emb, 4)
    assert len(slate) == 4 and len(set(slate)) == 4
    assert slate[0] == items[int(np.argmax(ranker.predict(X.iloc[:8])))]
    blended = rec.blend(rng.normal(size=4), items, emb, 5, np.random.default_rng(3))
    assert len(set(blended)) == 5 and set(blended) <= set(items)
    assert rec.refresh() is False


def test_invalid_inputs_are_named() -> None:
    rec = ReferenceRecommender()
    with pytest.raises(ValueError, match="without bandit"):
        rec.blend(np.ones(2), ["a"], np.ones((1, 2)), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="without ranker"):
        rec.ranked(pd.DataFrame({"x": [1]}), ["a"], np.ones((1, 2)), 1)
    with pytest.raises(ValueError, match="2 item ids but 1 embedding rows"):
        ReferenceRecommender(bandit=FixedBandit({})).blend(
            np.ones(2), ["a", "b"], np.ones((1, 2)), 1, np.random.default_rng(0)
        )
