"""Fitted Q iteration: the backup on a toy chain, generalisation the table lacks, the Q table's verbs,
native persistence, invalid inputs, and the weekly Q-table judgement applied to it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from core.config.policy import QLearningSettings
from core.schema import TRAIT_COLUMNS
from models.fqi import (
    ACTION_FEATURES,
    STATE_FEATURES,
    FittedQ,
    FQISettings,
    action_features,
    fitted_q,
    q_matrix,
    state_digits,
)
from models.qlearning import N_ACTIONS, encode_state, encode_states, refit

NOW = datetime(2026, 2, 2, tzinfo=UTC)
QSETTINGS = QLearningSettings()
FAST = FQISettings(iterations=3, n_estimators=60, min_child_samples=20, num_threads=1)


def test_two_backups_on_a_chain_give_the_discounted_values():
    """s0 --a--> s1 (reward a) --a--> end (reward 2 for a = 0, else 0); every transition 100 times."""
    s0_rows = [([0.0], a, float(a), [1.0], False) for a in (0, 1)]
    s1_rows = [([1.0], a, 2.0 if a == 0 else 0.0, [1.0], True) for a in (0, 1)]
    rows = (s0_rows + s1_rows) * 100
    state, action, reward, nxt, done = (np.array([r[i] for r in rows]) for i in range(5))
    actions = np.array([[0.0], [1.0]])
    settings = FQISettings(iterations=2, n_estimators=200, min_child_samples=5, num_threads=1)
    booster = fitted_q(state, action, reward, nxt, done, actions, settings, feature_names=["s", "a"])
    q = q_matrix(booster, np.array([[0.0], [1.0]]), actions)
    np.testing.assert_allclose(q, [[0.0 + 0.9 * 2, 1.0 + 0.9 * 2], [2.0, 0.0]], atol=0.02)
    one = fitted_q(state, action, reward, nxt, done, actions, settings.model_copy(update={"iterations": 1}),
                   feature_names=["s", "a"])
    np.testing.assert_allclose(q_matrix(one, np.array([[0.0]]), actions), [[0.0, 1.0]], atol=0.02)  # rewards only


def _random_slates(n: int, seed: int) -> pd.DataFrame:
    """Uniformly logged actions; reward 1 when the action's energy level equals the user's extraversion bin."""
    rng = np.random.default_rng(seed)
    traits = {c: rng.random(n) for c in TRAIT_COLUMNS}
    action = rng.integers(0, N_ACTIONS, n)
    reward = (action // 9 == np.floor(traits["trait_extraversion"] * 3)).astype(float) + rng.normal(0, 0.1, n)
    return pd.DataFrame({"user_id": rng.integers(0, n // 5, n).astype(str), "request_id": np.arange(n).astype(str),
                         "ts": NOW - pd.to_timedelta(rng.integers(60, 86_400 * 20, n), unit="s"), "action_id": action,
                         "reward": reward, "content_type": rng.choice(["music", "video", "article"], n),
                         "mood": rng.choice(["happy", "sad", "stressed"], n),
                         "time_of_day": rng.choice(["morning", "night"], n), **traits})


@pytest.fixture(scope="module")
def logs() -> pd.DataFrame:
    return _random_slates(4000, seed=0)


@pytest.fixture(scope="module")
def fitted(logs) -> FittedQ:
    return FittedQ(settings=FAST, qlearning=QSETTINGS).fit(logs, NOW)


def test_it_generalises_to_states_the_table_never_visited(fitted, logs):
    fresh = _random_slates(600, seed=1)
    states = encode_states(fresh, QSETTINGS)
    wanted = np.floor(fresh["trait_extraversion"].to_numpy() * 3)
    table = refit(None, logs, QSETTINGS, NOW)
    unvisited = ~np.isin(states, table.states[table.visits.sum(axis=1) > 0])
    assert unvisited.sum() >= 150  # 4000 slates over the 4374 states these contexts can have
    fqi_right = (fitted.best_actions(states) // 9 == wanted)[unvisited].mean()
    table_right = (table.best_actions(states) // 9 == wanted)[unvisited].mean()
    assert fqi_right > 0.9 and fqi_right > table_right + 0.4, (fqi_right, table_right)


def test_it_offers_the_q_tables_verbs(fitted, logs):
    states = encode_states(logs.head(50), QSETTINGS)
    q = fitted.q_values(states)
    assert q.shape == (50, N_ACTIONS) and np.isfinite(q).all()
    np.testing.assert_array_equal(fitted.best_actions(states), q.argmax(axis=1))
    context = logs.iloc[0][[*TRAIT_COLUMNS, "content_type", "mood", "time_of_day"]].to_dict()
    assert fitted.best_action(context) == fitted.best_action(encode_state(context, QSETTINGS)) == q[0].argmax()
    probs = fitted.policy_probabilities(states, epsilon=0.27)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs.max(axis=1) == pytest.approx(0.73 + 0.01) and probs.min() == pytest.approx(0.01)
    assert fitted.policy_probabilities(states).max() == pytest.approx(1 - 0.05 + 0.05 / 27)  # the table's floor
    assert fitted.action_params(13)["energy"] == "medium"
    assert fitted.episodes_ == logs["user_id"].nunique() and fitted.steps_ == len(logs)


def test_state_digits_invert_the_state_code(logs):
    states = encode_states(logs, QSETTINGS)
    digits = state_digits(states, QSETTINGS)
    assert digits.shape == (len(logs), len(STATE_FEATURES))
    bins = np.floor(logs[list(TRAIT_COLUMNS)].to_numpy() * QSETTINGS.trait_bins)
    np.testing.assert_array_equal(digits[:, :5], bins)
    assert action_features().shape == (N_ACTIONS, len(ACTION_FEATURES))
    assert action_features()[13].tolist() == [1, 1, 1, 13]


def test_it_saves_native_files_and_loads_the_same_policy(fitted, logs, tmp_path):
    directory = fitted.save(tmp_path / "fqi")
    assert sorted(p.name for p in directory.iterdir()) == ["fqi.json", "fqi.txt"]
    lgb.Booster(model_str=(directory / "fqi.txt").read_text())  # LightGBM's own text format
    meta = json.loads((directory / "fqi.json").read_text())
    assert meta["kind"] == "fqi" and meta["settings"]["iterations"] == 3 and len(meta["actions"]) == N_ACTIONS
    loaded = FittedQ.load(directory)
    states = encode_states(logs, QSETTINGS)
    np.testing.assert_array_equal(loaded.q_values(states), fitted.q_values(states))
    assert loaded.qlearning == QSETTINGS and loaded.data_end_ == fitted.data_end_


def test_invalid_inputs_are_refused_with_every_problem():
    with pytest.raises(ValueError, match="not fitted"):
        FittedQ().best_actions(np.array([1]))
    with pytest.raises(ValueError, match="timezone-aware"):
        FittedQ().fit(_random_slates(10, 0), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="nothing to fit"):
        FittedQ().fit(_random_slates(10, 0), NOW - timedelta(days=400))
    with pytest.raises(ValueError) as error:
        fitted_q(np.zeros((4, 1)), np.array([0, 1, 2, 5]), np.array([0.0, np.nan, 1.0]), np.zeros((4, 2)),
                 np.zeros(4, bool), np.zeros((3, 1)), FAST, feature_names=["s"])
    message = str(error.value)
    for part in ("reward has 3 rows, state_x has 4", "next_x has (2,) columns", "1 feature names for 1 state + 1",
                 "actions must be in [0, 2], found 0..5", "1 reward(s) are NaN"):
        assert part in message, part
    with pytest.raises(ValueError, match="iterations"):
        FQISettings(iterations=0)


def test_the_weekly_q_table_judgement_judges_it_the_same_way():
    """``judge_qtable`` and the fitted-Q comparison share ``step_policy_ope``."""
    from core.settings import Settings
    from models.qlearning import build_steps
    from rankloop.tables import judge_qtable, step_policy_ope

    settings = Settings(ope={"min_ess": 5.0, "bootstrap_samples": 50})
    slates = _random_slates(3000, seed=2)
    end = NOW
    test_start = pd.Timestamp(end - timedelta(days=settings.ranker.test_days))
    pre, test = slates[slates["ts"] < test_start], slates[slates["ts"] >= test_start]
    judged = judge_qtable(slates.assign(n_items=1, likes=0), None, None, settings, end)
    table = refit(None, pre, settings.qlearning, end)
    steps = build_steps(test, settings.qlearning)
    again = step_policy_ope(table, steps, settings)
    assert judged.ope == again and judged.ope.verdict == "ok"
    fqi = step_policy_ope(FittedQ(settings=FAST, qlearning=settings.qlearning).fit(pre, end), steps, settings)
    assert fqi.verdict == "ok" and fqi.n == again.n
    assert fqi.estimates["pdwis"] > again.estimates["pdwis"]  # it learnt the energy rule; the table could not
