"""The ranker's queries: logged slates, or implicit-feedback queries for logs without them.

A log with slates (``impression`` events) gives the ranker what was shown and what was engaged
with (:func:`features.labels.impressions`). A log without them (views, clicks, purchases, ratings
only) says nothing about what the user passed over, so each query is built the standard
implicit-feedback way: one user's session (or UTC day), the items the user engaged with, graded
by the label table, plus candidates sampled from the items known before the query's day, half
popularity-weighted and half uniform by default, that the user did not touch in the query (grade 0).

Every row of an implicit query is dated at the query's request time (its first event): features
see only what happened before it, for engaged items and sampled candidates alike. Rows carry no
position (a sampled candidate has none) and one value per item for category and content type, so
neither tells the two apart. Each query's draw depends only on the seed, the query id and the
events before its day, so adding later events never changes an earlier query.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from core.config.features import FeatureSettings, ImplicitQuerySettings, LabelSettings
from core.schema import EventType
from features.labels import (
    OUTPUT_COLUMNS,
    _check_events,
    _fallback_query,
    _sorted_codes,
    _ts_us,
    _with_optional_columns,
    event_grades,
)

log = logging.getLogger(__name__)

LOGGED, IMPLICIT = "logged_slates", "implicit_sampled"
QUERY_CONTEXT = ("device", "mood", "time_of_day")  # taken from the query's first event
ITEM_ATTRIBUTES = ("content_type", "category")  # one value per item (its first in the window)
_DAY_US = 86_400 * 1_000_000
_NUMERIC = ("position", "propensity")  # null on every implicit row
UNSET = (*_NUMERIC, "policy_version")  # no implicit row has a value in these
_SLICE = 1 << 20  # rows per slice of a per-row computation with temporaries


@dataclass(frozen=True)
class QueryProtocol:
    """Which queries the ranker (and every baseline, on the same test rows) was trained and judged on."""

    name: str  # LOGGED or IMPLICIT
    reason: str
    logged_queries: int
    settings: dict[str, Any]
    note: str = ""  # a warning for the user (e.g. too short a history for implicit queries)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for logs and summaries."""
        if self.name == LOGGED:
            return f"{LOGGED}: {self.reason}"
        s = self.settings
        return (f"{IMPLICIT}: {self.reason}; per {s['query_by']}, engaged items + {s['popular_negatives']} "
                f"popularity-weighted + {s['uniform_negatives']} uniform candidates (seed {s['seed']})")


def logged_query_count(events: pd.DataFrame) -> int:
    """Queries (request, else user session, else user day) holding at least one impression event."""
    is_shown = (events["event_type"] == EventType.IMPRESSION.value).to_numpy(dtype=bool, na_value=False)
    if not is_shown.any():
        return 0
    # The request ids' distinct values made text (not every impression's: ~0.5 GB of strings at 10M
    # events), and the fallback ids only where request_id is missing, from those rows' columns only:
    # the same ids as _fallback_query over every impression, without copying the window's events.
    if "request_id" in events.columns:
        request = events["request_id"][is_shown]
        has_request = request.notna().to_numpy()
        queries = [pd.Series(pd.unique(request[has_request])).astype("string")]
        del request
    else:
        has_request, queries = np.zeros(int(is_shown.sum()), dtype=bool), []
    if not has_request.all():
        rows = np.flatnonzero(is_shown)[~has_request]
        shown = events[[c for c in ("user_id", "ts", "request_id", "session_id") if c in events.columns]].iloc[rows]
        absent = [c for c in ("request_id", "session_id") if c not in shown.columns]
        shown = shown.assign(**{c: pd.Series(None, index=shown.index, dtype=object) for c in absent})
        queries.append(_fallback_query(shown))
    return int(pd.concat(queries, ignore_index=True).nunique())


def choose_protocol(events: pd.DataFrame, settings: ImplicitQuerySettings) -> QueryProtocol:
    """Logged slates when the window has enough of them (or ``mode`` says so), else implicit queries."""
    return protocol_for(logged_query_count(events), settings)


def protocol_for(logged: int, settings: ImplicitQuerySettings) -> QueryProtocol:
    """:func:`choose_protocol` given the window's count of logged slates (``logged_query_count``; a
    partitioned run sums it over partitions that share no query)."""
    used = settings.model_dump(mode="json")
    if settings.mode == "logged":
        return QueryProtocol(LOGGED, "mode=logged", logged, {})
    if settings.mode == "implicit":
        return QueryProtocol(IMPLICIT, "mode=implicit", logged, used)
    if logged >= settings.min_logged_queries:
        return QueryProtocol(LOGGED, f"{logged} logged slates >= min_logged_queries {settings.min_logged_queries}",
                             logged, {})
    return QueryProtocol(IMPLICIT, f"{logged} logged slates < min_logged_queries {settings.min_logged_queries}",
                         logged, used)


def feature_set_for(protocol: QueryProtocol, settings: FeatureSettings) -> str:
    """The feature set the ranker trains on for queries built by ``protocol``."""
    return settings.implicit_feature_set if protocol.name == IMPLICIT else settings.feature_set


@dataclass(frozen=True)
class ImplicitPool:
    """What the candidate draws read of the whole window: its items and their events per UTC day.

    A query's rows depend on its own user's events and on this alone (the pool of each day is every item
    with an event before it; popularity counts events in the ``popularity_days`` before it; an item's
    ``content_type`` and ``category`` are its first values in the window). So a bucket of users' queries, made
    from that bucket's events and the window's pool, are the window's queries of those users, row for row."""

    items: np.ndarray  # the window's item ids (of events naming a user and an item), sorted; codes index it
    first_day: int  # the window's first UTC day (days since 1970-01-01)
    by_day: dict[int, np.ndarray]  # per UTC day holding events, its events' item codes
    attributes: dict[str, pd.Series]  # per ITEM_ATTRIBUTES column the events have: each item's first value

    @property
    def n_items(self) -> int:
        return len(self.items)

    def codes(self, item_ids: pd.Series) -> np.ndarray:
        """Each id's code (its place in ``items``); -1 for an id not in the window."""
        if isinstance(item_ids.dtype, pd.CategoricalDtype):  # through the few categories
            at = self.codes(pd.Series(np.asarray(item_ids.cat.categories, dtype=object)))
            codes = item_ids.cat.codes.to_numpy()
            return np.where(codes >= 0, at[np.maximum(codes, 0)] if len(at) else -1, -1)
        return pd.Index(self.items, dtype=object).get_indexer(np.asarray(item_ids, dtype=object))


def implicit_pool(events: pd.DataFrame, columns: Sequence[str] | None = None) -> ImplicitPool:
    """The window's :class:`ImplicitPool`, from its events (``user_id``, ``item_id``, ``ts``, the item attributes):
    made once and handed to :func:`implicit_queries` of each bucket of users. ``columns``: the query columns that
    will be asked for (None: all); an item attribute not among them is not kept."""
    named = (events["user_id"].notna() & events["item_id"].notna()).to_numpy()
    ev = events[[c for c in ("item_id", "ts", *ITEM_ATTRIBUTES) if c in events.columns]]
    if not named.all():
        ev = ev[named]
    ev = ev.reset_index(drop=True)
    return _pool(ev, *_sorted_codes(ev["item_id"]), _ts_us(ev["ts"]) if len(ev) else np.zeros(0, np.int64),
                 _kept(columns))


def _pool(ev: pd.DataFrame, item_code: np.ndarray, items: np.ndarray, us: np.ndarray,
          wanted: Sequence[str]) -> ImplicitPool:
    """:func:`implicit_pool` of named events ``ev`` given their sorted item codes and times (microseconds)."""
    # The events by UTC day as days since the first (a few dozen: int16, which numpy's stable sort sorts by radix),
    # counted, not found by np.unique of the sorted days: that held the days, their order, the sorted days and
    # unique's own order and copy, an int64 each per event (~0.4 GB at 8.5M events: the 10M stage's peak).
    ev_day = us // _DAY_US
    first_day = int(ev_day.min()) if len(ev_day) else 0
    ev_day -= first_day
    span = int(ev_day.max()) + 1 if len(ev_day) else 0
    ev_day = ev_day.astype(np.int16 if span <= 2**15 else np.int64)
    order = np.argsort(ev_day, kind="stable")
    counts = np.bincount(ev_day, minlength=span)
    del ev_day
    present = np.flatnonzero(counts)
    small = np.int32 if len(items) < 2**31 else np.int64
    by_day = dict(zip((present + first_day).tolist(), np.split(item_code.astype(small)[order],
                                                                np.cumsum(counts[present])[:-1]), strict=True)
                  ) if len(present) else {}
    del order
    attributes = {}
    for column in (c for c in ITEM_ATTRIBUTES if c in ev.columns and c in wanted):
        known = ev[["item_id", column]].dropna(subset=[column]).drop_duplicates("item_id")
        attributes[column] = known.set_index("item_id")[column].reindex(items).reset_index(drop=True)
    return ImplicitPool(items=items, first_day=first_day, by_day=by_day, attributes=attributes)


def ranking_queries(events: pd.DataFrame, settings: LabelSettings, *, categorical_ids: bool = False,
                    columns: Sequence[str] | None = None, null_columns: bool = True,
                    protocol: QueryProtocol | None = None) -> tuple[pd.DataFrame, QueryProtocol]:
    """The graded rows the ranker trains and is judged on, and the protocol that built them.

    ``categorical_ids``: implicit queries' ``query_id``, ``user_id`` and ``item_id`` as categoricals
    (:func:`implicit_queries`); logged slates' ids are text either way. ``columns``: only these of
    ``OUTPUT_COLUMNS``, in that order (implicit queries never make the others). ``null_columns=False``: implicit
    queries leave out the columns none of their rows has a value in (:data:`UNSET`). ``protocol``: the window's
    :func:`ranking_protocol`, when the caller has it.

    Returns:
        (rows with ``features.labels.OUTPUT_COLUMNS``, or ``columns``, the protocol).
    """
    from features.labels import impressions

    protocol = protocol or ranking_protocol(events, settings)
    if protocol.name == LOGGED:
        logged = impressions(events, settings)
        return (logged if columns is None else logged[_kept(columns)]), protocol
    return implicit_queries(events, settings, categorical_ids=categorical_ids, columns=columns,
                            null_columns=null_columns), protocol


def ranking_protocol(events: pd.DataFrame, settings: LabelSettings) -> QueryProtocol:
    """:func:`choose_protocol`, logged, with a note when an implicit protocol has too short a history to learn from."""
    protocol = choose_protocol(events, settings.implicit)
    log.info("ranker queries: %s", protocol.describe())
    if protocol.name == LOGGED:
        return protocol
    days = (events["ts"].max() - events["ts"].min()).days if len(events) else 0
    if days < settings.implicit.advised_history_days:
        note = (f"the window holds {days} days of history; implicit queries learn little more than popularity "
                f"from less than {settings.implicit.advised_history_days} (set RANKLOOP_WINDOW__HISTORY_DAYS=91)")
        log.warning("ranker queries: %s", note)
        protocol = replace(protocol, note=note)
    return protocol


def _kept(columns: Sequence[str] | None) -> list[str]:
    """``OUTPUT_COLUMNS`` in ``columns`` (all of them: None), in ``OUTPUT_COLUMNS``' order."""
    unknown = sorted(set(columns or ()) - set(OUTPUT_COLUMNS))
    if unknown:
        raise ValueError(f"no query column(s) {unknown}; the columns are {list(OUTPUT_COLUMNS)}")
    return list(OUTPUT_COLUMNS) if columns is None else [c for c in OUTPUT_COLUMNS if c in set(columns)]


def implicit_queries(events: pd.DataFrame, settings: LabelSettings, *, categorical_ids: bool = False,
                     columns: Sequence[str] | None = None, null_columns: bool = True,
                     pool: ImplicitPool | None = None) -> pd.DataFrame:
    """Engaged items plus sampled candidates per user session (or day), dated at the query's start.

    Args:
        events: canonical interactions (``ts`` UTC).
        settings: the label table, and ``settings.implicit`` for the query grain and the draws.

    Returns:
        Columns ``OUTPUT_COLUMNS``, ordered by query start, query id, item id. Engaged items carry
        their best event's grade; sampled candidates grade 0. ``position``, ``propensity`` and
        ``policy_version`` are null on every row. An event without a user or an item (the contract
        quarantines them) names no query. ``categorical_ids``: ``query_id``, ``user_id`` and ``item_id`` as
        categoricals of those values (categories in sorted order: ``astype`` of their categories' dtype gives
        the text columns), a code per row instead of a text (~0.7 GB less at 19.3M rows). ``columns``: only
        these of ``OUTPUT_COLUMNS`` are made (in its order): each other one is 19.3M values at 10M events of a log
        without slates (``grade`` and the null ``policy_version``: ~0.3 GB). ``null_columns=False``: the columns
        null on every row (:data:`UNSET`: position, propensity, policy_version) are left out too (~0.45 GB there).
        ``pool``: the window's :func:`implicit_pool` when ``events`` are one bucket of its users (default: the
        pool of ``events``): the rows are then the window's rows of those users' queries, in the same order.

    Queries, items and (query, item) pairs are integer codes throughout; a query's id is made as text
    once per query, and an output row's values are taken by code (at 8.5M events of a log without
    slates, text per event and the window's candidate draws at once held ~9 GB).
    """
    _check_events(events, 24)
    ev = events.reset_index(drop=True)
    named = (ev["user_id"].notna() & ev["item_id"].notna()).to_numpy()
    if not named.all():  # a copy of the events only when there is something to drop
        ev = ev[named].reset_index(drop=True)
    del named
    if ev.empty:
        empty = pd.DataFrame({"query_id": [], "user_id": [], "item_id": [], "grade": [],
                              "ts": pd.Series([], dtype="datetime64[us, UTC]")})
        return _frame(empty, settings, columns=columns, null_columns=null_columns)
    us = _ts_us(ev["ts"])
    query_code, query_text = _query_codes(ev, settings.implicit.query_by, us)
    # The queries in start order (their first event: earliest, then first in the log).
    by_time = np.argsort(us, kind="stable")
    first_at = np.unique(query_code[by_time], return_index=True)[1]
    first_rows = by_time[np.sort(first_at)]
    del by_time, first_at
    n_queries = len(first_rows)
    position = np.empty(n_queries, dtype=np.int64)
    position[query_code[first_rows]] = np.arange(n_queries)
    query = position[query_code]  # per event: its query's place in start order
    query_ids = query_text[query_code[first_rows]]
    start_us = us[first_rows]
    del query_code, position
    wanted = _kept(columns)
    if pool is None:
        item_code, items = _sorted_codes(ev["item_id"])
        pool = _pool(ev, item_code, items, us, wanted)
    else:
        item_code, items = pool.codes(ev["item_id"]), pool.items
        if (item_code < 0).any():
            raise ValueError(f"{int((item_code < 0).sum())} event(s) name an item the window's pool does not hold: "
                             "make the pool from the window these events are a bucket of")
    n_items = np.int64(len(items))
    # Engaged: each (query, item) pair touched, with its best event's grade (none graded: 0).
    grades = event_grades(_with_optional_columns(ev), settings)
    best = pd.Series(grades).groupby(query * n_items + item_code, sort=True).max()
    del grades
    engaged = best.index.to_numpy(dtype=np.int64)
    engaged_grade = best.fillna(0.0).to_numpy(dtype=np.float64)
    del best
    s_query, s_item = _sampled(engaged, query_ids, start_us, pool, n_items, settings.implicit)
    del query, item_code
    small = np.int32 if max(n_queries, int(n_items)) < 2**31 else np.int64
    row_query = np.concatenate([engaged // n_items, s_query]).astype(small)
    row_item = np.concatenate([engaged % n_items, s_item]).astype(small)
    grade = np.concatenate([engaged_grade, np.zeros(len(s_query))])
    del engaged, engaged_grade, s_query, s_item
    # The rows in the output's order: queries by (start, id), then items (every row's position is unknown).
    text_order = np.argsort(query_ids, kind="stable")
    text_rank = np.empty(n_queries, dtype=np.int64)
    text_rank[text_order] = np.arange(n_queries)
    rank = np.empty(n_queries, dtype=small)
    rank[np.lexsort((text_rank, start_us))] = np.arange(n_queries)
    order = np.lexsort((row_item, rank[row_query]))
    row_query, row_item, grade = row_query[order], row_item[order], grade[order]
    del order, rank, text_rank, text_order
    # Each column taken by code from its few distinct values (a text per row made once, in Arrow, not as
    # Python objects): the dtypes a frame of the rows' own values would infer.
    by_query = {"query_id": pd.Series(query_ids, dtype="string"),
                "user_id": pd.Series(ev["user_id"].take(first_rows).to_numpy(dtype=object))}
    take = _coded if categorical_ids else _taken
    rows = pd.DataFrame({name: take(values, row_query) for name, values in by_query.items()}, copy=False)
    rows["item_id"] = take(pd.Series(items), row_item)
    rows["grade"] = grade
    # The query's start per row, made tz-aware in one copy (to_datetime(unit="us") and then astype to the us unit
    # held ~0.7 GB more at 19.3M rows).
    rows["ts"] = pd.Series(start_us[row_query].view("datetime64[us]")).dt.tz_localize("UTC")
    for column in (c for c in QUERY_CONTEXT if c in ev.columns and c in wanted):  # from the query's first event
        rows[column] = _taken(ev[column].take(first_rows).reset_index(drop=True), row_query)
    for column in (c for c in ITEM_ATTRIBUTES if c in pool.attributes and c in wanted):  # the item's first value
        rows[column] = _taken(pool.attributes[column], row_item)
    log.debug("implicit queries: %d queries, %d rows", n_queries, len(rows))
    return _frame(rows, settings, columns=columns, null_columns=null_columns)


def _taken(values: pd.Series, codes: np.ndarray) -> pd.Series:
    """``values``' entries at ``codes``, with ``values``' dtype and a fresh RangeIndex."""
    return pd.Series(values.array.take(codes))


def _coded(values: pd.Series, codes: np.ndarray) -> pd.Series:
    """:func:`_taken` as a categorical: its categories ``values``' distinct entries in sorted order (with
    ``values``' dtype), a code per row."""
    at, distinct = _sorted_codes(values)
    categories = pd.Index(pd.Series(distinct, dtype=values.dtype).array)
    return pd.Series(pd.Categorical.from_codes(at[codes], dtype=pd.CategoricalDtype(categories)))


def _query_codes(ev: pd.DataFrame, query_by: str, us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per event, a code of its query; per code, the query's id as :func:`_query_ids` writes it): the ids made
    as text from one event of each query, not from every event."""
    user, _ = pd.factorize(ev["user_id"])
    day = us // _DAY_US  # the UTC day
    part = day - day.min()
    if query_by == "session" and "session_id" in ev.columns:
        session, _ = pd.factorize(ev["session_id"])
        span = int(part.max()) + 1
        part = np.where(session >= 0, session.astype(np.int64) + span, part)
    code, _ = pd.factorize(user.astype(np.int64) * (int(part.max()) + 1) + part)
    one = np.empty(int(code.max()) + 1, dtype=np.int64)
    one[code] = np.arange(len(code))  # an event of each query (any: they share user and session or day)
    return code, _query_ids(ev.iloc[one], query_by).to_numpy(dtype=object)


def _query_ids(ev: pd.DataFrame, query_by: str) -> pd.Series:
    """'user|s:session' (session grain, when the session is known), else 'user|d:YYYY-MM-DD'."""
    day = "d:" + ev["ts"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d").astype("string")
    if query_by == "session" and "session_id" in ev.columns:
        day = ("s:" + ev["session_id"].astype("string")).fillna(day)
    return ev["user_id"].astype("string") + "|" + day


def _sampled(engaged: np.ndarray, query_ids: np.ndarray, start_us: np.ndarray, pool: ImplicitPool,
             n_items: np.int64, settings: ImplicitQuerySettings) -> tuple[np.ndarray, np.ndarray]:
    """(query, item code) of each sampled candidate: per query, from the items seen before the query's UTC day
    (none on the window's first day). ``engaged``: the sorted (query * n_items + item) keys the queries touched.

    Draws are kept in (query, kind, draw) order; a draw repeating an earlier one of its query, or
    naming an item the user touched in it, is dropped; each kind keeps its first ``n``. A query's draws
    depend on its own day only, so they are made, filtered and kept a day at a time."""
    wanted = np.array([settings.popular_negatives, settings.uniform_negatives])
    out_query, out_item = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for at, drawn in _draws(query_ids, start_us, pool, settings, wanted):
        qrow, code, kind, draw = (np.concatenate([np.broadcast_to(d[k], d[0].shape) for d in drawn]) for k in range(4))
        order = np.lexsort((draw, kind, qrow))
        qrow, code, kind = qrow[order], code[order], kind[order]
        key = qrow * n_items + code
        lo, hi = np.searchsorted(engaged, [at[0] * n_items, (at[-1] + 1) * n_items])
        keep = ~np.isin(key, engaged[lo:hi])
        first = np.zeros(len(key), dtype=bool)
        first[np.unique(key, return_index=True)[1]] = True  # the earliest draw of each (query, item)
        keep &= first
        qrow, code, kind = qrow[keep], code[keep], kind[keep]
        group = qrow * 2 + kind
        step = np.arange(len(group))
        starts = np.maximum.accumulate(np.where(np.r_[True, group[1:] != group[:-1]], step, 0)) if len(group) else step
        within = (step - starts) < wanted[kind]
        out_query.append(qrow[within])
        out_item.append(code[within])
    return np.concatenate(out_query), np.concatenate(out_item)


def _draws(query_ids: np.ndarray, start_us: np.ndarray, pool: ImplicitPool, settings: ImplicitQuerySettings,
           wanted: np.ndarray):
    """Per query day with candidates: (its queries, [(query rows, drawn item codes, kind index, draw index)
    per kind]).

    The pool of a day is every item with an event before it; popularity weights count each item's
    events in the ``popularity_days`` before it (``pool``: the window's). Days are walked in order with running counts."""
    n_items, by_day = pool.n_items, pool.by_day
    q_day = start_us // _DAY_US
    seen = np.zeros(n_items, dtype=np.int64)  # events before the current day
    recent = np.zeros(n_items, dtype=np.int64)  # events in the popularity_days before it
    for day in range(pool.first_day, int(q_day.max()) + 1):
        at = np.flatnonzero(q_day == day)
        pool = np.flatnonzero(seen > 0)
        if len(at) and len(pool):
            weights = {"popular": recent[pool].astype(np.float64), "uniform": np.ones(len(pool))}
            drawn = []
            for j, (kind, n) in enumerate(zip(weights, wanted.tolist(), strict=True)):
                if n == 0 or weights[kind].sum() <= 0:
                    continue
                draws = 3 * n + 5  # duplicates and engaged items are dropped afterwards
                u = _uniforms(query_ids[at], draws, settings.seed + 7919 * j)
                cum = np.cumsum(weights[kind])
                pick = np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(pool) - 1)
                drawn.append((np.repeat(at, draws), pool[pick].ravel(), np.int64(j), np.tile(np.arange(draws), len(at))))
            if drawn:
                yield at, drawn
        today = np.bincount(by_day.get(day, np.zeros(0, np.intp)), minlength=n_items)
        seen += today
        recent += today
        gone = by_day.get(day - settings.popularity_days)
        if gone is not None:
            recent -= np.bincount(gone, minlength=n_items)


def _uniforms(query_ids: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """(len(query_ids), draws) uniforms in [0, 1), a function of (seed, query id, draw) only."""
    key = f"rankloop{seed % 10**8:08d}"
    base = pd.util.hash_array(np.asarray(query_ids, dtype=object), hash_key=key).astype(np.uint64)
    x = base[:, None] + (np.arange(1, draws + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))[None, :]
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def _frame(rows: pd.DataFrame, settings: LabelSettings, *, columns: Sequence[str] | None = None,
           null_columns: bool = True) -> pd.DataFrame:
    """``rows`` (query_id, user_id, item_id, ts, grade, context; already in query order) as ``OUTPUT_COLUMNS``
    (or only ``columns`` of them; without :data:`UNSET` unless ``null_columns``). Each column is taken from
    ``rows`` as it goes: the two frames never hold a column twice."""
    rows = rows.reset_index(drop=True)
    raw = rows.pop("grade").to_numpy(dtype=np.float64)
    grade = np.clip(raw, 0.0, 1.0) if "grade" in _kept(columns) else None
    # The label a slice at a time: grade * levels, rounded, over 19.3M rows at once held ~0.4 GB more.
    label = np.empty(len(raw), dtype=np.int32)
    for lo in range(0, len(raw), _SLICE):
        label[lo:lo + _SLICE] = np.rint(np.clip(raw[lo:lo + _SLICE], 0.0, 1.0) * settings.levels)
    del raw
    out = {}
    for column in _kept(columns):
        if column in UNSET and not null_columns:
            continue
        if column == "query_id":
            ids = rows.pop("query_id")
            out[column] = ids if isinstance(ids.dtype, pd.CategoricalDtype) else ids.astype("string")
        elif column == "grade":
            out[column] = pd.Series(grade)
        elif column == "label":
            out[column] = pd.Series(label)
        elif column in rows.columns:
            out[column] = rows.pop(column)  # a Series: tz-aware times stay datetime64 (no per-row Timestamps)
        elif column in _NUMERIC:
            out[column] = pd.Series(np.full(len(label), np.nan))
        else:
            out[column] = pd.Series(None, index=pd.RangeIndex(len(label)), dtype=object)
    del rows, grade, label
    return pd.DataFrame(out, copy=False)
