"""Bandit and Q rewards computed by hand from the seeds' tables."""

from __future__ import annotations

import pandas as pd
import pytest

from core.config.policy import RewardSettings
from models.rewards import impression_rewards, q_item_rewards, q_rewards


def _by_key(frame: pd.DataFrame, column: str) -> dict[tuple[str, str, str], float]:
    return {(r.request_id, r.user_id, r.item_id): getattr(r, column) for r in frame.itertuples()}


def test_impression_rewards_follow_the_table(small_events):
    out = impression_rewards(small_events, RewardSettings())
    assert _by_key(out, "reward") == {
        ("r1", "u1", "a"): 5 + 0.1 * 30 + 10,  # click + dwell + 5 stars
        ("r1", "u1", "b"): -1.0,  # shown, not clicked
        ("r2", "u1", "c"): 5 + 10 - 5,  # click + save + 2 stars
        ("r3", "u2", "a"): -1.0,  # click before the impression and click without request are ignored
    }
    assert _by_key(out, "success") == {
        ("r1", "u1", "a"): True, ("r1", "u1", "b"): False, ("r2", "u1", "c"): True, ("r3", "u2", "a"): False,
    }
    assert {"position", "propensity", "device", "ts"} <= set(out.columns)


def test_success_threshold_moves_the_cut(small_events):
    out = impression_rewards(small_events, RewardSettings(success_threshold=12.0))
    assert out["success"].sum() == 1  # only the 18-point impression


def test_dwell_is_capped(small_events):
    out = impression_rewards(small_events, RewardSettings(dwell_cap_seconds=10.0))
    assert _by_key(out, "reward")[("r1", "u1", "a")] == pytest.approx(5 + 1.0 + 10)


def test_q_rewards_per_item_and_slate(small_events):
    items = q_item_rewards(small_events, RewardSettings())
    assert _by_key(items, "q_reward") == pytest.approx({
        ("r1", "u1", "a"): 1.0 + 0.5 + 0.5,  # like + complete + mood +1
        ("r1", "u1", "b"): -0.3,  # skip
        ("r2", "u1", "c"): -1.0 - 0.5,  # dislike + mood -1
        ("r3", "u2", "a"): 0.8,  # share
    })
    slates = q_rewards(small_events, RewardSettings())
    assert slates["request_id"].tolist() == ["r1", "r3", "r2"]  # time order
    assert slates["reward"].tolist() == pytest.approx([1.7, 0.8, -1.5])
    assert slates["n_items"].tolist() == [2, 1, 1]
    assert slates["likes"].tolist() == [1, 0, 0]
    assert slates["action_id"].tolist() == [4, 4, 7]


def test_events_must_be_a_frame_with_the_needed_columns(small_events):
    with pytest.raises(TypeError, match="DataFrame"):
        impression_rewards(small_events.to_dict(), RewardSettings())
    with pytest.raises(ValueError, match="request_id"):
        impression_rewards(small_events.drop(columns=["request_id"]), RewardSettings())


def test_input_frame_is_not_mutated(small_events):
    before = small_events.copy()
    impression_rewards(small_events, RewardSettings())
    q_rewards(small_events, RewardSettings())
    pd.testing.assert_frame_equal(small_events, before)
