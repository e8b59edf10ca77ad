"""Tabular Q-learning: action table, state codes, one update by hand, warm start, coverage, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.config.policy import QLearningSettings
from models.qlearning import (
    N_ACTIONS,
    QTable,
    action_params,
    build_steps,
    encode_state,
    encode_states,
    refit,
    state_space_size,
)

NOW = datetime(2026, 2, 2, tzinfo=UTC)
TRAITS = {"trait_openness": 0.9, "trait_conscientiousness": 0.5, "trait_extraversion": 0.1,
          "trait_agreeableness": 0.5, "trait_neuroticism": 0.2}
CTX_A = {**TRAITS, "content_type": "music", "mood": "happy", "time_of_day": "evening"}
CTX_B = {**TRAITS, "content_type": "video", "mood": "sad", "time_of_day": "night"}
SETTINGS = QLearningSettings(alpha=0.5, gamma=0.9)


def _slates(rows: list[tuple[str, str, dict, int | None, float, float]]) -> pd.DataFrame:
    """(user, request, context, action, reward, hours before NOW)."""
    return pd.DataFrame([
        {"user_id": u, "request_id": r, **ctx, "action_id": a, "reward": rew, "ts": NOW - timedelta(hours=h)}
        for u, r, ctx, a, rew, h in rows
    ])


def test_action_params_cover_the_27_combinations():
    assert action_params(0) | {} == {
        "action": 0, "energy": "low", "diversity": "focused", "novelty": "popular", "min_energy": 0.1,
        "max_energy": 0.4, "valence": 0.6, "genre_count": 2, "popularity_min": 60, "popularity_max": 100,
        "exploration_rate": 0.1,
    }
    assert {(p["energy"], p["diversity"], p["novelty"]) for p in map(action_params, range(N_ACTIONS))} == {
        (e, d, n) for e in ("low", "medium", "high") for d in ("focused", "balanced", "diverse")
        for n in ("popular", "balanced", "exploratory")
    }
    assert action_params(26)["energy"] == "high" and action_params(26)["novelty"] == "exploratory"
    with pytest.raises(ValueError, match=r"\[0, 26\], got 27"):
        action_params(27)
    with pytest.raises(TypeError, match="int"):
        action_params(1.5)


def test_state_codes_are_distinct_and_unknowns_have_their_own_slot():
    s = QLearningSettings()
    frame = pd.DataFrame([CTX_A, CTX_B, {**CTX_A, "trait_openness": None}, {**CTX_A, "mood": "weird"}])
    codes = encode_states(frame, s)
    assert len(set(codes.tolist())) == 4
    assert codes.min() >= 0 and codes.max() < state_space_size(s)
    assert state_space_size(s) == 4**5 * 6 * 8 * 5
    assert encode_state(CTX_A, s) == codes[0]
    assert encode_state({**CTX_A, "trait_openness": 1.0}, s) == codes[0]  # 0.9 and 1.0 share the top bin


def test_one_update_step_with_warm_start_by_hand():
    previous = refit(None, _slates([("u9", "r0", CTX_B, 2, 6.0, 10)]), SETTINGS, NOW - timedelta(hours=5))
    s_b = encode_state(CTX_B, SETTINGS)
    assert previous.q[previous._rows(np.array([s_b]))[0], 2] == pytest.approx(0.5 * 6.0)  # terminal step
    table = refit(previous, _slates([("u1", "r1", CTX_A, 4, 1.0, 2), ("u1", "r2", CTX_B, 7, 2.0, 1)]), SETTINGS, NOW)
    row_a, row_b = table._rows(np.array([encode_state(CTX_A, SETTINGS), s_b]))
    assert table.q[row_a, 4] == pytest.approx(0.5 * (1.0 + 0.9 * 3.0))  # bootstraps on the warm Q(s_b, 2)
    assert table.q[row_b, 7] == pytest.approx(0.5 * 2.0)  # last slate of the episode: terminal
    assert table.q[row_b, 2] == pytest.approx(3.0)  # warm value kept
    assert table.episodes == 2 and table.steps == 3
    assert table.best_action(CTX_A) == 4 and table.best_action(CTX_B) == 2


def test_unvisited_state_gets_the_default_action_and_epsilon_greedy_probabilities():
    table = refit(None, _slates([("u1", "r1", CTX_A, 4, 1.0, 2)]), QLearningSettings(default_action=13), NOW)
    unseen = encode_state({**CTX_A, "mood": "sad"}, table.settings)
    assert table.best_action(unseen) == 13
    probs = table.policy_probabilities(np.array([encode_state(CTX_A, table.settings), unseen]), epsilon=0.27)
    assert probs.shape == (2, 27) and probs.sum(axis=1) == pytest.approx([1, 1])
    assert probs[0, 4] == pytest.approx(0.73 + 0.01) and probs[1, 13] == pytest.approx(0.74)
    assert probs[0, 0] == pytest.approx(0.01)


def test_epsilon_decays_over_episodes_to_its_floor():
    s = QLearningSettings(epsilon_start=0.3, epsilon_end=0.05, epsilon_decay=0.5)
    one = refit(None, _slates([("u1", "r1", CTX_A, 4, 1.0, 2)]), s, NOW)
    assert one.epsilon == pytest.approx(0.15)
    many = refit(None, _slates([(f"u{i}", f"r{i}", CTX_A, 4, 1.0, 2) for i in range(10)]), s, NOW)
    assert many.epsilon == pytest.approx(0.05)


def test_coverage_reports_states_and_actions():
    table = refit(None, _slates([("u1", "r1", CTX_A, 4, 1.0, 3), ("u1", "r2", CTX_A, 5, 1.0, 2),
                                 ("u2", "r3", CTX_B, 4, 0.0, 1)]), SETTINGS, NOW)
    cov = table.coverage()
    assert cov["states_visited"] == 2 and cov["state_action_pairs_visited"] == 3
    assert cov["actions_visited"] == 2 and cov["visits_per_action"][4] == 2
    assert cov["state_coverage"] == pytest.approx(2 / state_space_size(SETTINGS))
    assert cov["action_coverage_in_visited_states"] == pytest.approx(3 / 54)
    assert cov["steps"] == 3 and cov["episodes"] == 2


def test_build_steps_links_next_state_per_user_and_skips_slates_without_action():
    steps = build_steps(_slates([("u1", "r2", CTX_B, 7, 2.0, 1), ("u1", "r1", CTX_A, 4, 1.0, 2),
                                 ("u1", "r0", CTX_A, None, 9.0, 3), ("u2", "r3", CTX_A, 1, 0.5, 2)]), SETTINGS)
    assert steps["request_id"].tolist() == ["r1", "r2", "r3"]
    assert steps["done"].tolist() == [False, True, True]
    assert steps["next_state"].iloc[0] == encode_state(CTX_B, SETTINGS)
    with pytest.raises(ValueError, match="action_id"):
        build_steps(_slates([("u1", "r1", CTX_A, 30, 1.0, 2)]), SETTINGS)


def test_save_load_round_trip(tmp_path):
    table = refit(None, _slates([("u1", "r1", CTX_A, 4, 1.0, 2), ("u1", "r2", CTX_B, 7, -2.0, 1)]), SETTINGS, NOW)
    table.save(tmp_path / "q")
    frame = pd.read_parquet(tmp_path / "q" / "qtable.parquet")
    assert list(frame.columns) == ["state", "action", "q", "visits"] and len(frame) == 2
    back = QTable.load(tmp_path / "q")
    assert np.array_equal(back.states, table.states) and np.array_equal(back.q, table.q)
    assert np.array_equal(back.visits, table.visits) and back.settings == table.settings
    assert (back.episodes, back.steps, back.data_end) == (table.episodes, table.steps, table.data_end)
    import json
    meta = json.loads((tmp_path / "q" / "qtable.json").read_text())
    assert len(meta["actions"]) == 27 and meta["coverage"]["steps"] == 2


def test_changed_discretisation_refuses_warm_start():
    table = refit(None, _slates([("u1", "r1", CTX_A, 4, 1.0, 2)]), SETTINGS, NOW)
    with pytest.raises(ValueError, match="discretisation changed"):
        refit(table, _slates([("u1", "r9", CTX_A, 4, 1.0, 0)]), QLearningSettings(trait_bins=4), NOW)


def test_many_steps_replay():
    rng = np.random.default_rng(0)
    n = 20_000
    frame = pd.DataFrame({
        "user_id": rng.integers(0, 500, n).astype(str), "request_id": np.arange(n).astype(str),
        "ts": NOW - pd.to_timedelta(rng.integers(1, 10_000, n), unit="s"), "action_id": rng.integers(0, 27, n),
        "reward": rng.normal(size=n), "content_type": "music", "mood": rng.choice(["happy", "sad"], n),
        "time_of_day": "night", **{k: rng.random(n) for k in TRAITS},
    })
    table = refit(None, frame, SETTINGS, NOW)
    assert table.steps == n and table.visits.sum() == n and np.isfinite(table.q).all()


def test_step_probabilities_and_pdwis_of_a_new_table():
    from models.ope import pdwis
    from models.qlearning import replay_metrics, step_probabilities

    logs = _slates([("u1", "r1", CTX_A, 4, 1.0, 3), ("u1", "r2", CTX_B, 7, 2.0, 2), ("u2", "r3", CTX_A, 4, 0.0, 1)])
    old = refit(None, _slates([("u0", "r0", CTX_A, 4, 5.0, 9)]), SETTINGS, NOW - timedelta(hours=5))
    new = refit(old, logs, SETTINGS, NOW)
    steps = build_steps(logs, SETTINGS)
    pscore = step_probabilities(old, steps, epsilon=0.27)
    assert pscore.tolist() == pytest.approx([0.74, 0.01, 0.74])  # old table: 4 is greedy in CTX_A; CTX_B unseen -> 13
    target = step_probabilities(new, steps, epsilon=0.0)
    assert target.tolist() == [1.0, 1.0, 1.0]
    value = pdwis(steps["user_id"], steps["reward"], pscore, target, gamma=1.0)
    assert value == pytest.approx(0.5 + 2.0)  # step 0: mean(1, 0); step 1: 2
    metrics = replay_metrics(new, logs.assign(n_items=2, likes=[1, 0, 1]))
    assert metrics["average_reward"] == pytest.approx(1.0) and metrics["like_rate"] == pytest.approx(2 / 6)
    assert metrics["coverage_steps"] == 4.0


def test_inconsistent_table_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"shape \(2, 27\)"):
        QTable(np.array([1, 2]), np.zeros((2, 26)), np.zeros((2, 27)), SETTINGS, 0, 0, NOW, None)
    with pytest.raises(ValueError, match="sorted and unique"):
        QTable(np.array([2, 1]), np.zeros((2, 27)), np.zeros((2, 27)), SETTINGS, 0, 0, NOW, None)
