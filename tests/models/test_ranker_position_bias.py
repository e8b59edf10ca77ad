"""The ranker's position-bias setting: the logged slot is in the objective, never in the features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from core.config.ranker import RankerSettings
from models import metrics
from models.ranker import Ranker

SLATE = 10


def biased_log(n_queries: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slates ordered mostly by popularity (unrelated to relevance); a user examines slot j with
    probability 1 / (1 + j)^1.2 and clicks an examined item with probability sigmoid(2 rel).

    Returns:
        X (affinity: noisy relevance, popularity, noise), clicks (the logged labels), slot per row,
        true relevance levels 0..2, query sizes.
    """
    rng = np.random.default_rng(seed)
    n = n_queries * SLATE
    rel, popularity = rng.normal(size=n), rng.normal(size=n)
    X = pd.DataFrame({"affinity": rel + rng.normal(0, 0.5, n), "popularity": popularity, "noise": rng.normal(size=n)})
    order = np.argsort(-(popularity + 0.3 * rel + rng.normal(0, 0.3, n)).reshape(n_queries, SLATE), axis=1)
    slot = np.empty((n_queries, SLATE), dtype=int)
    np.put_along_axis(slot, order, np.arange(SLATE)[None, :], axis=1)
    slot = slot.ravel()
    clicks = (rng.random(n) < (1.0 / (1 + slot)) ** 1.2) & (rng.random(n) < 1 / (1 + np.exp(-2 * rel)))
    return X, clicks.astype(int), slot, np.digitize(rel, [0, 1]), np.full(n_queries, SLATE)


@pytest.fixture(scope="module")
def log():
    return biased_log(600, seed=0)


@pytest.fixture(scope="module")
def held_out():
    return biased_log(300, seed=100)


def ranker(**overrides) -> Ranker:
    params = dict(n_estimators=80, learning_rate=0.1, num_leaves=7, min_child_samples=20, num_threads=1, seed=7,
                  early_stopping_rounds=None)
    return Ranker(**(params | overrides))


@pytest.fixture(scope="module")
def uncorrected(log) -> Ranker:
    X, y, slot, _, group = log
    return ranker().fit(X, y, group=group)


@pytest.fixture(scope="module")
def corrected(log) -> Ranker:
    X, y, slot, _, group = log
    return ranker(position_bias="lightgbm").fit(X, y, group=group, position=slot)


def test_the_setting_is_validated_and_copied():
    assert RankerSettings().position_bias == "none"
    with pytest.raises(ValidationError, match="position_bias"):
        RankerSettings(position_bias="slot_feature")
    with pytest.raises(ValidationError, match="propensity_floor"):
        RankerSettings(propensity_floor=0)
    settings = RankerSettings(position_bias="lightgbm", position_bias_regularization=0.5)
    assert Ranker.from_settings(settings).get_params()["position_bias"] == "lightgbm"
    assert Ranker.from_settings(settings).get_params()["position_bias_regularization"] == 0.5


def test_correction_learns_relevance_rather_than_the_logged_order(uncorrected, corrected, held_out):
    X, _, _, true, group = held_out
    true_ndcg = {name: metrics.ranking_report(true, model.predict(X), group)["ndcg_at_10"]
                 for name, model in (("uncorrected", uncorrected), ("corrected", corrected))}
    assert true_ndcg["corrected"] > true_ndcg["uncorrected"] + 0.03, true_ndcg
    share = {name: model.booster_.feature_importance("gain")[1] / model.booster_.feature_importance("gain").sum()
             for name, model in (("uncorrected", uncorrected), ("corrected", corrected))}
    assert share["corrected"] < share["uncorrected"] - 0.05, share  # less credit to what ordered the slate
    assert corrected.position_bias_applied_ == "lightgbm" and uncorrected.position_bias_applied_ == "none"


def test_the_corrected_model_predicts_from_features_alone_after_a_round_trip(corrected, held_out, tmp_path):
    X = held_out[0]
    assert corrected.feature_names_ == list(X.columns)  # the slot is no column of the model
    loaded = Ranker.load(corrected.save(tmp_path / "model.txt"))
    np.testing.assert_array_equal(loaded.predict(X), corrected.predict(X))
    with pytest.raises(ValueError, match=r"extra \['position'\]"):
        loaded.predict(X.assign(position=0))


def test_regularisation_reaches_lightgbm_and_survives_loading(log, tmp_path):
    X, y, slot, _, group = log
    fitted = ranker(position_bias="lightgbm", position_bias_regularization=0.5, n_estimators=5).fit(
        X, y, group=group, position=slot)
    assert float(fitted.booster_.params["lambdarank_position_bias_regularization"]) == 0.5
    assert Ranker.load(fitted.save(tmp_path / "m.txt")).get_params()["position_bias_regularization"] == 0.5
    with pytest.raises(ValueError, match="extra_params may not set.*lambdarank_position_bias_regularization"):
        ranker(extra_params={"lambdarank_position_bias_regularization": 1.0}).fit(X, y, group=group)


def test_slots_are_required_and_every_bad_one_is_listed(log):
    X, y, slot, _, group = log
    with pytest.raises(ValueError, match=r"position_bias='lightgbm' needs fit\(\.\.\., position=\.\.\.\)"):
        ranker(position_bias="lightgbm").fit(X, y, group=group)
    bad = slot.astype(object)
    bad[[3, 5, 7]] = [-1, 1.5, "top"]
    with pytest.raises(ValueError) as error:
        ranker(position_bias="lightgbm").fit(X, np.where(np.arange(len(y)) == 0, -2, y), group=group, position=bad)
    message = str(error.value)
    assert "3 bad value(s)" in message and "row 3: -1" in message and "row 5: 1.5" in message
    assert "row 7: 'top'" in message and "labels must be integers" in message  # one message, every problem
    with pytest.raises(ValueError, match="position has 5 values for 6000 rows"):
        ranker(position_bias="lightgbm").fit(X, y, group=group, position=slot[:5])


def test_rows_without_slots_train_uncorrected(log, uncorrected):
    X, y, _, _, group = log
    fitted = ranker(position_bias="lightgbm").fit(X, y, group=group, position=np.full(len(X), np.nan))
    assert fitted.position_bias_applied_ == "none"
    assert fitted.model_to_string() == uncorrected.model_to_string()


def test_unknown_slots_share_a_slot_of_their_own(log, corrected):
    X, y, slot, _, group = log
    some_unknown = pd.array(np.where(np.arange(len(slot)) % 7 == 0, None, slot), dtype="Int32")
    fitted = ranker(position_bias="lightgbm").fit(X, y, group=group, position=some_unknown)
    assert fitted.position_bias_applied_ == "lightgbm"
    assert fitted.model_to_string() != corrected.model_to_string()


def test_propensity_weights(log, uncorrected):
    X, y, slot, _, group = log
    propensity = 1.0 / (1 + slot)
    weighted = ranker(position_bias="propensity").fit(X, y, group=group, propensity=propensity)
    assert weighted.position_bias_applied_ == "propensity"
    assert not np.array_equal(weighted.predict(X), uncorrected.predict(X))
    with pytest.raises(ValueError, match=r"propensity must be in \(0, 1\] or missing; 2 bad.*row 0: 0.0.*row 1: 1.5"):
        ranker(position_bias="propensity").fit(X, y, group=group, propensity=np.r_[0.0, 1.5, propensity[2:]])
    floored = ranker(position_bias="propensity", propensity_floor=1.0).fit(X, y, group=group, propensity=propensity)
    assert floored.model_to_string().split("parameters:")[0] == uncorrected.model_to_string().split("parameters:")[0]


def test_the_unused_input_of_another_setting_changes_nothing(log, uncorrected):
    X, y, slot, _, group = log
    fitted = ranker().fit(X, y, group=group, position=slot, propensity=1.0 / (1 + slot))
    assert fitted.position_bias_applied_ == "none"
    assert fitted.model_to_string() == uncorrected.model_to_string()
