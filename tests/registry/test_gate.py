"""The promotion gate: paired bootstrap for rankers, OPE lower bound for tables, FAIL for broken models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.config.gate import GateSettings
from registry.decision import Decision, Verdict
from registry.gate import OPEEvidence, check_ranker_outputs, paired_bootstrap, policy_gate, ranker_gate

GATE = GateSettings(bootstrap_samples=500, ndcg_tolerance=0.0)


def _queries(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.9, size=n)


def test_first_version_passes() -> None:
    d = ranker_gate(_queries(), None, settings=GATE, challenger_version=1)
    assert d.verdict is Verdict.PASS and "first version" in d.reasons[0]


def test_clearly_better_challenger_passes() -> None:
    champ = _queries()
    d = ranker_gate(
        np.clip(champ + 0.05, 0, 1), champ, settings=GATE, challenger_version=2, champion_version=1
    )
    assert d.verdict is Verdict.PASS
    assert d.figures["ndcg_diff_lower"] > 0


def test_clearly_worse_challenger_is_held() -> None:
    champ = _queries()
    d = ranker_gate(champ - 0.05, champ, settings=GATE)
    assert d.verdict is Verdict.HOLD and d.reasons[0].startswith("worse than the champion")


def test_the_tolerance_reads_as_people_write_it() -> None:
    champ = _queries()
    assert ranker_gate(champ - 0.05, champ, settings=GATE).reasons[0].endswith(" < 0")
    tolerant = GATE.model_copy(update={"ndcg_tolerance": 0.005})
    assert ranker_gate(champ - 0.05, champ, settings=tolerant).reasons[0].endswith(" < -0.005")
    assert ranker_gate(champ + 0.05, champ, settings=tolerant).reasons[0].endswith(" >= -0.005")


def test_a_champion_that_saw_the_test_week_is_no_evidence() -> None:
    """A backfill of an older week: the champion learned from this test week, so even a clear win is held."""
    champ = _queries()
    why = "champion v1 learned from data up to 2026-11-23, after this test week starts (2026-11-09)"
    better = ranker_gate(np.clip(champ + 0.05, 0, 1), champ, settings=GATE, challenger_version=2, champion_version=1,
                         champion_saw_test=why)
    assert better.verdict is Verdict.HOLD and better.reasons[0] == f"not comparable: {why}"
    assert better.reasons[1].startswith("lower bound of NDCG@10 difference")  # the comparison is still recorded
    assert better.figures["champion_saw_test"] == 1 and better.figures["ndcg_diff_lower"] > 0
    assert ranker_gate(champ - 0.05, champ, settings=GATE, champion_saw_test=why).verdict is Verdict.HOLD


def test_which_champions_saw_the_test_week() -> None:
    from datetime import UTC, datetime

    from rankloop.stages import champion_saw_test_week

    manifest = {"window": {"start": "2026-10-19T00:00:00+00:00", "end": "2026-11-30T00:00:00+00:00"},
                "config": {"ranker": {"test_days": 7}}}
    # the same window retrained (--force): the champion learned up to its own test week, the same one
    assert champion_saw_test_week(manifest, 1, datetime(2026, 11, 23, tzinfo=UTC)) is None
    assert champion_saw_test_week(manifest, 1, datetime(2026, 11, 30, tzinfo=UTC)) is None  # the next week
    why = champion_saw_test_week(manifest, 1, datetime(2026, 11, 9, tzinfo=UTC))  # a backfill two weeks back
    assert why is not None and why.startswith("champion v1 learned from data up to 2026-11-23, after this test week "
                                              "starts (2026-11-09)")
    longer = {**manifest, "config": {"ranker": {"test_days": 14}}}
    assert champion_saw_test_week(longer, 1, datetime(2026, 11, 16, tzinfo=UTC)) is None
    assert champion_saw_test_week({"window": None}, 1, datetime(2026, 11, 9, tzinfo=UTC)) is None


def test_noisy_equal_challenger_is_inconclusive_without_tolerance_and_passes_with_it() -> None:
    champ = _queries()
    noise = np.random.default_rng(5).normal(scale=0.05, size=champ.size)
    challenger = champ + noise - noise.mean()  # same mean, paired noise
    held = ranker_gate(challenger, champ, settings=GATE)
    assert held.verdict is Verdict.HOLD and held.reasons[0].startswith("inconclusive")
    passed = ranker_gate(challenger, champ, settings=GATE.model_copy(update={"ndcg_tolerance": 0.02}))
    assert passed.verdict is Verdict.PASS


def test_nan_scores_wrong_features_and_checksum_problems_fail() -> None:
    champ = _queries(10)
    broken = champ.copy()
    broken[3] = np.nan
    assert ranker_gate(broken, champ, settings=GATE).verdict is Verdict.FAIL
    d = ranker_gate(champ, champ, settings=GATE, problems=["checksum mismatch for 'model.txt'"])
    assert d.verdict is Verdict.FAIL and "checksum" in d.reasons[0]
    problems = check_ranker_outputs(np.array([0.1, np.inf]), ["a", "b"], ["a", "c"])
    assert problems[0].startswith("1 non-finite") and "missing ['b'], extra ['c']" in problems[1]


def test_no_queries_holds_and_mismatched_queries_are_an_error() -> None:
    assert ranker_gate(np.array([]), np.array([]), settings=GATE).verdict is Verdict.HOLD
    with pytest.raises(ValueError, match="same queries"):
        ranker_gate(_queries(5), _queries(6), settings=GATE)


def test_bootstrap_is_seeded_and_ordered() -> None:
    a, b = _queries(50, 1), _queries(50, 2)
    r1 = paired_bootstrap(a, b, samples=300, confidence=0.95, seed=3)
    r2 = paired_bootstrap(a, b, samples=300, confidence=0.95, seed=3)
    assert r1 == r2 and r1.lower <= r1.mean_diff <= r1.upper


@pytest.mark.parametrize(
    ("evidence", "champion", "verdict"),
    [
        (OPEEvidence(0.5, 0.45, 0.55), 0.40, Verdict.PASS),
        (OPEEvidence(0.5, 0.35, 0.65), 0.40, Verdict.HOLD),
        (OPEEvidence(0.5, 0.45, 0.55), None, Verdict.PASS),
        (OPEEvidence(0.5, 0.45, 0.55, status="cannot_evaluate", note="ESS 12 < 100"), 0.1, Verdict.HOLD),
        (OPEEvidence(float("nan"), 0.45, 0.55), 0.1, Verdict.FAIL),
        (OPEEvidence(0.5, 0.45, 0.55, status="weird"), 0.1, Verdict.FAIL),
    ],
)
def test_policy_gate(evidence: OPEEvidence, champion: float | None, verdict: Verdict) -> None:
    assert policy_gate("bandit", evidence, champion, settings=GATE).verdict is verdict


def test_decision_round_trips_through_json_without_nan() -> None:
    d = policy_gate("qtable", OPEEvidence(float("nan"), 0.1, 0.2), 0.3, settings=GATE, challenger_version=4)
    text = d.to_json()
    assert json.loads(text)["figures"]["ope_estimate"] is None
    back = Decision.from_json(text)
    assert (back.verdict, back.reasons, back.challenger_version) == (Verdict.FAIL, d.reasons, 4)
