"""Drift statistics between a reference sample and a current one (pure functions).

The measure is the population stability index, the customary one for scorecards and feature
monitoring (Yurdakul, "Statistical properties of population stability index", 2018)::

    PSI = sum_b (cur_b - ref_b) * ln(cur_b / ref_b)

over the reference's quantile bins (numeric) or the union of categories (categorical), each share
floored at ``EPSILON`` so that an empty bin stays finite. Rules of thumb: < 0.1 stable, 0.1-0.25
some shift, > 0.25 a major shift. Missing values are a bin of their own. The two-sample
Kolmogorov-Smirnov statistic (``scipy.stats.ks_2samp``'s, :func:`ks_statistic`) is reported beside it
for numeric columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

EPSILON = 1e-4


def _psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    ref, cur = np.maximum(ref_share, EPSILON), np.maximum(cur_share, EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of a numeric column over the reference's quantile bins (NaN: a bin of its own).

    Args:
        reference, current: samples, shapes (n_ref,), (n_cur,); bins: quantile bins of the reference.
    """
    ref, cur = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    return _sorted_psi(np.sort(ref[np.isfinite(ref)]), ref.size, np.sort(cur[np.isfinite(cur)]), cur.size, bins)


def _sorted_psi(ref: np.ndarray, n_ref: int, cur: np.ndarray, n_cur: int, bins: int) -> float:
    """:func:`numeric_psi` from each sample's finite values, sorted, and its size (the values not given are its
    missing bin). A bin's count is where its upper edge falls among the sorted values: the counts of a search
    of each value among the edges, without one."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])) if ref.size else np.array([])

    def shares(xs: np.ndarray, n: int) -> np.ndarray:
        counts = np.diff(np.r_[0, np.searchsorted(xs, edges, side="left"), xs.size])
        return np.append(counts, n - xs.size) / n

    return _psi(shares(ref, n_ref), shares(cur, n_cur))


MISSING = "<missing>"


def category_counts(values: Iterable) -> pd.Series:
    """How many values each category has (None/NaN counted as ``"<missing>"``), categories as the values
    hold them. A Series is counted in its own dtype (an Arrow string column or a categorical: no Python
    object per value, ~4M of them in a week at 10M interactions); anything else as a list of objects."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    counts = series.value_counts(dropna=False, sort=False)
    counts = counts[counts.to_numpy() > 0]  # a categorical's categories that no value has
    labels = pd.Index([MISSING if pd.isna(k) else k for k in counts.index], dtype=object)
    return pd.Series(counts.to_numpy(dtype=np.int64), index=labels).groupby(level=0, sort=False).sum()


def categorical_psi(reference: Iterable, current: Iterable) -> float:
    """PSI of a categorical column over the union of its categories (None/NaN: a category of its own)."""
    return categorical_psi_of_counts(category_counts(reference), category_counts(current))


def categorical_psi_of_counts(reference: pd.Series, current: pd.Series) -> float:
    """:func:`categorical_psi` from each side's :func:`category_counts` (counted in pieces and summed: the
    same PSI)."""
    if reference.empty or current.empty:
        return float("nan")
    cats = sorted(set(reference.index) | set(current.index), key=str)
    ref_share = (reference / reference.sum()).reindex(cats, fill_value=0.0).to_numpy()
    cur_share = (current / current.sum()).reindex(cats, fill_value=0.0).to_numpy()
    return _psi(ref_share, cur_share)


def shares(values: Iterable) -> dict[str, float]:
    """Each category's share (what the event-type and action mixes report), categories as text."""
    return shares_of_counts(category_counts(values))


def shares_of_counts(counts: pd.Series) -> dict[str, float]:
    """:func:`shares` from :func:`category_counts`."""
    counts = counts.groupby(counts.index.map(str), sort=True).sum()
    return {str(k): float(v) for k, v in (counts / counts.sum()).items()}


# Above this many values per sample scipy's ks_2samp takes its asymptotic mode, whose statistic is the
# largest ECDF gap as computed in ks_statistic; its p-value (kstwo.sf, which no report uses) cost
# ~60 s of the drift stage at 10M interactions (88 features x ~1.5M rows per week).
_SCIPY_MAX_N = 10_000


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic of ``scipy.stats.ks_2samp`` (two-sided), without its
    p-value: scipy's own call for samples up to 10,000 values (its exact mode rounds the statistic to
    a multiple of 1/lcm(n1, n2)), else scipy's asymptotic-mode statistic, bit for bit."""
    return _sorted_ks(np.sort(np.asarray(reference, dtype=float)), np.sort(np.asarray(current, dtype=float)))


def _sorted_ks(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`ks_statistic` of two sorted samples."""
    if a.size == 0 or b.size == 0:
        raise ValueError("ks_statistic needs two non-empty samples")
    if max(a.size, b.size) <= _SCIPY_MAX_N:
        from scipy.stats import ks_2samp

        return float(ks_2samp(a, b).statistic)
    # The ECDF gap at every value of either sample: how many of each sample are <= it, over its size. The two
    # sorted runs merge in one pass of a stable sort; at the last of equal values the running count of a's
    # values is a's count <= it, and the rest b's. The largest gap either way is that of every value's (the
    # same counts: scipy's searches, without 2 x 7.8M binary searches per feature of the 10M run's weeks).
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="stable")
    values = both[order]
    del both
    in_a = np.cumsum(order < a.size)
    del order
    ends = np.flatnonzero(np.r_[values[1:] != values[:-1], True])
    del values
    in_a = in_a[ends]
    gaps = in_a / a.size - (ends + 1 - in_a) / b.size
    low, high = np.clip(-gaps[np.argmin(gaps)], 0, 1), gaps[np.argmax(gaps)]
    return float(low if low > high else high)


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, columns: Iterable[str], bins: int = 10) -> pd.DataFrame:
    """Per column: PSI, KS statistic, reference and current means; sorted by PSI, largest first.

    Returns:
        Columns ``feature``, ``psi``, ``ks``, ``reference_mean``, ``current_mean``.
    """
    return feature_drift_of(((name, reference[name], current[name]) for name in columns), bins)


def _finite(values: np.ndarray) -> np.ndarray:
    """The finite ones of ``values``, an array the caller may sort in place: ``values`` itself when every one is
    finite and it owns its memory (a week's column converted to float64; no copy of it), else a copy."""
    finite = np.isfinite(values)
    return values if values.flags.owndata and values.flags.writeable and finite.all() else values[finite]


def feature_drift_of(samples: Iterable[tuple[str, Any, Any]], bins: int = 10) -> pd.DataFrame:
    """:func:`feature_drift` of ``(name, reference values, current values)`` given one column at a time
    (a caller reading each column when it comes never holds two samples' tables). Each sample's finite values
    are sorted once, for both statistics (:func:`numeric_psi`, :func:`ks_statistic`: the same values); the
    means are taken before, in the values' order."""
    rows = []
    for name, reference, current in samples:
        ref = np.asarray(pd.Series(reference).to_numpy(dtype=float, na_value=np.nan), dtype=float)
        cur = np.asarray(pd.Series(current).to_numpy(dtype=float, na_value=np.nan), dtype=float)
        n_ref, n_cur = ref.size, cur.size
        rf, cf = _finite(ref), _finite(cur)  # the values themselves when all are finite (sorted in place below)
        del ref, cur
        means = (float(rf.mean()) if rf.size else float("nan"), float(cf.mean()) if cf.size else float("nan"))
        rf.sort()
        cf.sort()
        rows.append({"feature": name,
                     "psi": _sorted_psi(rf, n_ref, cf, n_cur, bins) if n_ref and n_cur else float("nan"),
                     "ks": _sorted_ks(rf, cf) if rf.size and cf.size else float("nan"),
                     "reference_mean": means[0], "current_mean": means[1]})
        del rf, cf
    frame = pd.DataFrame(rows, columns=["feature", "psi", "ks", "reference_mean", "current_mean"])
    return frame.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)
