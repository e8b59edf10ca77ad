"""Always-valid sequential comparison of two arms' means: the mixture SPRT (mSPRT).

Johari, Pekelis, Koomen & Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests"
(Operations Research 70(3), 2022). For the difference ``theta = mean_b - mean_a`` estimated by
``delta`` with variance ``s2`` (``var_a / n_a + var_b / n_b``, the per-request variances plugged
in), the likelihood ratio of ``theta ~ N(theta0, tau^2)`` against ``theta = theta0`` is::

    Lambda = sqrt(s2 / (s2 + tau^2)) * exp(tau^2 * (delta - theta0)^2 / (2 * s2 * (s2 + tau^2)))

Under ``theta = theta0`` it is a martingale, so ``P(Lambda_n >= 1/alpha for any n) <= alpha``:
rejecting the first time it crosses ``1/alpha`` keeps the false-rejection rate below ``alpha``
however often (daily, hourly) the data are looked at, and ``p_n = min(1, min_{m<=n} 1/Lambda_m)``
is an always-valid p-value. (A fixed-horizon t-test looked at daily would not be: its false
rejections add up over the looks.) No maintained Python package implements it; the formula is
the paper's equation for normal data with a normal mixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Look:
    """One look at the two arms: sizes, means, the difference and its mixture likelihood ratio."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    delta: float  # mean_b - mean_a
    std_error: float
    likelihood_ratio: float

    @property
    def p_value(self) -> float:
        """1/Lambda at this look (capped at 1); the always-valid p-value is its running minimum."""
        return float(min(1.0, 1.0 / self.likelihood_ratio)) if self.likelihood_ratio > 0 else 1.0


def msprt(a: np.ndarray, b: np.ndarray, *, theta0: float, tau: float) -> Look:
    """The mixture likelihood ratio of ``theta = mean(b) - mean(a)`` against ``theta0``.

    Args:
        a, b: one outcome per unit (request) of each arm, shapes (n_a,), (n_b,); each needs >= 2.
        theta0: the null difference; tau: standard deviation of the normal mixture over theta.

    Returns:
        The :class:`Look`; its ``likelihood_ratio`` is 1 when both arms have zero variance.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"each arm needs at least 2 units, got {a.size} and {b.size}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    s2 = a.var(ddof=1) / a.size + b.var(ddof=1) / b.size
    delta = float(b.mean() - a.mean())
    if s2 <= 0:
        ratio = 1.0
    else:
        log_ratio = 0.5 * np.log(s2 / (s2 + tau**2)) + tau**2 * (delta - theta0) ** 2 / (2 * s2 * (s2 + tau**2))
        ratio = float(np.exp(min(log_ratio, 700.0)))
    return Look(int(a.size), int(b.size), float(a.mean()), float(b.mean()), delta, float(np.sqrt(s2)), ratio)
