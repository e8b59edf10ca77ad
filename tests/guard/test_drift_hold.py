"""drift.hold_psi: what moved beyond it is named, and it holds what the run would promote (never passes one)."""

from __future__ import annotations

from rankloop.drift import _hold, over_threshold
from rankloop.promotion import Candidate, Status
from registry.decision import Decision, Verdict


def _report(feature_psi: float, event_psi: float, action_psi: float | None, score_psi: float) -> dict:
    return {"features": [{"feature": "item_click_rate_7d", "psi": feature_psi}, {"feature": "ctx_hour", "psi": 0.01}],
            "event_mix": {"psi": event_psi}, "action_mix": {"psi": action_psi}, "scores": {"psi": score_psi}}


def test_over_threshold_names_each_mover_and_nothing_without_a_threshold() -> None:
    report = _report(0.4, 0.3, None, 0.05)
    assert over_threshold(report, None) == []
    assert over_threshold(report, 0.25) == ["feature item_click_rate_7d PSI 0.400", "event-type mix PSI 0.300"]
    assert over_threshold(_report(0.1, 0.1, 0.9, 0.6), 0.25) == ["Q action mix PSI 0.900", "ranker score PSI 0.600"]


def test_hold_turns_a_passing_candidate_into_a_held_one_and_leaves_the_others() -> None:
    decision = Decision("ranker", Verdict.PASS, ("lower bound ok",), {"n_queries": 10}, 3, 2)
    passing = Candidate("ranker", Status.PASSED, 3, 2, decision.reasons, decision)
    held = _hold(passing, "drift above hold_psi 0.25: feature x PSI 0.400")
    assert held.status is Status.HELD and held.verdict == "HOLD"
    assert held.decision.reasons == ("lower bound ok", "drift above hold_psi 0.25: feature x PSI 0.400")
    assert (held.decision.challenger_version, held.decision.champion_version) == (3, 2)
    unchanged = Candidate("bandit", Status.UNCHANGED, 1, 1, ("same files",))
    assert _hold(unchanged, "drift") is unchanged
