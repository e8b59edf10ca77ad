"""Point-in-time aggregates: for each query (key, t), aggregates over events of that key with ts < t.

Events are sorted once on the composite int64 ``key * span + time`` (time in milliseconds, or
seconds when milliseconds would overflow int64); queries are sorted the same way, and every
window boundary is one ``np.searchsorted`` of the sorted queries (fast: sorted needles).
Counts and sums are differences of prefix sums. Sums are over int64 fixed-point values, so they
are exact and do not depend on the input row order.

Flooring both event and query times to the same unit keeps strictness: floor(e) < floor(t)
implies e < t, so an event at (or just before, within one unit of) t is never visible to t.
"""

from __future__ import annotations

import numpy as np

DAY_MS = 86_400_000
_LIMIT = np.int64(2) ** 62
FIXED_POINT = 1_000_000  # fixed-point scale of summed float values (1e-6 resolution)


def to_fixed(values: np.ndarray) -> np.ndarray:
    """Float values -> int64 fixed point; NaN -> 0."""
    return np.rint(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0) * FIXED_POINT).astype(np.int64)


# Queries answered this many at a time: their sort and search arrays stay small (the events' side is whole).
_QUERY_CHUNK = 1 << 20


def counts_before(event_key, event_ms, query_key, query_ms) -> np.ndarray:
    """Per query: number of events with the query's key and a time strictly before its time (int64).

    For few, small keys (positions, one global key): a plain sort, no argsort, no prefix sums. The
    events are sorted once; the queries are answered ``_QUERY_CHUNK`` at a time (each chunk's needles
    sorted for cache-friendly searches), so the query side never holds more than a chunk's arrays.
    """
    event_key, event_ms = np.asarray(event_key), np.asarray(event_ms)
    query_key, query_ms = np.asarray(query_key), np.asarray(query_ms)
    counts = np.zeros(len(query_key), dtype=np.int64)
    if len(event_key) == 0:
        return counts
    t0 = int(min(np.min(event_ms), np.min(query_ms, initial=np.iinfo(np.int64).max))) - 1
    span = max(int(np.max(event_ms)), int(np.max(query_ms, initial=0))) - t0 + 2
    n_keys = int(max(event_key.max(), query_key.max(initial=0))) + 2
    if n_keys * span >= _LIMIT:
        raise ValueError(f"{n_keys} keys over {span} ms overflow int64 composite keys")
    keep = event_key >= 0
    comp = event_key[keep].astype(np.int64)  # key * span + (ms - t0), built in place
    comp *= span
    ms = event_ms[keep].astype(np.int64)
    ms -= t0
    comp += ms
    del ms, keep
    comp.sort()
    for lo in range(0, len(query_key), _QUERY_CHUNK):
        key = query_key[lo:lo + _QUERY_CHUNK].astype(np.int64)
        block = np.where(key >= 0, key, n_keys) * span
        needles = block + (query_ms[lo:lo + _QUERY_CHUNK].astype(np.int64) - t0)
        order = np.argsort(needles)  # sorted needles make searchsorted cache-friendly
        part = np.empty(len(needles), dtype=np.int64)
        part[order] = np.searchsorted(comp, needles[order]) - np.searchsorted(comp, block[order])
        counts[lo:lo + len(part)] = part
    return counts


def _composite(key: np.ndarray, ms: np.ndarray, span: np.int64, t0: int, unit: int) -> np.ndarray:
    """``key * span + (ms - t0) // unit`` as int64, built in place (one new array besides the time's)."""
    comp = key.astype(np.int64)  # a copy even when already int64: the caller's array is never changed
    comp *= span
    offset = ms.astype(np.int64)
    offset -= t0
    offset //= unit
    comp += offset
    return comp


class Timeline:
    """Events of one grain, sorted by (key, time), answering queries (key, t) strictly before t.

    Args:
        event_key: int codes per event (shape (n_events,)); negative = ignore the event.
        event_ms: event time in epoch milliseconds (n_events,).
        query_key: int codes per query (n_queries,); negative = no key (every aggregate is empty).
        query_ms: query time in epoch milliseconds (n_queries,).
        max_window_ms: longest window that will be asked for.
        tiebreak: optional per-event values ordering events of equal (key, time), so that
            ``last_value`` does not depend on the input row order.
    """

    def __init__(self, event_key, event_ms, query_key, query_ms, max_window_ms: int = 28 * DAY_MS, tiebreak=None):
        # The keys as given (int32 codes stay int32: no int64 copy of every event's key); the composite
        # keys below are built in place, one int64 array at a time (the stage's peak is a timeline's build).
        event_key, query_key = np.asarray(event_key), np.asarray(query_key)
        n_keys = int(max(event_key.max(initial=-1), query_key.max(initial=-1))) + 1
        times = np.concatenate([event_ms, query_ms]) if len(event_ms) + len(query_ms) else np.zeros(1, np.int64)
        t0 = int(times.min()) - max_window_ms - 1
        span_ms = int(times.max()) - t0 + 1
        self.unit = 1 if (n_keys + 1) * span_ms < _LIMIT else 1000
        span = span_ms // self.unit + 2
        if (n_keys + 1) * span >= _LIMIT:
            raise ValueError(f"{n_keys} keys over {span_ms} ms overflow int64 composite keys even in seconds")
        self.span = np.int64(span)
        self._n_events = len(event_key)
        keep = np.flatnonzero(event_key >= 0)
        comp = _composite(event_key[keep], np.asarray(event_ms)[keep], self.span, t0, self.unit)
        # Ties need no order (sums are exact, times equal) unless last_value must pick among them.
        order = np.argsort(comp) if tiebreak is None else np.lexsort((np.asarray(tiebreak)[keep], comp))
        index_type = np.int32 if self._n_events < 2**31 else np.int64
        self.order = keep.astype(index_type)[order]  # original event row of each sorted position
        del keep
        self.comp = comp[order]
        del comp, order
        self.t0 = t0
        valid = query_key >= 0
        qcomp = _composite(np.where(valid, query_key, 0), np.asarray(query_ms), self.span, t0, self.unit)
        # Positions (sorted queries, sorted events) as int32 when they fit: a timeline holds several
        # per query (order, hi, one lo per window), half the memory of int64 at 7.5M impressions.
        self._position_type = np.int32 if max(len(qcomp), len(self.order)) < 2**31 - 1 else np.int64
        self.q_order = np.argsort(qcomp).astype(self._position_type)
        self.q_comp = qcomp[self.q_order]
        self.q_valid = valid[self.q_order]
        self.hi = self._search(self.q_comp)
        self._lo: dict[int | None, np.ndarray] = {}

    def _search(self, needles: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.comp, needles, side="left").astype(self._position_type)

    def lo(self, window_ms: int | None) -> np.ndarray:
        """First sorted position inside the window [t - window, t) (None: the key's whole past)."""
        if window_ms not in self._lo:
            block = (self.q_comp // self.span) * self.span  # the start of each query's key
            bound = block if window_ms is None else np.maximum(self.q_comp - window_ms // self.unit, block)
            del block
            self._lo[window_ms] = np.where(self.q_valid, self._search(bound), self.hi)
        return self._lo[window_ms]

    def _unsort(self, values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        out[self.q_order] = values
        return out

    def unsort(self, values: np.ndarray) -> np.ndarray:
        """Per-query ``values`` in this timeline's query order (:meth:`total_sorted`'s) back in the original
        order: a random scatter (~50 ms at 7.5M queries), so a feature that combines several totals of
        one timeline does its arithmetic in sorted order and unsorts once."""
        return self._unsort(np.asarray(values))

    def queries_sorted(self, values: np.ndarray) -> np.ndarray:
        """Per-query ``values`` (original order) in this timeline's query order."""
        return np.asarray(values)[self.q_order]

    def prefix(self, values: np.ndarray | None) -> np.ndarray:
        """Prefix sums (n_sorted + 1,) of per-event ``values`` (None: count every event)."""
        if values is None:
            return np.arange(len(self.comp) + 1, dtype=np.int64)
        return self.prefix_sorted(np.asarray(values)[self.order])

    def prefix_sorted(self, sorted_values: np.ndarray) -> np.ndarray:
        """Prefix sums of per-event values already in sorted order (see :attr:`order`)."""
        small = sorted_values.dtype == bool and len(sorted_values) < 2**31  # counts fit int32: half the traffic
        out = np.zeros(len(sorted_values) + 1, dtype=np.int32 if small else np.int64)
        np.cumsum(sorted_values, dtype=out.dtype, out=out[1:])
        return out

    def total(self, prefix: np.ndarray, window_ms: int | None) -> np.ndarray:
        """Per query: the sum behind ``prefix`` over the window (int64, original query order)."""
        return self._unsort(self.total_sorted(prefix, window_ms))

    def total_sorted(self, prefix: np.ndarray, window_ms: int | None) -> np.ndarray:
        """:meth:`total` in this timeline's query order (see :meth:`unsort`)."""
        return prefix[self.hi].astype(np.int64) - prefix[self.lo(window_ms)]

    def last_ms(self, prefix_count: np.ndarray, mask: np.ndarray, window_ms: int | None = None) -> np.ndarray:
        """Per query: epoch ms (float64, unit-floored) of the latest masked event before t; NaN if none."""
        return self._nth_ms(prefix_count, mask, window_ms, last=True)

    def first_ms(self, prefix_count: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per query: epoch ms (float64, unit-floored) of the key's first masked event before t; NaN if none."""
        return self._nth_ms(prefix_count, mask, None, last=False)

    def _nth_ms(self, prefix_count, mask, window_ms, *, last: bool) -> np.ndarray:
        lo = self.lo(window_ms)
        present = prefix_count[self.hi] > prefix_count[lo]
        positions = np.flatnonzero(np.asarray(mask)[self.order])
        rank = np.where(present, prefix_count[self.hi] - 1 if last else prefix_count[lo], 0)
        idx = positions[rank] if len(positions) else np.zeros(len(rank), dtype=np.int64)
        rel = (self.comp[idx] % self.span) * self.unit + self.t0 if len(self.comp) else idx
        return self._unsort(np.where(present, rel.astype(np.float64), np.nan))

    def last_value(self, prefix_count, mask, values) -> np.ndarray:
        """Per query: ``values`` of the latest masked event before t (NaN if none; ties: by tiebreak)."""
        present = prefix_count[self.hi] > prefix_count[self.lo(None)]
        positions = np.flatnonzero(np.asarray(mask)[self.order])
        rank = np.where(present, prefix_count[self.hi] - 1, 0)
        idx = positions[rank] if len(positions) else np.zeros(len(rank), dtype=np.int64)
        picked = np.asarray(values, dtype=np.float64)[self.order][idx] if len(positions) else np.zeros(len(rank))
        return self._unsort(np.where(present, picked, np.nan))
