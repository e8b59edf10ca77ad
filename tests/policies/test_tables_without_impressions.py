"""Tables on logs without impressions: trials from the log's own events, or a stated skip; never a crash."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pytest

from core.settings import Settings
from models.rewards import exposure_events, has_logged_impressions, reward_frames
from rankloop.simulator import SimulationConfig, simulate
from rankloop.tables import (
    NO_ACTIONS,
    NO_TRIALS,
    Judged,
    Skipped,
    judge_bandit,
    judge_linucb,
    judge_qtable,
    table_frames,
)
from registry.gate import policy_gate

from .conftest import frame, response

END = datetime(2026, 3, 16, tzinfo=UTC)
SETTINGS = Settings()


def _simulated(layout: str) -> pd.DataFrame:
    config = SimulationConfig(n_users=150, n_items=40, weeks=3, end=END, seed=9, log_layout=layout)
    return pa.concat_tables(list(simulate(config))).to_pandas()


@pytest.fixture(scope="module")
def no_impressions() -> pd.DataFrame:
    return _simulated("no_impressions")


def test_exposures_are_the_first_event_of_each_user_item_request():
    rows = [response("u1", "a", None, 0, "view", session_id="s1"), response("u1", "a", None, 1, "click", session_id="s1"),
            response("u1", "b", None, 2, "view", session_id="s1"), response("u1", "a", None, 3000, "purchase"),
            response("u2", "a", "q7", 5, "click")]
    events = frame(rows)
    out = exposure_events(events)
    shown = out[out["event_type"] == "impression"].reset_index(drop=True)
    assert list(zip(shown["user_id"], shown["item_id"], shown["request_id"], strict=True)) == [
        ("u1", "a", "u1|s:s1"), ("u1", "b", "u1|s:s1"), ("u2", "a", "q7"), ("u1", "a", "u1|d:2026-01-07")]
    assert list(shown["ts"]) == list(events["ts"].iloc[[0, 2, 4, 3]])  # in time order
    assert len(out) == len(events) + 4 and "impression" not in set(events["event_type"])  # input untouched
    imps, _ = reward_frames(out, SETTINGS.rewards)
    clicked = imps.set_index(["request_id", "item_id"])["clicked"]
    assert clicked[("u1|s:s1", "a")] and not clicked[("u1|s:s1", "b")] and clicked[("q7", "a")]


def test_a_slate_log_keeps_its_impressions_as_trials():
    events = _simulated("slates")
    frames = table_frames(events, SETTINGS)
    imps, slates = reward_frames(events, SETTINGS.rewards)
    assert frames.trials == "impressions"
    pd.testing.assert_frame_equal(frames.imps, imps)
    pd.testing.assert_frame_equal(frames.slates, slates)


def test_bandit_and_linucb_fit_on_exposures_and_are_held_not_promoted(no_impressions):
    assert not has_logged_impressions(no_impressions)
    frames = table_frames(no_impressions, SETTINGS)
    assert frames.trials == "exposures" and len(frames.imps) > 1000
    for judge in (judge_bandit, judge_linucb):
        judged = judge(frames.imps, None, None, SETTINGS, END)
        assert isinstance(judged, Judged) and judged.metrics["trials_logged"] == 0.0
        assert judged.ope.verdict == "cannot_evaluate" and "propensit" in judged.ope.reason
        decision = policy_gate(judged.kind, judged.evidence, None, settings=SETTINGS.gate)
        assert decision.verdict.value == "HOLD" and not decision.passed
    assert len(judge_bandit(frames.imps, None, None, SETTINGS, END).final.items) == frames.imps["item_id"].nunique()


def test_qtable_is_skipped_without_actions_and_fit_from_exposures_with_them(no_impressions):
    frames = table_frames(no_impressions, SETTINGS)
    skipped = judge_qtable(frames.slates, None, None, SETTINGS, END)
    assert skipped == Skipped("qtable", NO_ACTIONS)
    assert skipped.summary()["headline"].startswith("skipped: no slates with an action_id")
    with_actions = no_impressions.assign(action_id=pd.Series(no_impressions.index % 27, dtype="Int32"))
    judged = judge_qtable(table_frames(with_actions, SETTINGS).slates, None, None, SETTINGS, END)
    assert isinstance(judged, Judged) and judged.final.steps > 0


def test_an_empty_log_skips_every_table():
    empty = _simulated("slates").iloc[:0]
    frames = table_frames(empty, SETTINGS)
    assert [judge(frames.imps, None, None, SETTINGS, END).reason for judge in (judge_bandit, judge_linucb)] == [NO_TRIALS] * 2
    assert judge_qtable(frames.slates, None, None, SETTINGS, END) == Skipped("qtable", NO_TRIALS)


def test_a_ratings_only_log_fits_bandits_from_ratings():
    ratings = _simulated("ratings")
    frames = table_frames(ratings, SETTINGS)
    days = ratings.assign(day=ratings["ts"].dt.strftime("%Y-%m-%d"))
    assert frames.trials == "exposures" and len(frames.imps) == len(days.drop_duplicates(["user_id", "item_id", "day"]))
    five = frames.imps["reward"] == SETTINGS.rewards.rating[5] + SETTINGS.rewards.view_without_click
    assert five.any() and frames.imps.loc[five, "success"].all()
    assert isinstance(judge_bandit(frames.imps, None, None, SETTINGS, END), Judged)
