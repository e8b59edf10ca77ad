"""The promotion gate: pure functions from held-out evidence to a :class:`Decision`.

Ranker: a paired bootstrap over queries of the NDCG@10 difference (challenger - champion).
Tables (bandit, LinUCB, Q-table): the challenger's off-policy lower bound against the champion's estimate.
Replay (ranker): a candidate that cannot serve (``registry.replay``) fails, whatever its NDCG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.config.gate import GateSettings
from registry.decision import Decision, Verdict
from registry.manifest import check_kind

if TYPE_CHECKING:
    from registry.replay import ReplayReport


@dataclass(frozen=True)
class BootstrapResult:
    """Mean paired difference and its one-sided bounds at the configured confidence."""

    mean_diff: float
    lower: float
    upper: float
    n_queries: int


def paired_bootstrap(
    challenger: np.ndarray, champion: np.ndarray, *, samples: int, confidence: float, seed: int
) -> BootstrapResult:
    """Bootstrap the mean of ``challenger - champion`` by resampling queries (pairs stay together).

    Args:
        challenger, champion: per-query metric, shape (n_queries,), same queries in the same order.
        samples: bootstrap resamples; confidence: one-sided level of each bound; seed: RNG seed.

    Returns:
        The mean difference, its lower (``1 - confidence`` quantile) and upper (``confidence``) bounds.
    """
    diffs = np.asarray(challenger, dtype=float) - np.asarray(champion, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 100):  # chunks keep memory at 100 x n_queries
        stop = min(samples, start + 100)
        idx = rng.integers(0, diffs.size, size=(stop - start, diffs.size))
        means[start:stop] = diffs[idx].mean(axis=1)
    lower, upper = np.quantile(means, [1 - confidence, confidence])
    return BootstrapResult(float(diffs.mean()), float(lower), float(upper), int(diffs.size))


def check_ranker_outputs(
    scores: np.ndarray, expected_features: Sequence[str], model_features: Sequence[str]
) -> list[str]:
    """Problems that make a ranker broken: non-finite scores, features differing from the feature set."""
    problems = []
    bad = int((~np.isfinite(np.asarray(scores, dtype=float))).sum())
    if bad:
        problems.append(f"{bad} non-finite score(s) on the held-out data")
    missing = [f for f in expected_features if f not in model_features]
    extra = [f for f in model_features if f not in expected_features]
    if missing or extra:
        problems.append(f"model features differ from the feature set: missing {missing}, extra {extra}")
    return problems


def ranker_gate(
    challenger_ndcg: np.ndarray,
    champion_ndcg: np.ndarray | None,
    *,
    settings: GateSettings,
    challenger_version: int | None = None,
    champion_version: int | None = None,
    problems: Sequence[str] = (),
    champion_saw_test: str | None = None,
) -> Decision:
    """Decide whether a challenger ranker may replace the champion.

    Args:
        challenger_ndcg: per-query NDCG@10 of the challenger on the held-out queries, shape (n,).
        champion_ndcg: the champion's per-query NDCG@10 on the same queries, or None without a champion.
        settings: tolerance and bootstrap settings.
        problems: already-found defects (checksum errors, wrong features, ...): any means FAIL.
        champion_saw_test: why the champion's figures on this test week are not evidence (it was
            trained on data from it, e.g. a backfill of a week older than the champion's window).
            The comparison is still computed and recorded, but the verdict is at best HOLD.

    Returns:
        FAIL for a broken challenger, PASS when the bootstrap lower bound of the difference is
        >= -tolerance (or there is no champion), HOLD otherwise.
    """
    new = np.asarray(challenger_ndcg, dtype=float)
    base = dict(kind="ranker", challenger_version=challenger_version, champion_version=champion_version)
    defects = list(problems) + _nan_problems(new)
    if defects:
        return Decision(
            verdict=Verdict.FAIL, reasons=tuple(defects), figures={"n_queries": int(new.size)}, **base
        )
    if new.size == 0:
        return Decision(
            verdict=Verdict.HOLD,
            reasons=("no held-out queries to judge on",),
            figures={"n_queries": 0},
            **base,
        )
    figures: dict = {"challenger_ndcg_at_10": float(new.mean()), "n_queries": int(new.size)}
    if champion_ndcg is None:
        return Decision(
            verdict=Verdict.PASS,
            reasons=("first version: no champion to compare with",),
            figures=figures,
            **base,
        )
    decision = _compare_rankers(new, _same_queries(new, champion_ndcg), settings, figures, base)
    if champion_saw_test is None:
        return decision
    return Decision(verdict=Verdict.HOLD, reasons=(f"not comparable: {champion_saw_test}", *decision.reasons),
                    figures=decision.figures | {"champion_saw_test": 1}, **base)


def _nan_problems(values: np.ndarray) -> list[str]:
    bad = int((~np.isfinite(values)).sum())
    return [f"challenger NDCG@10 is not finite for {bad} of {values.size} queries"] if bad else []


def _same_queries(new: np.ndarray, champion_ndcg: np.ndarray) -> np.ndarray:
    old = np.asarray(champion_ndcg, dtype=float)
    if old.shape != new.shape:
        raise ValueError(
            f"challenger and champion must be scored on the same queries: shapes {new.shape} and {old.shape}"
        )
    return old


def _compare_rankers(
    new: np.ndarray, old: np.ndarray, settings: GateSettings, figures: dict, base: dict
) -> Decision:
    keep = np.isfinite(old)  # queries the champion cannot score are not evidence against the challenger
    result = paired_bootstrap(
        new[keep],
        old[keep],
        samples=settings.bootstrap_samples,
        confidence=settings.confidence,
        seed=settings.seed,
    )
    figures |= {
        "champion_ndcg_at_10": float(old[keep].mean()),
        "ndcg_diff": result.mean_diff,
        "ndcg_diff_lower": result.lower,
        "ndcg_diff_upper": result.upper,
        "tolerance": settings.ndcg_tolerance,
        "confidence": settings.confidence,
        "champion_unscored_queries": int((~keep).sum()),
    }
    bound = f"lower bound of NDCG@10 difference {result.lower:+.4f} (mean {result.mean_diff:+.4f}, {result.n_queries} queries)"
    # the tolerance as people write it: 0, not -0.0
    tolerance = f"-{settings.ndcg_tolerance:g}" if settings.ndcg_tolerance else "0"
    if result.lower >= -settings.ndcg_tolerance:
        return Decision(
            verdict=Verdict.PASS, reasons=(f"{bound} >= {tolerance}",), figures=figures, **base
        )
    why = "worse than the champion" if result.upper < -settings.ndcg_tolerance else "inconclusive"
    return Decision(
        verdict=Verdict.HOLD,
        reasons=(f"{why}: {bound} < {tolerance}",),
        figures=figures,
        **base,
    )


@dataclass(frozen=True)
class OPEEvidence:
    """An off-policy estimate of a policy's value with its confidence interval.

    ``status`` is ``"ok"`` or ``"cannot_evaluate"`` (e.g. too small an effective sample size);
    ``note`` says why.
    """

    estimate: float
    lower: float
    upper: float
    status: str = "ok"
    note: str = ""


def policy_gate(
    kind: str,
    challenger: OPEEvidence,
    champion_estimate: float | None,
    *,
    settings: GateSettings,
    challenger_version: int | None = None,
    champion_version: int | None = None,
    problems: Sequence[str] = (),
) -> Decision:
    """Decide whether a table policy (bandit, linucb, qtable) may replace the champion.

    Args:
        kind: the policy kind.
        challenger: the challenger's OPE estimate and interval on the held-out log.
        champion_estimate: the champion's OPE estimate on the same log, None without a champion.
        settings: gate settings (``policy_tolerance``).
        problems: already-found defects: any means FAIL.

    Returns:
        FAIL for broken evidence, HOLD when OPE cannot evaluate or the lower bound falls short, else PASS.
    """
    check_kind(kind)
    base = dict(kind=kind, challenger_version=challenger_version, champion_version=champion_version)
    figures = {
        "ope_estimate": challenger.estimate,
        "ope_lower": challenger.lower,
        "ope_upper": challenger.upper,
        "champion_ope_estimate": champion_estimate,
        "tolerance": settings.policy_tolerance,
    }
    if challenger.status == "cannot_evaluate":
        return Decision(
            verdict=Verdict.HOLD,
            reasons=(f"OPE cannot evaluate the challenger: {challenger.note or 'no reason given'}",),
            figures=figures,
            **base,
        )
    defects = list(problems) + _ope_problems(challenger)
    if defects:
        return Decision(verdict=Verdict.FAIL, reasons=tuple(defects), figures=figures, **base)
    if champion_estimate is None:
        return Decision(
            verdict=Verdict.PASS,
            reasons=("first version: no champion to compare with",),
            figures=figures,
            **base,
        )
    bound = f"OPE lower bound {challenger.lower:.4f} vs champion estimate {champion_estimate:.4f} - {settings.policy_tolerance}"
    verdict = (
        Verdict.PASS if challenger.lower >= champion_estimate - settings.policy_tolerance else Verdict.HOLD
    )
    return Decision(
        verdict=verdict,
        reasons=(("passes: " if verdict is Verdict.PASS else "falls short: ") + bound,),
        figures=figures,
        **base,
    )


def _ope_problems(evidence: OPEEvidence) -> list[str]:
    if evidence.status != "ok":
        return [f"unknown OPE status {evidence.status!r}; expected 'ok' or 'cannot_evaluate'"]
    bad = [n for n in ("estimate", "lower", "upper") if not np.isfinite(getattr(evidence, n))]
    return [f"OPE figure(s) {bad} are not finite"] if bad else []


def replay_gate(decision: Decision, replay: ReplayReport) -> Decision:
    """The gate's decision after the serve-ability replay (``registry.replay``): a failed replay turns it
    into FAIL (the version cannot serve), its problems as the reasons; a passed one keeps the verdict.
    The replay's figures join the decision's as ``replay_*``."""
    figures = {**decision.figures, **{f"replay_{k}": v for k, v in replay.figures.items()}}
    base = dict(kind=decision.kind, figures=figures, challenger_version=decision.challenger_version,
                champion_version=decision.champion_version)
    if replay.passed:
        return Decision(verdict=decision.verdict, reasons=(*decision.reasons, "replay: serves (features, finite and "
                        "deterministic scores, latency and memory within bounds)"), **base)
    return Decision(verdict=Verdict.FAIL, reasons=(*decision.reasons, *(f"replay: {p}" for p in replay.problems)),
                    **base)
