"""Ranking metrics computed like LightGBM's own evaluation, vectorised over all queries.

Conventions (the same as LightGBM's ``ndcg`` and ``map`` metrics, so our figures and the
training log agree):

* gain of a label ``l`` is ``2**l - 1``; the item at 0-based rank ``r`` is discounted by
  ``1 / log2(r + 2)``; ``@k`` looks at the first ``min(k, query size)`` items.
* a query without any relevant item (every label 0) counts as NDCG 1 and AP 1, as in LightGBM.
  Logs with many click-less slates therefore push NDCG towards 1; compare models on the same
  queries, or drop click-less queries before evaluating if absolute values matter.
* MRR is the mean over all queries of ``1 / rank of the first relevant item``; a query without a
  relevant item contributes 0 (the TREC convention; LightGBM has no MRR).
* relevant means ``label > 0``.
* ties in score are broken by the original row order (a stable sort by ``-score``), so every
  figure is deterministic.

``queries`` is either the group sizes (one entry per query, in row order, adding up to the number
of rows; what LightGBM calls ``group``) or one query id per row (the same length as ``labels``;
rows of one query need not be contiguous). An array as long as ``labels`` is always read as query
ids. Per-query values come back in group order, or in sorted query-id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike


@dataclass(frozen=True)
class _Ranked:
    """Rows sorted by query, then by descending score (ties: original order)."""

    labels: np.ndarray  # (n,) labels in ranked order
    query: np.ndarray  # (n,) 0-based query index of each ranked row
    rank: np.ndarray  # (n,) 0-based rank within the query
    n_queries: int


def _as_1d(values: ArrayLike, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, found shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{what} must be numeric, found dtype {array.dtype}")
    return array.astype(np.float64)


def _query_index(queries: ArrayLike, n_rows: int) -> tuple[np.ndarray, int]:
    """0-based query index per row, and the number of queries."""
    array = np.asarray(queries)
    if array.ndim != 1:
        raise ValueError(f"queries must be one-dimensional, found shape {array.shape}")
    if len(array) == n_rows:
        _, index = np.unique(array, return_inverse=True)
        return index.ravel(), int(index.max()) + 1
    sizes = _group_sizes(array, n_rows)
    return np.repeat(np.arange(len(sizes)), sizes), len(sizes)


def _group_sizes(array: np.ndarray, n_rows: int) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.number) or np.any(array != np.round(array)) or np.any(array <= 0):
        raise ValueError(f"group sizes must be positive integers, found {array[:10].tolist()}...")
    if int(array.sum()) != n_rows:
        raise ValueError(
            f"group sizes must add up to the number of rows ({n_rows}), they add up to {int(array.sum())} "
            f"(or pass one query id per row: {n_rows} values)"
        )
    return array.astype(np.int64)


def _rank(labels: np.ndarray, scores: np.ndarray, query: np.ndarray, n_queries: int) -> _Ranked:
    order = np.lexsort((np.arange(len(scores)), -scores, query))
    ranked_query = query[order]
    starts = np.searchsorted(ranked_query, np.arange(n_queries))
    rank = np.arange(len(order)) - starts[ranked_query]
    return _Ranked(labels=labels[order], query=ranked_query, rank=rank, n_queries=n_queries)


def _prepare(labels: ArrayLike, scores: ArrayLike, queries: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    label_array, score_array = _as_1d(labels, "labels"), _as_1d(scores, "scores")
    if len(label_array) == 0:
        raise ValueError("ranking metrics need at least one row, found none")
    if len(label_array) != len(score_array):
        raise ValueError(f"labels and scores must have the same length, found {len(label_array)} and {len(score_array)}")
    if np.isnan(score_array).any():
        raise ValueError(f"scores must not be NaN, found {int(np.isnan(score_array).sum())} NaN score(s)")
    if (np.isnan(label_array) | (label_array < 0)).any():
        raise ValueError("labels must be non-negative numbers, found negative or NaN labels")
    query, n_queries = _query_index(queries, len(label_array))
    return label_array, score_array, query, n_queries


def _dcg(ranked: _Ranked, k: int) -> np.ndarray:
    top = ranked.rank < k
    gains = (np.exp2(ranked.labels[top]) - 1.0) / np.log2(ranked.rank[top] + 2.0)
    return np.bincount(ranked.query[top], weights=gains, minlength=ranked.n_queries)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, found {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, found {k}")


def per_query_ndcg(labels: ArrayLike, scores: ArrayLike, queries: ArrayLike, k: int) -> np.ndarray:
    """NDCG@k of every query (for paired bootstrap tests between two rankings).

    Args:
        labels: (n,) non-negative graded relevance labels.
        scores: (n,) model scores; higher ranks first.
        queries: group sizes (Q,) or query ids (n,), see the module docstring.
        k: cut-off.

    Returns:
        (Q,) NDCG@k per query; 1.0 for a query without a relevant item.
    """
    _check_k(k)
    label_array, score_array, query, n_queries = _prepare(labels, scores, queries)
    dcg = _dcg(_rank(label_array, score_array, query, n_queries), k)
    ideal = _dcg(_rank(label_array, label_array, query, n_queries), k)
    out = np.ones(n_queries)
    np.divide(dcg, ideal, out=out, where=ideal > 0)
    return out


def ndcg_at_k(labels: ArrayLike, scores: ArrayLike, queries: ArrayLike, k: int) -> float:
    """Mean NDCG@k over queries, as LightGBM's ``ndcg@k`` computes it.

    Args:
        labels: (n,) non-negative graded relevance labels.
        scores: (n,) model scores; higher ranks first.
        queries: group sizes (Q,) or query ids (n,).
        k: cut-off.

    Returns:
        The mean over queries (queries without a relevant item count as 1).
    """
    return float(per_query_ndcg(labels, scores, queries, k).mean())


def per_query_average_precision(labels: ArrayLike, scores: ArrayLike, queries: ArrayLike, k: int) -> np.ndarray:
    """AP@k of every query, as LightGBM's ``map@k``: hits' precisions summed over min(k, relevant).

    Returns:
        (Q,) AP@k per query; 1.0 for a query without a relevant item.
    """
    _check_k(k)
    label_array, score_array, query, n_queries = _prepare(labels, scores, queries)
    ranked = _rank(label_array, score_array, query, n_queries)
    hit = ranked.labels > 0
    top = ranked.rank < k
    hits_so_far = np.cumsum(hit & top)
    hits_before_query = np.concatenate(([0], hits_so_far))[np.searchsorted(ranked.query, np.arange(n_queries))]
    precision = (hits_so_far - hits_before_query[ranked.query]) / (ranked.rank + 1.0)
    summed = np.bincount(ranked.query[hit & top], weights=precision[hit & top], minlength=n_queries)
    n_relevant = np.bincount(ranked.query[hit], minlength=n_queries)
    out = np.ones(n_queries)
    np.divide(summed, np.minimum(n_relevant, k), out=out, where=n_relevant > 0)
    return out


def map_at_k(labels: ArrayLike, scores: ArrayLike, queries: ArrayLike, k: int) -> float:
    """Mean average precision at k (LightGBM's ``map@k``; queries without a relevant item count as 1)."""
    return float(per_query_average_precision(labels, scores, queries, k).mean())


def per_query_reciprocal_rank(labels: ArrayLike, scores: ArrayLike, queries: ArrayLike) -> np.ndarray:
    """1 / rank of the first relevant item of every query (0 for a query without one); shape (Q,)."""
    label_array, score_array, query, n_queries = _prepare(labels, scores, queries)
    ranked = _rank(label_array, score_array, query, n_queries)
    hit = ranked.labels > 0
    first_rank = np.full(n_queries, np.inf)
    np.minimum.at(first_rank, ranked.query[hit], ranked.rank[hit])
    return 1.0 / (first_rank + 1.0)


def mrr(labels: ArrayLike, scores: ArrayLike, queries: ArrayLike) -> float:
    """Mean reciprocal rank of the first relevant item (queries without one contribute 0)."""
    return float(per_query_reciprocal_rank(labels, scores, queries).mean())


def ranking_report(
    labels: ArrayLike, scores: ArrayLike, group: ArrayLike, ks: Sequence[int] = (5, 10)
) -> dict[str, float]:
    """The ranking figures logged for every model and baseline.

    Args:
        labels: (n,) non-negative graded relevance labels.
        scores: (n,) scores; higher ranks first.
        group: group sizes (Q,) or query ids (n,).
        ks: NDCG cut-offs; MAP is taken at the largest.

    Returns:
        ``{"ndcg_at_5": ..., "ndcg_at_10": ..., "map_at_10": ..., "mrr": ...}`` for the default ``ks``.
    """
    if not ks:
        raise ValueError("ks must name at least one cut-off, found none")
    report = {f"ndcg_at_{k}": ndcg_at_k(labels, scores, group, k) for k in ks}
    report[f"map_at_{max(ks)}"] = map_at_k(labels, scores, group, max(ks))
    report["mrr"] = mrr(labels, scores, group)
    return report
