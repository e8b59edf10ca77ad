"""Off-policy evaluation: IPS, SNIPS, DR, PDWIS, bootstrap intervals and a verdict.

All estimators take 1-D arrays, one entry per logged decision (for slates: per item x slot,
as the Open Bandit Pipeline does):

* ``reward``: observed reward; ``pscore``: logging policy's probability of the logged action, (0, 1];
* ``target_prob``: the new policy's probability of that same action, [0, 1];
* ``q_logged``: reward model's prediction for the logged action;
* ``q_target``: reward model's expected prediction under the new policy (sum_a pi(a|x) q(x, a)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.config.policy import OPESettings

ESTIMATORS = ("ips", "snips", "dr")


def _array(name: str, values: object) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a 1-D array of numbers, got {type(values).__name__}") from e
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got 0 elements")
    nan = np.flatnonzero(~np.isfinite(arr))
    if nan.size:
        raise ValueError(f"{name} must be finite, got NaN/inf at index(es) {nan[:10].tolist()}")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")


def _probabilities(name: str, arr: np.ndarray, *, allow_zero: bool) -> None:
    low = (arr < 0) if allow_zero else (arr <= 0)
    bad = np.flatnonzero(low | (arr > 1))
    if bad.size:
        expected = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must be in {expected}, got {arr[bad[:5]].tolist()} at index(es) {bad[:5].tolist()}")


def _checked(reward, pscore, target_prob, **models) -> tuple[np.ndarray, ...]:
    r, p, t = _array("reward", reward), _array("pscore", pscore), _array("target_prob", target_prob)
    extra = {k: _array(k, v) for k, v in models.items()}
    _same_length(reward=r, pscore=p, target_prob=t, **extra)
    _probabilities("pscore", p, allow_zero=False)
    _probabilities("target_prob", t, allow_zero=True)
    return (r, p, t, *extra.values())


def importance_weights(pscore, target_prob) -> np.ndarray:
    """w = target_prob / pscore, shape (n,)."""
    p, t = _array("pscore", pscore), _array("target_prob", target_prob)
    _same_length(pscore=p, target_prob=t)
    _probabilities("pscore", p, allow_zero=False)
    _probabilities("target_prob", t, allow_zero=True)
    return t / p


def ips(reward, pscore, target_prob) -> float:
    """Inverse propensity scoring: mean(w * r)."""
    r, p, t = _checked(reward, pscore, target_prob)
    return float(np.mean(t / p * r))


def snips(reward, pscore, target_prob) -> float:
    """Self-normalised IPS: sum(w * r) / sum(w); raises ValueError when every weight is 0."""
    r, p, t = _checked(reward, pscore, target_prob)
    w = t / p
    if w.sum() <= 0:
        raise ValueError("target_prob is 0 on every logged action: SNIPS is undefined (sum of weights = 0)")
    return float(np.sum(w * r) / np.sum(w))


def dr(reward, pscore, target_prob, q_logged, q_target) -> float:
    """Doubly robust: mean(q_target + w * (r - q_logged))."""
    r, p, t, ql, qt = _checked(reward, pscore, target_prob, q_logged=q_logged, q_target=q_target)
    return float(np.mean(qt + t / p * (r - ql)))


def effective_sample_size(weights) -> float:
    """Kish's ESS = (sum w)^2 / sum w^2 (0 when all weights are 0)."""
    w = _array("weights", weights)
    if np.any(w < 0):
        raise ValueError(f"weights must be >= 0, got min {w.min()}")
    denom = float(np.sum(w**2))
    return float(np.sum(w) ** 2 / denom) if denom > 0 else 0.0


def max_weight(weights) -> float:
    """Largest importance weight."""
    return float(np.max(_array("weights", weights)))


def bootstrap_ci(
    estimator: Callable[..., float], *arrays, n: int = 500, confidence: float = 0.95,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``estimator(*arrays)`` resampling rows with replacement.

    Args:
        estimator: e.g. :func:`ips`; called with the resampled arrays.
        arrays: equal-length 1-D arrays.
        n: number of resamples.
        confidence: interval coverage in (0, 1).
        rng: numpy Generator (default: seeded 0).

    Returns:
        (low, high).
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array, got none")
    if n < 1 or not 0 < confidence < 1:
        raise ValueError(f"need n >= 1 and 0 < confidence < 1, got n={n}, confidence={confidence}")
    arrs = [_array(f"arrays[{i}]", a) for i, a in enumerate(arrays)]
    _same_length(**{f"arrays[{i}]": a for i, a in enumerate(arrs)})
    rng = rng if rng is not None else np.random.default_rng(0)
    size = len(arrs[0])
    stats = np.empty(n)
    for k in range(n):
        idx = rng.integers(0, size, size)
        stats[k] = estimator(*(a[idx] for a in arrs))
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def pdwis(episode_ids, reward, pscore, target_prob, gamma: float = 1.0) -> float:
    """Per-decision weighted importance sampling of a sequential policy.

    Rows are decisions in step order within each episode. With cumulative weights
    ``w_{i,t} = prod_{k<=t} target_prob/pscore``:
    ``V = sum_t gamma^t * sum_i w_{i,t} r_{i,t} / sum_i w_{i,t}``, summing at step t over the
    episodes that reach t (steps whose weights all vanish contribute 0).
    """
    r, p, t = _checked(reward, pscore, target_prob)
    ep = np.asarray(episode_ids)
    _same_length(episode_ids=ep, reward=r)
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    by_episode = pd.Series(t / p).groupby(ep, sort=False)
    cum = by_episode.cumprod().to_numpy()
    step = by_episode.cumcount().to_numpy()
    num = np.bincount(step, weights=cum * r)
    den = np.bincount(step, weights=cum)
    ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(np.sum(gamma ** np.arange(len(ratio)) * ratio))


@dataclass(frozen=True)
class OPEResult:
    """Estimates with intervals, diagnostics and a verdict ('ok' or 'cannot_evaluate')."""

    verdict: str
    reason: str
    n: int
    ess: float | None = None
    max_weight: float | None = None
    estimates: dict[str, float] | None = None
    intervals: dict[str, tuple[float, float]] | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def as_metrics(self, prefix: str = "ope_") -> dict[str, float]:
        """Flat metric dict (estimates, interval bounds, ess, max weight) for tracking."""
        out: dict[str, float] = {f"{prefix}n": float(self.n)}
        if self.ess is not None:
            out[f"{prefix}ess"] = self.ess
        if self.max_weight is not None:
            out[f"{prefix}max_weight"] = self.max_weight
        for name, value in (self.estimates or {}).items():
            out[f"{prefix}{name}"] = value
            low, high = (self.intervals or {}).get(name, (float("nan"), float("nan")))
            out[f"{prefix}{name}_low"], out[f"{prefix}{name}_high"] = low, high
        return out


def _cannot(reason: str, n: int, **diag) -> OPEResult:
    return OPEResult(verdict="cannot_evaluate", reason=reason, n=n, **diag)


def _unsupported(pscore) -> str | None:
    """Why the logged propensities cannot support an estimate, or None."""
    p = np.asarray(pscore, dtype=float)
    if p.ndim == 1 and p.size:
        missing, zero = int(np.isnan(p).sum()), int((p == 0).sum())
        if missing or zero:
            return f"{missing} missing and {zero} zero propensity(ies) of {p.size}: the logs cannot support IPS"
    return None


def evaluate_policy(
    reward, pscore, target_prob, q_logged=None, q_target=None, *, settings: OPESettings | None = None,
) -> OPEResult:
    """IPS, SNIPS (and DR when a reward model is given) with bootstrap intervals and a verdict.

    Missing/zero propensities or an ESS below ``settings.min_ess`` give ``cannot_evaluate``
    with no estimates. Negative or >1 propensities, NaN rewards or mismatched lengths raise.

    Returns:
        OPEResult.
    """
    settings = settings or OPESettings()
    reason = _unsupported(pscore)
    if reason:
        return _cannot(reason, n=len(np.asarray(pscore)))
    models = {} if q_logged is None and q_target is None else {"q_logged": q_logged, "q_target": q_target}
    if models and (q_logged is None or q_target is None):
        raise ValueError("give both q_logged and q_target for DR, or neither; got only one")
    arrays = _checked(reward, pscore, target_prob, **models)
    w = arrays[2] / arrays[1]
    ess, wmax = effective_sample_size(w), float(w.max())
    if ess < settings.min_ess:
        return _cannot(f"effective sample size {ess:.1f} < min_ess {settings.min_ess}", len(w), ess=ess, max_weight=wmax)
    funcs = {"ips": ips, "snips": snips, **({"dr": dr} if models else {})}
    rng = np.random.default_rng(settings.seed)
    estimates, intervals = {}, {}
    for name, func in funcs.items():
        use = arrays if name == "dr" else arrays[:3]
        estimates[name] = func(*use)
        intervals[name] = bootstrap_ci(func, *use, n=settings.bootstrap_samples, confidence=settings.confidence, rng=rng)
    return OPEResult("ok", "", len(w), ess, wmax, estimates, intervals)


def episode_bootstrap(episodes: np.ndarray, reward: np.ndarray, pscore: np.ndarray, target: np.ndarray,
                      settings: OPESettings) -> tuple[float, float]:
    """Percentile interval of PDWIS resampling whole episodes (rows of an episode stay together, in order):
    ``settings.bootstrap_samples`` resamples at ``settings.confidence``, seeded by ``settings.seed``.

    ``episodes`` are integer codes whose rows are contiguous and in step order.
    """
    starts = np.flatnonzero(np.r_[True, episodes[1:] != episodes[:-1]])
    lengths = np.diff(np.r_[starts, len(episodes)])
    rng = np.random.default_rng(settings.seed)
    stats = np.empty(settings.bootstrap_samples)
    for b in range(len(stats)):
        pick = rng.integers(0, len(starts), len(starts))
        rows = np.repeat(starts[pick] - np.r_[0, np.cumsum(lengths[pick])[:-1]], lengths[pick]) + np.arange(lengths[pick].sum())
        stats[b] = pdwis(np.repeat(np.arange(len(pick)), lengths[pick]), reward[rows], pscore[rows], target[rows])
    tail = (1 - settings.confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def evaluate_steps(episodes: np.ndarray, reward: np.ndarray, pscore: np.ndarray, target: np.ndarray, *,
                   settings: OPESettings) -> OPEResult:
    """PDWIS of a sequential policy with its :func:`episode_bootstrap` interval; ``cannot_evaluate``
    when the effective sample size of the per-step weights is below ``settings.min_ess``.

    ``episodes``: integer codes, each episode's rows contiguous and in step order; ``pscore``: the
    logging policy's probability of each logged action; ``target``: the evaluated policy's.
    """
    w = target / pscore
    ess = float(w.sum() ** 2 / (w**2).sum()) if len(w) and (w**2).sum() > 0 else 0.0
    if ess < settings.min_ess:
        return OPEResult("cannot_evaluate", f"effective sample size {ess:.1f} < min_ess {settings.min_ess}",
                         len(w), ess=ess, max_weight=float(w.max()) if len(w) else None)
    est = pdwis(episodes, reward, pscore, target)
    low, high = episode_bootstrap(episodes, reward, pscore, target, settings)
    return OPEResult("ok", "", len(w), ess, float(w.max()), {"pdwis": est}, {"pdwis": (low, high)})
