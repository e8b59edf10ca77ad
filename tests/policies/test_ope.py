"""Off-policy estimators by hand, diagnostics, bootstrap, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from core.config.policy import OPESettings
from models.ope import (
    OPEResult,
    bootstrap_ci,
    dr,
    effective_sample_size,
    episode_bootstrap,
    evaluate_policy,
    evaluate_steps,
    importance_weights,
    ips,
    max_weight,
    pdwis,
    snips,
)

R = [1.0, 0.0, 1.0, 0.0]
P = [0.5, 0.5, 0.25, 1.0]
T = [1.0, 0.5, 0.5, 0.0]  # weights 2, 1, 2, 0
QL = [0.5, 0.5, 0.5, 0.5]
QT = [0.6, 0.6, 0.6, 0.6]


def test_estimators_by_hand():
    assert importance_weights(P, T).tolist() == [2.0, 1.0, 2.0, 0.0]
    assert ips(R, P, T) == pytest.approx((2 + 0 + 2 + 0) / 4)
    assert snips(R, P, T) == pytest.approx(4 / 5)
    # 0.6 + w (r - 0.5): 1.6, 0.1, 1.6, 0.6
    assert dr(R, P, T, QL, QT) == pytest.approx(3.9 / 4)
    assert effective_sample_size([2, 1, 2, 0]) == pytest.approx(25 / 9)
    assert max_weight([2, 1, 2, 0]) == 2.0


def test_on_policy_estimates_equal_the_mean_reward():
    r = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    p = np.full(5, 0.2)
    assert ips(r, p, p) == pytest.approx(0.6) and snips(r, p, p) == pytest.approx(0.6)
    assert dr(r, p, p, np.full(5, 0.3), np.full(5, 0.3)) == pytest.approx(0.6)


def test_pdwis_by_hand():
    # episode e1: w 2 then 2*1; e2: w 1.  step 0: (2*1 + 1*0)/3; step 1: (2*2)/2
    value = pdwis(["e1", "e1", "e2"], [1.0, 2.0, 0.0], [0.5, 0.5, 1.0], [1.0, 0.5, 1.0], gamma=0.5)
    assert value == pytest.approx(2 / 3 + 0.5 * 2.0)
    assert pdwis(["e1", "e1", "e2"], [1.0, 2.0, 0.0], [0.5, 0.5, 1.0], [0.0, 0.5, 1.0]) == pytest.approx(0.0)


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(1)
    r = rng.binomial(1, 0.3, 2000).astype(float)
    p = np.full(2000, 0.5)
    low, high = bootstrap_ci(ips, r, p, p, n=200, confidence=0.9, rng=np.random.default_rng(2))
    assert low < ips(r, p, p) < high and high - low < 0.1
    assert bootstrap_ci(ips, r, p, p, n=50, rng=np.random.default_rng(3)) == bootstrap_ci(
        ips, r, p, p, n=50, rng=np.random.default_rng(3))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((R, [-0.5, 0.5, 0.5, 0.5], T), r"pscore must be in \(0, 1\], got \[-0.5\]"),
        ((R, [1.5, 0.5, 0.5, 0.5], T), r"pscore must be in \(0, 1\], got \[1.5\]"),
        ((R, P, [1.0, 0.5, 2.0, 0.0]), r"target_prob must be in \[0, 1\]"),
        (([1.0, np.nan, 1.0, 0.0], P, T), r"reward must be finite, got NaN/inf at index\(es\) \[1\]"),
        ((R, P[:3], T), r"same length, got \{'reward': 4, 'pscore': 3, 'target_prob': 4\}"),
        (([], [], []), "reward must not be empty"),
        (([[1.0]], [[0.5]], [[0.5]]), "reward must be 1-D"),
    ],
)
@pytest.mark.parametrize("estimator", [ips, snips])
def test_invalid_inputs_name_the_argument(estimator, args, message):
    with pytest.raises(ValueError, match=message):
        estimator(*args)


def test_invalid_dr_and_pdwis_inputs():
    with pytest.raises(ValueError, match="q_target must be finite"):
        dr(R, P, T, QL, [0.6, np.nan, 0.6, 0.6])
    with pytest.raises(ValueError, match="q_logged"):
        dr(R, P, T, QL[:2], QT)
    with pytest.raises(ValueError, match="pscore"):
        pdwis(["e"] * 4, R, [0.0, 0.5, 0.5, 0.5], T)
    with pytest.raises(ValueError, match="same length"):
        pdwis(["e"] * 3, R, P, T)
    with pytest.raises(TypeError, match="reward must be a 1-D array of numbers"):
        ips(["a", "b"], [0.5, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        effective_sample_size([1.0, -1.0])


def _logs(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    p = np.full(n, 0.25)
    t = rng.choice([0.1, 0.4], n)
    r = rng.binomial(1, 0.2, n).astype(float)
    return r, p, t


def test_evaluate_policy_ok_with_intervals_and_dr():
    r, p, t = _logs(600)
    result = evaluate_policy(r, p, t, np.full(600, 0.2), np.full(600, 0.2),
                             settings=OPESettings(bootstrap_samples=60, min_ess=50))
    assert result.verdict == "ok" and result.reason == ""
    assert set(result.estimates) == {"ips", "snips", "dr"}
    assert result.estimates["ips"] == pytest.approx(ips(r, p, t))
    for name, (low, high) in result.intervals.items():
        assert low <= result.estimates[name] <= high
    assert result.ess == pytest.approx(effective_sample_size(t / p)) and result.max_weight == pytest.approx(1.6)
    metrics = result.as_metrics()
    assert {"ope_ips", "ope_ips_low", "ope_ips_high", "ope_dr", "ope_ess", "ope_max_weight"} <= set(metrics)


@pytest.mark.parametrize(
    ("pscore", "reason"),
    [([0.25, np.nan, 0.25], "1 missing and 0 zero"), ([0.25, 0.0, 0.0], "0 missing and 2 zero")],
)
def test_missing_or_zero_propensities_cannot_be_evaluated(pscore, reason):
    result = evaluate_policy([1.0, 0.0, 1.0], pscore, [0.5, 0.5, 0.5])
    assert result.verdict == "cannot_evaluate" and reason in result.reason
    assert result.estimates is None and result.intervals is None


def test_low_effective_sample_size_cannot_be_evaluated():
    r, p, t = _logs(300)
    t = np.where(np.arange(300) < 3, 1.0, 0.0)  # the new policy only agrees with 3 logged actions
    result = evaluate_policy(r, p, t, settings=OPESettings(min_ess=100))
    assert isinstance(result, OPEResult) and result.verdict == "cannot_evaluate"
    assert "effective sample size 3.0 < min_ess 100" in result.reason
    assert result.estimates is None and result.ess == pytest.approx(3.0)
    assert "ope_ips" not in result.as_metrics()


def test_evaluate_policy_still_raises_on_invalid_values():
    with pytest.raises(ValueError, match="pscore must be in"):
        evaluate_policy([1.0, 0.0], [0.5, -0.2], [0.5, 0.5])
    with pytest.raises(ValueError, match="both q_logged and q_target"):
        evaluate_policy([1.0, 0.0], [0.5, 0.5], [0.5, 0.5], q_logged=[0.1, 0.1])


def test_evaluate_steps_on_policy_brackets_the_per_step_means():
    """On-policy (target = pscore), PDWIS is the sum over steps of the mean reward at that step; the
    episode bootstrap interval, seeded by the settings, brackets it and is repeatable."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 4, 200)
    episodes = np.repeat(np.arange(len(lengths)), lengths)
    step = np.concatenate([np.arange(n) for n in lengths])
    reward = rng.binomial(1, 0.3 + 0.1 * step).astype(float)
    pscore = np.full(len(reward), 1 / 27)
    settings = OPESettings(min_ess=10, bootstrap_samples=200)
    result = evaluate_steps(episodes, reward, pscore, pscore.copy(), settings=settings)
    by_step = sum(reward[step == t].mean() for t in range(step.max() + 1))
    assert result.verdict == "ok"
    assert result.estimates["pdwis"] == pytest.approx(by_step)
    low, high = result.intervals["pdwis"]
    assert low < by_step < high
    assert evaluate_steps(episodes, reward, pscore, pscore.copy(), settings=settings).intervals == result.intervals
    assert episode_bootstrap(episodes, reward, pscore, pscore, settings) == (low, high)


def test_evaluate_steps_below_min_ess_cannot_be_evaluated():
    episodes = np.array([0, 0, 1, 2])
    reward = np.array([1.0, 0.0, 1.0, 0.0])
    pscore = np.full(4, 0.5)
    result = evaluate_steps(episodes, reward, pscore, np.full(4, 0.5), settings=OPESettings(min_ess=5))
    assert result.verdict == "cannot_evaluate"
    assert "effective sample size 4.0 < min_ess 5" in result.reason
    assert result.estimates is None
