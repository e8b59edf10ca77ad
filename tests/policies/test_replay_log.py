"""The Q table's replay log (``models.qlearning.ReplayLog``): the window's steps sorted once, each refit a
selection of them. Every table, transition and OPE figure equals what replaying copies of the slates
gave (the implementation before it, kept here as the reference), to the last bit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.config.policy import QLearningSettings
from core.config.ranker import split_starts
from core.schema import TRAIT_COLUMNS
from core.settings import Settings
from models.qlearning import (
    N_ACTIONS,
    QTable,
    ReplayLog,
    _grown,
    _q_updates,
    build_steps,
    compact_slates,
    refit,
    replay_metrics,
)

END = datetime(2026, 2, 2, tzinfo=UTC)
SETTINGS = QLearningSettings()


def _reference_refit(previous: QTable | None, slates: pd.DataFrame, settings: QLearningSettings,
                     now: datetime) -> QTable:
    """``models.qlearning.refit`` as it was: the kept slates copied, sorted and linked by build_steps."""
    ts = pd.to_datetime(slates["ts"], utc=True)
    keep = ts <= pd.Timestamp(now)
    if previous is not None and previous.data_end is not None:
        keep &= ts > pd.Timestamp(previous.data_end)
    steps = build_steps(slates.loc[keep].assign(ts=ts[keep]), settings)
    states, q, visits = _grown(previous, np.r_[steps["state"].to_numpy(), steps["next_state"].to_numpy()])
    s = np.searchsorted(states, steps["state"].to_numpy())
    s2 = np.searchsorted(states, steps["next_state"].to_numpy())
    a = steps["action"].to_numpy()
    _q_updates(q, s, a, steps["reward"].to_numpy(), s2, steps["done"].to_numpy(), settings.alpha, settings.gamma)
    np.add.at(visits, (s, a), 1)
    episodes = (previous.episodes if previous else 0) + int(steps["user_id"].nunique())
    end = steps["ts"].max() if len(steps) else None
    if previous is not None and previous.data_end is not None and (end is None or end < pd.Timestamp(previous.data_end)):
        end = pd.Timestamp(previous.data_end)
    return QTable(states, q, visits, settings, episodes, (previous.steps if previous else 0) + len(steps), now,
                  pd.Timestamp(end).to_pydatetime() if end is not None else None)


def _slates(n: int, seed: int, *, numeric_users: bool = False) -> pd.DataFrame:
    """Slates in no particular order, with many equal times within a user (whole days), slates without an
    action, missing traits and contexts outside the vocabulary."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, max(n // 8, 2), n)
    action = pd.array(rng.integers(0, N_ACTIONS, n), dtype="Int32")
    action[rng.random(n) < 0.1] = pd.NA
    traits = {c: np.where(rng.random(n) < 0.05, np.nan, rng.random(n)) for c in TRAIT_COLUMNS}
    frame = pd.DataFrame({
        "request_id": rng.permutation(n).astype(str), "user_id": users if numeric_users else [f"u{u}" for u in users],
        "ts": END - pd.to_timedelta(rng.integers(1, 21, n), unit="D"), "action_id": action,
        "content_type": rng.choice(["music", "video", "podcast", None], n), "mood": rng.choice(["happy", "sad"], n),
        "time_of_day": rng.choice(["morning", "night", "dusk"], n), **traits,
        "reward": rng.normal(0, 1, n).round(3), "n_items": rng.integers(1, 9, n), "likes": rng.integers(0, 3, n),
    })
    return frame.astype({"request_id": "str", "ts": "datetime64[us, UTC]"})


def _assert_same_table(a: QTable, b: QTable) -> None:
    np.testing.assert_array_equal(a.states, b.states)
    assert a.q.tobytes() == b.q.tobytes()
    np.testing.assert_array_equal(a.visits, b.visits)
    assert (a.episodes, a.steps, a.data_end, a.fitted_at) == (b.episodes, b.steps, b.data_end, b.fitted_at)


@pytest.mark.parametrize("numeric_users", [False, True])
def test_refits_from_the_log_are_the_refits_of_the_slates_to_the_last_bit(numeric_users: bool) -> None:
    slates = _slates(3000, seed=5, numeric_users=numeric_users)
    assert slates.duplicated(["user_id", "ts"]).sum() > 300  # ties the replay order must keep
    champion = _reference_refit(None, _slates(400, seed=6, numeric_users=numeric_users), SETTINGS, END - timedelta(days=9))
    assert champion.data_end is not None and champion.data_end > END - timedelta(days=20)
    log = ReplayLog.of(slates, SETTINGS)
    for previous in (None, champion):
        for now in (END, END - timedelta(days=4)):
            expected = _reference_refit(previous, slates, SETTINGS, now)
            _assert_same_table(refit(previous, slates, SETTINGS, now), expected)
            _assert_same_table(refit(previous, log, SETTINGS, now), expected)
    compact = compact_slates(slates, SETTINGS)
    assert "content_type" not in compact and "state" in compact
    _assert_same_table(refit(champion, compact, SETTINGS, END), _reference_refit(champion, slates, SETTINGS, END))


def test_a_selection_s_transitions_are_build_steps_of_those_slates() -> None:
    slates = _slates(2000, seed=8)
    log = ReplayLog.of(compact_slates(slates, SETTINGS), SETTINGS)
    start = END - timedelta(days=7)
    ts = pd.to_datetime(slates["ts"], utc=True)
    for selected, mask in ((log, np.ones(len(slates), dtype=bool)),
                           (log.between(since=start, before=END), (ts >= start) & (ts < END)),
                           (log.between(before=start), ts < start)):
        expected = build_steps(slates[np.asarray(mask)], SETTINGS).drop(columns="request_id")
        pd.testing.assert_frame_equal(selected.steps(), expected, check_dtype=False)
        assert selected.steps()["done"].sum() == expected["user_id"].nunique()


def test_the_judge_over_compacted_slates_is_the_judge_as_it_was() -> None:
    """judge_qtable over the window's compacted slates (what the tables stage passes) gives the same
    tables, OPE estimates, intervals and metrics as the former judge over the slates themselves."""
    from rankloop.tables import judge_qtable, step_policy_ope

    settings = Settings(ope={"min_ess": 1})
    slates = _slates(4000, seed=11).sort_values(["ts", "request_id"], kind="stable").reset_index(drop=True)
    champion = _reference_refit(None, _slates(500, seed=12), settings.qlearning, END - timedelta(days=12))
    test_start = pd.Timestamp(split_starts(END, valid_days=0, test_days=settings.ranker.test_days)[1])
    ts = pd.to_datetime(slates["ts"], utc=True)
    pre, test = slates[ts < test_start], slates[(ts >= test_start) & (ts < pd.Timestamp(END))]
    challenger = _reference_refit(champion, pre, settings.qlearning, END)
    final = _reference_refit(champion, slates, settings.qlearning, END)
    steps = build_steps(test, settings.qlearning)
    ope, champion_ope = step_policy_ope(challenger, steps, settings), step_policy_ope(champion, steps, settings)
    for given in (slates, compact_slates(slates, settings.qlearning)):
        judged = judge_qtable(given, champion, 3, settings, END)
        _assert_same_table(judged.final, final)
        assert judged.ope.verdict == ope.verdict == "ok"
        assert judged.ope.estimates == ope.estimates and judged.ope.intervals == ope.intervals
        assert judged.champion_estimate == champion_ope.estimates["pdwis"]
        assert judged.metrics == replay_metrics(final, slates)


def test_slates_without_a_user_or_with_an_action_out_of_range_are_refused() -> None:
    slates = _slates(50, seed=3)
    with pytest.raises(ValueError, match="without a user_id"):
        ReplayLog.of(slates.assign(user_id=slates["user_id"].where(slates.index != 4)), SETTINGS)
    with pytest.raises(ValueError, match=r"action_id must be in \[0, 26\], found \[27\]"):
        ReplayLog.of(slates.assign(action_id=slates["action_id"].where(slates.index != 2, 27)), SETTINGS)
