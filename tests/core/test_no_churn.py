"""No churn: a challenger that ranks every test request as its champion does is the champion again."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.ranker import Ranker
from rankloop.stages import ChampionScores, TrainedRanker, same_as_champion


def _trained(tmp_path: Path, scores: np.ndarray) -> TrainedRanker:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    ranker = Ranker(n_estimators=3, min_child_samples=2).fit(x, pd.Series(rng.integers(0, 3, 60)), group=[10] * 6)
    path = ranker.save(tmp_path / "model.txt")
    return TrainedRanker(path, {}, {}, np.zeros(3), 1, {}, {}, test_scores=scores)


def test_the_same_ranking_in_every_request_is_unchanged(tmp_path: Path) -> None:
    query_id = np.array([1, 1, 1, 2, 2, 2])
    champion = np.array([0.3, 0.1, 0.2, 5.0, 7.0, 6.0])
    trained = _trained(tmp_path, champion * 2 + 1)  # another model (other scores), the same order
    reason = same_as_champion(trained, ChampionScores(4, np.zeros(2), champion, "other-sha", query_id))
    assert reason is not None and "same ranking as champion v4" in reason
    same_scores = same_as_champion(_trained(tmp_path, champion.copy()),
                                   ChampionScores(4, np.zeros(2), champion, "other-sha", query_id))
    assert same_scores is not None and "same scores" in same_scores


def test_another_order_in_one_request_is_a_new_model(tmp_path: Path) -> None:
    query_id = np.array([1, 1, 1, 2, 2, 2])
    champion = np.array([0.3, 0.1, 0.2, 5.0, 7.0, 6.0])
    swapped = np.array([0.3, 0.1, 0.2, 5.0, 6.0, 7.0])
    assert same_as_champion(_trained(tmp_path, swapped),
                            ChampionScores(4, np.zeros(2), champion, "other-sha", query_id)) is None
    assert same_as_champion(_trained(tmp_path, swapped), ChampionScores()) is None  # no champion


def test_the_same_model_bytes_are_unchanged(tmp_path: Path) -> None:
    import hashlib

    trained = _trained(tmp_path, np.array([1.0, 2.0]))
    text = Ranker.load(trained.model_path).model_to_string()
    champion = ChampionScores(2, None, None, hashlib.sha256(text.encode()).hexdigest(), None)
    assert "identical model.txt" in same_as_champion(trained, champion)
    assert lgb.__version__  # the model text is LightGBM's own
