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

from pathlib import Path

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
    # keep: a build by user bucket is given the scores (CooccurrenceDays), held with what is kept until forgotten
    return ctx.memo(("cooccurrence",), lambda: cooccurrence_scores(
        ctx.ev_user, ctx.ev_item, ctx.ev_ms, ctx.q_user, ctx.q_item, ctx.q_ms, ctx.n_users, ctx.n_items), keep=True)


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
    first = _first_pairs(ev_user, ev_item, ev_ms)
    q_day = np.asarray(q_ms) // DAY_MS
    shape = (max(n_users, 1), max(n_items, 1))
    for day, x, c in _walk(first, np.unique(q_day), shape):
        rows = np.flatnonzero(q_day == day)
        out[:, rows] = _scores(x, _similarity(c), np.asarray(q_user)[rows], np.asarray(q_item)[rows])
    return out[0], out[1], out[2]


# Events packed at once into :func:`_first_pairs`' sort keys (its temporaries are this many events' values).
PACK_ROWS = 1 << 22


def _first_pairs(ev_user, ev_item, ev_ms) -> pd.DataFrame:
    """The (user ``u``, item ``i``) pairs of the events with a code each, and the UTC ``day`` each first appears,
    in pair order. (:func:`_walk` makes X and C canonical, so the order of the pairs does not reach a value.)

    One int64 per event, sorted in place: the pair's key in the high bits and the event's day (from the log's
    first) in the low ones, so a pair's first day is the first of its run. The argsort it replaces held the order,
    the sorted keys and the sorted days (three int64 arrays per event, and their temporaries) while the window's
    events were whole: the 10M e-commerce stage's peak was there. Keys too wide to pack take that path."""
    user, item, ms = np.asarray(ev_user), np.asarray(ev_item), np.asarray(ev_ms)
    chunks = [slice(lo, lo + PACK_ROWS) for lo in range(0, len(user), PACK_ROWS)]
    kept = [(user[c] >= 0) & (item[c] >= 0) for c in chunks]
    n = sum(int(k.sum()) for k in kept)
    if n == 0:
        return _first_pairs_by_argsort(user, item, ms)
    n_users = n_items = 0
    low, high = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    for c, k in ((c, k) for c, k in zip(chunks, kept, strict=True) if k.any()):  # the ranges, a chunk at a time
        day = ms[c][k] // DAY_MS
        n_users, n_items = max(n_users, int(user[c][k].max()) + 1), max(n_items, int(item[c][k].max()) + 1)
        low, high = min(low, int(day.min())), max(high, int(day.max()))
    day_bits = max((high - low).bit_length(), 1)
    if (n_users * n_items).bit_length() + day_bits > 62:
        return _first_pairs_by_argsort(user, item, ms)
    packed, at = np.empty(n, dtype=np.int64), 0
    for c, k in zip(chunks, kept, strict=True):
        piece = user[c][k].astype(np.int64)
        piece *= n_items
        piece += item[c][k]
        piece <<= day_bits
        piece |= ms[c][k] // DAY_MS - low
        packed[at:at + len(piece)] = piece
        at += len(piece)
    del kept, piece
    packed.sort()  # equal values are equal: no stable sort needed
    # Each pair's first value (the first of its run) moved to the front of ``packed``, a chunk at a time (a chunk's
    # firsts never pass its own start): no index per pair, nor a gathered copy, beside the sorted events.
    kept_rows, previous = 0, None
    for lo in range(0, n, PACK_ROWS):
        block = packed[lo:lo + PACK_ROWS]
        key = block >> day_bits
        starts = np.empty(len(key), dtype=bool)
        starts[0] = previous is None or key[0] != previous
        np.not_equal(key[1:], key[:-1], out=starts[1:])
        previous = key[-1]
        chosen = block[starts]
        del key, starts, block
        packed[kept_rows:kept_rows + len(chosen)] = chosen
        kept_rows += len(chosen)
        del chosen
    first = packed[:kept_rows].copy()
    del packed
    # The columns made in place or straight into their dtypes, and the frame over them as they are (copy=False):
    # the int64 quotient and remainder and the frame's stacked copy of u and i were the 30M stage's peak.
    pair = first >> day_bits
    first &= (1 << day_bits) - 1
    first += low  # each pair's first day
    u, i = np.empty(len(pair), dtype=user.dtype), np.empty(len(pair), dtype=item.dtype)
    np.floor_divide(pair, n_items, out=u, casting="unsafe")
    np.remainder(pair, n_items, out=i, casting="unsafe")
    del pair
    return pd.DataFrame({"u": u, "i": i, "day": first}, copy=False)


def _first_pairs_by_argsort(ev_user, ev_item, ev_ms) -> pd.DataFrame:
    """:func:`_first_pairs` by an argsort of the pairs' keys (keys too wide to pack with a day, or no pair)."""
    keep = (np.asarray(ev_user) >= 0) & (np.asarray(ev_item) >= 0)
    n_items = np.int64(np.asarray(ev_item)[keep].max(initial=-1)) + 1
    key = np.asarray(ev_user)[keep].astype(np.int64) * n_items + np.asarray(ev_item)[keep]
    order = np.argsort(key, kind="stable")
    key = key[order]
    day = (np.asarray(ev_ms)[keep] // DAY_MS)[order]
    del order
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, dtype=np.intp)
    first = key[starts]
    return pd.DataFrame({"u": (first // max(n_items, 1)).astype(np.asarray(ev_user).dtype),
                         "i": (first % max(n_items, 1)).astype(np.asarray(ev_item).dtype),
                         "day": np.minimum.reduceat(day, starts) if len(starts) else day[:0]}, copy=False)


def _walk(first: pd.DataFrame, days: np.ndarray, shape: tuple[int, int], *, counts: bool = True):
    """Per day of ``days`` (ascending): (day, X, C) of the pairs first touched before it. The day's C is the
    previous one's plus the new pairs' (each day costs its new pairs, not the whole log); ``counts=False``: X only
    (C is None), for a bucket of users scored with the window's saved S."""
    x = sp.csr_matrix(shape, dtype=np.float64)
    c = sp.csr_matrix((shape[1], shape[1]), dtype=np.float64) if counts else None
    added_until = None
    for day in days:
        new = first[(first["day"] < day) & ((first["day"] >= added_until) if added_until is not None else True)]
        if len(new):
            delta = sp.csr_matrix((np.ones(len(new)), (new["u"].to_numpy(), new["i"].to_numpy())), shape=shape)
            if counts:
                c = c + delta.T @ x + x.T @ delta + delta.T @ delta
            x = x + delta
        added_until = day
        yield int(day), x, c


def _similarity(c: sp.csr_matrix) -> sp.csr_matrix:
    """S = C / sqrt(n_i n_j) with a zero diagonal (n: C's diagonal, each item's users)."""
    n = c.diagonal()
    scale = sp.diags(np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1)), 0.0))
    return (scale @ (c - sp.diags(n)) @ scale).tocsr()


class CooccurrenceDays:
    """The window's S of each query day, kept in a folder, for scoring one bucket of users' queries at a time.

    S counts *every* user's pairs; a query's score also reads its own user's earlier items, which a bucket of
    users holds whole. So the window's walk is made once, as the builder over the whole window makes it (its
    codes, its query days: the same S to the last bit), and each day's S saved; a bucket's scores are then
    :func:`_scores` of its own users' rows of X (the same rows: the items in the window's codes) and the saved S,
    summed in the same order: the builder's values, bit for bit (``tests/features/test_partitioned.py``)."""

    def __init__(self, items: pd.Index, folder: Path, days: set[int]) -> None:
        self.items, self.folder, self.days = items, folder, days

    @classmethod
    def build(cls, queries: pd.DataFrame, events: pd.DataFrame, *, items: pd.DataFrame | None,
              users: pd.DataFrame | None, folder: Path) -> CooccurrenceDays:
        """From the window's queries and events (``user_id``, ``item_id``, ``ts``) and the catalogue tables (coded as
        ``features.context.BuildContext`` codes them); the S files go into ``folder``."""
        from features.context import _ms

        return cls.from_parts(queries["user_id"], queries["item_id"], np.unique(_ms(queries["ts"]) // DAY_MS), events,
                              items=items, users=users, folder=folder)

    @classmethod
    def from_parts(cls, query_users: pd.Series, query_items: pd.Series, days: np.ndarray, events: pd.DataFrame, *,
                   items: pd.DataFrame | None, users: pd.DataFrame | None, folder: Path) -> CooccurrenceDays:
        """:meth:`build` from what it reads of the queries: their user ids (any subset holding those not among the
        events': only their number counts), their item ids in the order the window's rows first name them (each
        once will do: the builder numbers items by first appearance, and a score sums in that order), and their
        UTC days (days since 1970-01-01): for queries that are never in memory whole."""
        from features.context import _codes, _codes_and_uniques, _ms

        folder.mkdir(parents=True, exist_ok=True)
        # The builder's codes (numbered over the queries' ids, then the events', then the catalogue's); of the
        # queries' codes only the largest is kept (19.3M rows each at 10M events of a log without slates).
        user_ids = [] if users is None else [users["user_id"]]
        codes = _codes(query_users, events["user_id"], *user_ids)
        n_users = max(max(int(c.max(initial=-1)) for c in codes) + 1, 1)
        ev_user = codes[1].astype(np.int32)
        item_ids = [query_users.iloc[:0]] if items is None else [items["item_id"]]
        codes, values = _codes_and_uniques(query_items, events["item_id"], *item_ids)
        shape = (n_users, max(max(int(c.max(initial=-1)) for c in codes) + 1, 1))
        ev_item = codes[1].astype(np.int32)
        del codes
        first = _first_pairs(ev_user, ev_item, _ms(events["ts"]))
        del ev_user, ev_item
        days = np.unique(np.asarray(days, dtype=np.int64))
        for day, _, c in _walk(first, days, shape):
            s = _similarity(c)
            if s.shape[0] <= DENSE_ITEMS:
                np.save(folder / f"{day}.npy", s.toarray())
            else:
                sp.save_npz(folder / f"{day}.npz", s, compressed=False)
        return cls(pd.Index(values[:shape[1]], dtype=object), folder, set(days.tolist()))

    def scores(self, queries: pd.DataFrame, events: pd.DataFrame) -> np.ndarray:
        """(3, len(queries)): sum, mean and max, for queries whose users' events are all in ``events``."""
        from features.context import _codes, _ms

        out = np.zeros((3, len(queries)))
        if len(queries) == 0:
            return out
        q_user, ev_user = _codes(queries["user_id"], events["user_id"])
        q_item = self.items.get_indexer(pd.Series(queries["item_id"], dtype=object))
        ev_item = self.items.get_indexer(pd.Series(events["item_id"], dtype=object))
        q_day = _ms(queries["ts"]) // DAY_MS
        missing = sorted(set(np.unique(q_day).tolist()) - self.days)
        if missing:
            raise ValueError(f"no co-occurrence saved for query days {missing[:3]}: the window's walk did not see them")
        first = _first_pairs(ev_user.astype(np.int32), ev_item.astype(np.int32), _ms(events["ts"]))
        shape = (max(int(max(q_user.max(initial=-1), ev_user.max(initial=-1))) + 1, 1), max(len(self.items), 1))
        for day, x, _ in _walk(first, np.unique(q_day), shape, counts=False):
            rows = np.flatnonzero((q_day == day) & (q_user >= 0) & (q_item >= 0))  # no id: nothing co-occurs
            dense = self.folder / f"{day}.npy"
            s = np.load(dense) if dense.exists() else sp.load_npz(self.folder / f"{day}.npz").tocsr()
            out[:, rows] = _scores(x, s, q_user[rows], q_item[rows])
        return out


# A day's query rows are scored a slice at a time: at most this many (earlier item, candidate) pairs at once.
# At 8.5M events (19.3M query rows, 1,000 items), scoring a day at once took each row's similarity row
# from S (a dense ~1,000 items each): 13 GB.
PAIRS_PER_SLICE = 4_000_000
DENSE_ITEMS = 4096  # up to this many items S is read as a dense array (<= 128 MiB), beyond that by rows


def _scores(x: sp.csr_matrix, s: sp.csr_matrix | np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(3, len(users)): sum, mean and max over the user's items j of S[j, item] (``s``: S, or S made dense)."""
    dense = s if isinstance(s, np.ndarray) else s.toarray() if s.shape[0] <= DENSE_ITEMS else None
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
