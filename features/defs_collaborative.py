"""Collaborative signal: how close the candidate is to this user's earlier items, by who touched both.

For logs that say nothing about items (a ratings log: user, item, stars, time), the only personal
signal is in the co-occurrences: items touched by the same users. For a query on UTC day ``d``,
``X`` is the user x item incidence of every event before ``d``, ``C = X'X`` the number of users who
touched both items, ``S = C / sqrt(n_i n_j)`` (cosine, zero diagonal) and the user's history is
their row of ``X``: every figure uses events before the query's day only (strictly before ``t``).
The day's ``C`` is the previous day's plus the pairs first touched that day, so each day costs the
new pairs, not the whole log.

These features are in ``ranker_implicit`` (the set for implicit-feedback queries) and not in
``ranker_default``: on logs with slates the affinity features already carry this signal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.context import BuildContext
from features.registry import feature
from features.timeline import DAY_MS

GROUP = "collaborative"


@feature(dtype="float32", grain="user_item", known="request", group=GROUP, fill=0.0)
def ui_cooccur_sum(ctx: BuildContext) -> np.ndarray:
    """Sum of the item's cosine co-occurrence with each item this user touched before the query's day."""
    return _cooccurrence(ctx)[0]


@feature(dtype="float32", grain="user_item", known="request", group=GROUP, fill=0.0)
def ui_cooccur_mean(ctx: BuildContext) -> np.ndarray:
    """Mean of the item's cosine co-occurrence with the items this user touched before the query's day."""
    return _cooccurrence(ctx)[1]


@feature(dtype="float32", grain="user_item", known="request", group=GROUP, fill=0.0)
def ui_cooccur_max(ctx: BuildContext) -> np.ndarray:
    """Largest cosine co-occurrence of the item with an item this user touched before the query's day."""
    return _cooccurrence(ctx)[2]


def _cooccurrence(ctx: BuildContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return ctx.memo(("cooccurrence",), lambda: cooccurrence_scores(
        ctx.ev_user, ctx.ev_item, ctx.ev_ms, ctx.q_user, ctx.q_item, ctx.q_ms, ctx.n_users, ctx.n_items))


def cooccurrence_scores(ev_user, ev_item, ev_ms, q_user, q_item, q_ms, n_users: int,
                        n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum, mean, max) per query of the candidate's cosine co-occurrence with the user's earlier items.

    Args:
        ev_user, ev_item: (n_events,) int codes (negative: ignored); ev_ms: event times, epoch ms.
        q_user, q_item: (n_queries,) int codes; q_ms: query times, epoch ms.
        n_users, n_items: code ranges.

    Returns:
        Three (n_queries,) float64 arrays; 0 when the user has no earlier item (or nothing co-occurs).
    """
    out = np.zeros((3, len(q_user)))
    if len(q_user) == 0 or len(ev_user) == 0:
        return out[0], out[1], out[2]
    keep = (np.asarray(ev_user) >= 0) & (np.asarray(ev_item) >= 0)
    pairs = pd.DataFrame({"u": np.asarray(ev_user)[keep], "i": np.asarray(ev_item)[keep],
                          "day": np.asarray(ev_ms)[keep] // DAY_MS})
    first = pairs.groupby(["u", "i"], sort=False)["day"].min().reset_index()  # the day each pair appears
    q_day = np.asarray(q_ms) // DAY_MS
    shape = (max(n_users, 1), max(n_items, 1))
    x = sp.csr_matrix(shape, dtype=np.float64)
    c = sp.csr_matrix((shape[1], shape[1]), dtype=np.float64)
    added_until = None
    for day in np.unique(q_day):
        new = first[(first["day"] < day) & ((first["day"] >= added_until) if added_until is not None else True)]
        if len(new):
            delta = sp.csr_matrix((np.ones(len(new)), (new["u"].to_numpy(), new["i"].to_numpy())), shape=shape)
            c = c + delta.T @ x + x.T @ delta + delta.T @ delta
            x = x + delta
        added_until = day
        rows = np.flatnonzero(q_day == day)
        out[:, rows] = _scores(x, c, np.asarray(q_user)[rows], np.asarray(q_item)[rows])
    return out[0], out[1], out[2]


# A day's query rows are scored a slice at a time: at most this many (earlier item, candidate) pairs at once.
# At 8.5M events (19.3M query rows, 1,000 items), scoring a day at once took each row's similarity row
# from S (a dense ~1,000 items each): 13 GB.
PAIRS_PER_SLICE = 4_000_000
DENSE_ITEMS = 4096  # up to this many items S is read as a dense array (<= 128 MiB), beyond that by rows


def _scores(x: sp.csr_matrix, c: sp.csr_matrix, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(3, len(users)): sum, mean and max over the user's items j of S[j, item]."""
    n = c.diagonal()
    scale = sp.diags(np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1)), 0.0))
    s = (scale @ (c - sp.diags(n)) @ scale).tocsr()
    dense = s.toarray() if s.shape[0] <= DENSE_ITEMS else None
    pairs = np.diff(x.indptr)[users] + (0 if dense is not None else np.diff(s.indptr)[items])
    reach = np.cumsum(pairs, dtype=np.int64)
    out = np.zeros((3, len(users)))
    start = 0
    while start < len(users):  # rows [start, stop): at most PAIRS_PER_SLICE pairs, at least one row
        before = int(reach[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(reach, before + PAIRS_PER_SLICE, side="right")))
        out[:, start:stop] = _slice_scores(x[users[start:stop]], s, dense, items[start:stop])
        start = stop
    return out


def _slice_scores(history: sp.csr_matrix, s: sp.csr_matrix, dense: np.ndarray | None,
                  items: np.ndarray) -> np.ndarray:
    """:func:`_scores` of some rows: ``history`` their users' rows of X. The products history[j] * S[item, j]
    are S's stored values (history is 0/1), read for the user's items only when S is dense; the same values
    in the same (ascending j) order either way, so the same sums to the last bit."""
    if dense is None:
        both = history.multiply(s[items]).tocsr()
    else:
        counts = np.diff(history.indptr)
        row = np.repeat(np.arange(len(items)), counts)
        values = dense[items[row], history.indices]  # S[item, j], as the rows of S the product takes
        kept = values != 0  # S stores no zero (scipy drops them): nor does the product
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row[kept], minlength=len(items)))])
        both = sp.csr_matrix((values[kept], history.indices[kept], indptr), shape=history.shape)
    total = np.asarray(both.sum(axis=1)).ravel()
    seen = np.diff(history.indptr)
    best = np.asarray(both.max(axis=1).todense()).ravel() if both.shape[0] else np.zeros(0)
    return np.vstack([total, total / np.maximum(seen, 1), best])
