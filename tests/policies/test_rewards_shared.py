"""``reward_frames`` builds the impression frame once for both reward tables: same frames as separately."""

from __future__ import annotations

import pandas.testing as pdt

from core.config.policy import RewardSettings
from models.rewards import impression_rewards, q_rewards, reward_frames


def test_reward_frames_equal_the_separate_functions(small_events):
    settings = RewardSettings(q_like=2.0, q_skip=-0.5)
    imps, slates = reward_frames(small_events, settings)
    pdt.assert_frame_equal(imps, impression_rewards(small_events, settings))
    pdt.assert_frame_equal(slates, q_rewards(small_events, settings))
    assert len(imps) == 4 and len(slates) == 3
