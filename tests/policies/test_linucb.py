"""Disjoint LinUCB: A and b after a few updates, the UCB score, warm refits, persistence."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.config.policy import LinUCBSettings
from models.linucb import LinUCB, refit

NOW = datetime(2026, 2, 2, tzinfo=UTC)
SETTINGS = LinUCBSettings(alpha=1.0, ridge=1.0, context_features=("device",))


def _imps(rows: list[tuple[str, str | None, float, float]]) -> pd.DataFrame:
    """(item, device, hours before NOW, success)."""
    return pd.DataFrame({
        "item_id": [r[0] for r in rows], "device": [r[1] for r in rows],
        "ts": [NOW - timedelta(hours=r[2]) for r in rows], "success": [r[3] for r in rows],
    })


THREE = [("a", "mobile", 3, 1.0), ("a", "desktop", 2, 0.0), ("a", "mobile", 1, 1.0)]


def test_a_and_b_after_three_updates():
    model = refit(None, _imps(THREE), SETTINGS, NOW)
    assert model.encoding.vocab == {"device": ["desktop", "mobile"]}  # x = [1, desktop, mobile]
    assert model.a[0].tolist() == [[4, 1, 2], [1, 2, 0], [2, 0, 3]]  # I + 2*[1,0,1][1,0,1]' + [1,1,0][1,1,0]'
    assert model.b[0].tolist() == [2, 0, 2]


def test_ucb_score_by_hand():
    model = refit(None, _imps(THREE), SETTINGS, NOW)
    # A^-1 = adj(A)/13; theta = [4, -2, 6]/13; x = [1, 0, 1]: mean 10/13, variance 5/13
    score = model.scores({"device": "mobile"}, ["a"])[0]
    assert score == pytest.approx(10 / 13 + math.sqrt(5 / 13))
    unseen = model.scores({"device": "mobile"}, ["zzz"])[0]
    assert unseen == pytest.approx(math.sqrt(2.0))  # A = I, b = 0, |x|^2 = 2


def test_refit_in_two_steps_equals_one_step_and_extends_the_encoding():
    one = refit(None, _imps(THREE), SETTINGS, NOW)
    first = refit(None, _imps(THREE[:1]), SETTINGS, NOW - timedelta(hours=2, minutes=30))
    assert first.encoding.vocab == {"device": ["mobile"]} and first.a.shape == (1, 2, 2)
    two = refit(first, _imps(THREE), SETTINGS, NOW)  # the first row is not counted twice
    assert two.encoding.vocab == {"device": ["mobile", "desktop"]}  # new value appended
    perm = [0, 2, 1]  # two's dims [bias, mobile, desktop] -> one's [bias, desktop, mobile]
    assert np.allclose(two.a[0][np.ix_(perm, perm)], one.a[0])
    assert np.allclose(two.b[0][perm], one.b[0])
    assert two.scores({"device": "desktop"}, ["a"]) == pytest.approx(one.scores({"device": "desktop"}, ["a"]))


def test_select_prefers_the_better_arm_and_unknown_values_encode_as_zero():
    rows = [("good", "tv", 1, 1.0)] * 30 + [("bad", "tv", 1, 0.0)] * 30
    model = refit(None, _imps(rows), LinUCBSettings(alpha=0.1, context_features=("device",)), NOW)
    assert model.select({"device": "tv"}, ["bad", "good"], k=1) == ["good"]
    assert model.encoding.transform(pd.DataFrame({"device": ["radio", None]})).tolist() == [[1, 0], [1, 0]]


def test_raw_reward_target():
    frame = _imps(THREE).assign(reward=[5.0, -1.0, 18.0])
    model = refit(None, frame, LinUCBSettings(context_features=("device",), reward="reward"), NOW)
    assert model.b[0].tolist() == [22.0, -1.0, 23.0]


def test_save_load_round_trip(tmp_path):
    model = refit(None, _imps(THREE + [("b", None, 1, 0.0)]), SETTINGS, NOW)
    model.save(tmp_path / "lin")
    back = LinUCB.load(tmp_path / "lin")
    assert back.arms == model.arms and back.encoding == model.encoding and back.settings == model.settings
    assert np.array_equal(back.a, model.a) and np.array_equal(back.b, model.b)
    assert back.data_end == model.data_end


def test_changed_features_or_missing_columns_are_refused():
    model = refit(None, _imps(THREE), SETTINGS, NOW)
    with pytest.raises(ValueError, match="context_features changed"):
        refit(model, _imps(THREE), LinUCBSettings(context_features=("device", "mood")), NOW)
    with pytest.raises(ValueError, match="success"):
        refit(None, _imps(THREE).drop(columns=["success"]), SETTINGS, NOW)


def test_inconsistent_state_is_refused_at_construction():
    model = refit(None, _imps(THREE), SETTINGS, NOW)
    with pytest.raises(ValueError, match=r"A of shape \(1, 3, 3\)"):
        LinUCB(model.arms, model.a[:, :2, :2], model.b, model.encoding, SETTINGS, NOW, None)


def test_refit_with_nothing_new_keeps_the_previous_table():
    first = refit(None, _imps(THREE), SETTINGS, NOW)
    again = refit(first, _imps(THREE), SETTINGS, NOW)  # every row already counted
    assert np.array_equal(again.a, first.a) and np.array_equal(again.b, first.b)
