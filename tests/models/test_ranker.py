"""The Ranker's estimator contract, persistence, early stopping and a quality floor."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from lightgbm.basic import EvalResult
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from core.config.ranker import RankerSettings
from models import baselines, metrics
from models.ranker import Ranker, _StopOnMetric


def test_init_stores_parameters_unchanged():
    extra = {"lambda_l2": 1.5}
    ranker = Ranker(learning_rate=0.2, num_leaves=7, extra_params=extra)
    params = ranker.get_params()
    assert params["learning_rate"] == 0.2 and params["num_leaves"] == 7
    assert ranker.extra_params is extra
    assert not hasattr(ranker, "booster_")


def test_init_is_keyword_only():
    with pytest.raises(TypeError):
        Ranker(0.1)  # type: ignore[misc]


def test_defaults_match_settings_and_from_settings_copies_them():
    settings = RankerSettings(learning_rate=0.01, extra_params={"lambda_l2": 2.0})
    defaults = RankerSettings().ranker_params() | {"extra_params": None}
    assert Ranker().get_params() == defaults
    assert Ranker.from_settings(settings).get_params() == settings.ranker_params()


def test_clone_gives_an_unfitted_copy_with_the_same_params(fitted_ranker):
    copy = clone(fitted_ranker)
    assert copy.get_params() == fitted_ranker.get_params()
    assert not hasattr(copy, "booster_")


def test_fit_returns_self_and_sets_learned_state(make_ranker, train_split):
    ranker = make_ranker(n_estimators=5)
    assert ranker.fit(train_split.X, train_split.y, group=train_split.group) is ranker
    assert ranker.feature_names_ == list(train_split.X.columns)
    assert ranker.best_iteration_ == 5  # no validation set: every round is kept
    assert set(ranker.evals_result_) == {"train"}
    assert set(ranker.evals_result_["train"]) == {"ndcg@5", "ndcg@10"}


def test_predict_before_fit_raises_a_clear_error(train_split):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        Ranker().predict(train_split.X)


def test_evals_result_holds_train_and_valid_curves(fitted_ranker):
    result = fitted_ranker.evals_result_
    assert set(result) == {"train", "valid"}
    lengths = {len(v) for curves in result.values() for v in curves.values()}
    assert len(lengths) == 1 and lengths.pop() >= fitted_ranker.best_iteration_


def test_early_stopping_keeps_the_best_validation_ndcg_at_10(fitted_ranker):
    valid = fitted_ranker.evals_result_["valid"]["ndcg@10"]
    assert fitted_ranker.best_iteration_ == int(np.argmax(valid)) + 1
    assert len(valid) <= fitted_ranker.best_iteration_ + fitted_ranker.early_stopping_rounds


def _env(iteration: int, ndcg5: float, ndcg10: float, other10: float = 0.5):
    results = [EvalResult("train", "ndcg@5", 0.99, True), EvalResult("train", "ndcg@10", 0.99, True),
               EvalResult("valid", "ndcg@5", ndcg5, True), EvalResult("valid", "ndcg@10", ndcg10, True),
               EvalResult("valid_1", "ndcg@5", 0.5, True), EvalResult("valid_1", "ndcg@10", other10, True)]
    return lgb.callback.CallbackEnv(model=None, params={}, iteration=iteration, begin_iteration=0,
                                    end_iteration=100, evaluation_result_list=results)


def test_stopping_is_driven_by_ndcg_at_10_not_the_first_listed_ndcg_at_5():
    stop = _StopOnMetric("ndcg@10", stopping_rounds=3)
    with pytest.raises(lgb.callback.EarlyStopException) as caught:
        for i in range(100):  # NDCG@5 improves forever, NDCG@10 peaks at iteration 0
            stop(_env(i, 0.5 + 0.001 * i, 0.9 - 0.001 * i))
    assert caught.value.best_iteration == 0
    assert i == 3


def test_only_the_first_validation_set_drives_stopping():
    stop = _StopOnMetric("ndcg@10", stopping_rounds=3)
    for i in range(20):  # the first validation set keeps improving, a second one declines
        stop(_env(i, 0.5, 0.5 + 0.001 * i, other10=0.9 - 0.001 * i))


def test_no_early_stopping_when_rounds_is_none(make_ranker, train_split, valid_split):
    ranker = make_ranker(n_estimators=25, early_stopping_rounds=None).fit(
        train_split.X, train_split.y, group=train_split.group,
        eval_set=[(valid_split.X, valid_split.y)], eval_group=[valid_split.group],
    )
    assert ranker.best_iteration_ == 25
    assert len(ranker.evals_result_["valid"]["ndcg@10"]) == 25


def test_validation_curve_agrees_with_our_metric(fitted_ranker, valid_split):
    scores = fitted_ranker.predict(valid_split.X)
    best = fitted_ranker.best_iteration_ - 1
    for k in (5, 10):
        ours = metrics.ndcg_at_k(valid_split.y, scores, valid_split.group, k)
        assert ours == pytest.approx(fitted_ranker.evals_result_["valid"][f"ndcg@{k}"][best], abs=1e-9)


def test_training_is_deterministic_given_the_seed(make_ranker, train_split, test_split):
    first = make_ranker(n_estimators=15).fit(train_split.X, train_split.y, group=train_split.group)
    second = make_ranker(n_estimators=15).fit(train_split.X, train_split.y, group=train_split.group)
    assert np.array_equal(first.predict(test_split.X), second.predict(test_split.X))


def test_save_load_round_trip_gives_identical_predictions(fitted_ranker, test_split, tmp_path):
    path = fitted_ranker.save(tmp_path / "models" / "ranker.txt")
    loaded = Ranker.load(path)
    assert np.array_equal(loaded.predict(test_split.X), fitted_ranker.predict(test_split.X))
    assert loaded.feature_names_ == fitted_ranker.feature_names_
    assert loaded.best_iteration_ == fitted_ranker.best_iteration_
    assert loaded.learning_rate == fitted_ranker.learning_rate
    assert loaded.num_leaves == fitted_ranker.num_leaves


def test_saved_file_is_lightgbm_text_and_no_temp_file_is_left(fitted_ranker, tmp_path):
    path = fitted_ranker.save(tmp_path / "ranker.txt")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("tree")
    assert "objective=lambdarank" in text
    assert [p.name for p in tmp_path.iterdir()] == ["ranker.txt"]


def test_predict_matches_columns_by_name(fitted_ranker, test_split):
    shuffled = test_split.X[list(reversed(test_split.X.columns))]
    assert np.array_equal(fitted_ranker.predict(shuffled), fitted_ranker.predict(test_split.X))


def test_quality_floor_beats_both_baselines(fitted_ranker, train_split, test_split):
    model = metrics.ndcg_at_k(test_split.y, fitted_ranker.predict(test_split.X), test_split.group, 10)
    popularity = baselines.popularity_scores(train_split.frame, test_split.frame)
    similarity = baselines.similarity_scores(test_split.frame)
    assert model > 0.85
    assert model > metrics.ndcg_at_k(test_split.y, popularity, test_split.group, 10) + 0.1
    assert model > metrics.ndcg_at_k(test_split.y, similarity, test_split.group, 10) + 0.01
