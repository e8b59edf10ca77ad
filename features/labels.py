"""Graded relevance labels: one row per impression, graded by its best response.

An impression is a logged ``impression`` event with a ``request_id`` (its query is the request);
its responses are the same user/item/request's later events (a response logged without a
request_id joins the same user/item's latest slate before it). Sources without slates fall back:
the first event of a (user, item, request/session/day) group is the impression, and the query is
the request, else (user, session), else (user, calendar day).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from core.config.features import LabelSettings
from core.schema import EventType

log = logging.getLogger(__name__)

CONTEXT_COLUMNS: tuple[str, ...] = ("device", "content_type", "category", "mood", "time_of_day")
_NUMERIC_CARRIED: tuple[str, ...] = ("position", "propensity")
CARRIED_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "ts", "position", "propensity", "policy_version", *CONTEXT_COLUMNS)
OUTPUT_COLUMNS: tuple[str, ...] = ("query_id", *CARRIED_COLUMNS, "grade", "label")
_REQUIRED: tuple[str, ...] = ("user_id", "item_id", "event_type", "ts")
# The event columns impressions() reads (a caller may load only these).
EVENT_COLUMNS: tuple[str, ...] = (*_REQUIRED, "value", "request_id", "session_id",
                                  *(c for c in CARRIED_COLUMNS if c not in _REQUIRED))
_SCALED_BY_SECONDS = (EventType.VIEW.value, EventType.DWELL.value)


def impressions(events: pd.DataFrame, settings: LabelSettings, attribution_hours: float = 24) -> pd.DataFrame:
    """One graded row per impression.

    Args:
        events: canonical interactions (``core.schema.INTERACTION_SCHEMA`` columns; ``ts`` UTC).
        settings: the label table (grades per event type, view scaling, rating grades, levels).
        attribution_hours: a response counts for an impression if it happens within this many
            hours at or after the impression.

    Returns:
        Columns ``OUTPUT_COLUMNS``: ``grade`` in [0, 1] is the best grade among the impression's
        responses (0 without any), ``label`` = round(grade * levels). Rows are ordered by query
        start time, query, position, item; the index is a fresh RangeIndex.
    """
    _check_events(events, attribution_hours)
    ev = _with_optional_columns(events)
    grades = event_grades(ev, settings)
    horizon = np.int64(round(attribution_hours * 3600 * 1e6))
    ts = _ts_us(ev["ts"])
    logged_key, n_keys, item_code, pair = _logged_keys(ev)
    is_imp = (ev["event_type"] == EventType.IMPRESSION.value).to_numpy(dtype=bool, na_value=False)
    is_logged_imp = is_imp & (logged_key >= 0)
    graded_key = _orphan_keys(logged_key, pair, is_imp, is_logged_imp, ts, horizon)
    del pair, is_imp  # each per-event array goes once read: several hundred MB at 10M events
    np.copyto(graded_key, logged_key, where=graded_key < 0)
    logged = _logged_rows(graded_key, n_keys, is_logged_imp, ts, grades, horizon)
    has_imp = np.zeros(n_keys + 1, dtype=bool)
    has_imp[logged_key[is_logged_imp]] = True
    del logged_key, is_logged_imp
    rest = np.flatnonzero(~has_imp[graded_key])  # key -1 maps to the spare last slot, always False
    del has_imp, graded_key
    fallback = _fallback_rows(ev, rest, ts, grades, horizon)
    del grades, rest
    log.debug("impressions: %d logged, %d fallback", len(logged[0]), len(fallback[0]))
    return _assemble(ev, logged, fallback, settings, ts, item_code)


def in_label_order(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (``impressions`` output, e.g. several partitions' concatenated) in the order ``impressions``
    gives them: by query start time, query id, position (unknown last), item id; a fresh RangeIndex.

    Rows computed apart (per user bucket, ``rankloop.distributed``) and put in this order equal the
    whole window's rows of the same queries, row for row."""
    if len(rows) == 0:
        return rows.reset_index(drop=True)
    position = pd.to_numeric(rows["position"]).to_numpy(dtype=np.float64, na_value=np.inf)
    order = _order(rows["query_id"].astype("string"), _sorted_codes(rows["item_id"])[0], _ts_us(rows["ts"]),
                   np.where(np.isnan(position), np.inf, position))
    return rows.take(order).reset_index(drop=True)


def event_grades(events: pd.DataFrame, settings: LabelSettings) -> np.ndarray:
    """Grade in [0, 1] of every event (float64); NaN for event types without a grade.

    The type's grade per event, then the rows whose grade comes from their value (views scaled by
    seconds, ratings by stars) overwritten from those rows' values only: no per-event temporaries
    besides the type codes, the values and the result (~0.4 GB less at 10M events)."""
    codes, uniques = pd.factorize(events["event_type"])
    names = [str(u) for u in uniques] + [""]  # code -1 (missing type) hits the trailing slot
    grade = np.array([settings.grades.get(n, np.nan) for n in names], dtype=np.float64)[codes]
    scaled = np.flatnonzero(np.array([n in _SCALED_BY_SECONDS for n in names])[codes])
    rating = np.flatnonzero(np.array([n == EventType.RATING.value for n in names])[codes])
    del codes
    if len(scaled) == 0 and len(rating) == 0:
        return grade
    value = pd.to_numeric(events["value"]).to_numpy(dtype=np.float64, na_value=np.nan)
    span = settings.view_max_grade - settings.view_min_grade
    frac = np.clip(np.nan_to_num(value[scaled] / settings.view_full_seconds, nan=0.0), 0.0, 1.0)
    grade[scaled] = settings.view_min_grade + span * frac
    del frac, scaled
    stars = np.rint(np.nan_to_num(value[rating], nan=-1.0)).astype(np.int64)
    del value
    top = max((s for s in settings.rating_grades if s >= 0), default=0)
    by_star = np.full(top + 2, np.nan)  # the last slot: stars without a configured grade
    for star, g in settings.rating_grades.items():
        if star >= 0:
            by_star[star] = g
    grade[rating] = by_star[np.where((stars >= 0) & (stars <= top), stars, top + 1)]
    return grade


def _check_events(events: pd.DataFrame, attribution_hours: float) -> None:
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    missing = [c for c in _REQUIRED if c not in events.columns]
    if missing:
        raise ValueError(f"events lack required column(s) {missing}; found {list(events.columns)}")
    if not isinstance(events["ts"].dtype, pd.DatetimeTZDtype):
        raise TypeError(f"events.ts must be tz-aware datetime (UTC), got dtype {events['ts'].dtype}")
    if not attribution_hours > 0:
        raise ValueError(f"attribution_hours must be > 0, got {attribution_hours!r}")


def _with_optional_columns(events: pd.DataFrame) -> pd.DataFrame:
    absent = [c for c in ("value", "request_id", "session_id") if c not in events.columns]
    if not absent:
        return events
    return events.assign(**{c: pd.Series(None, index=events.index, dtype=object) for c in absent})


def _ts_us(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").to_numpy(dtype="datetime64[us]").view(np.int64)


def _logged_keys(ev: pd.DataFrame) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """(dense code of (user, item, request) per event, numbered by first appearance, -1 where request_id
    is missing; the number of codes; item codes in sorted item_id order; one integer per (user, item)
    pair, equal for equal pairs only).

    The pair is the codes' mixed-radix number (no hash of 10M pairs) when the triple's number fits in
    an int64, else the pairs numbered densely first; the arithmetic is done in place (each per-event
    int64 array is 80 MB at 10M events)."""
    user, users = pd.factorize(ev["user_id"])
    item, items = _sorted_codes(ev["item_id"])
    req, reqs = pd.factorize(ev["request_id"])
    pair = user.astype(np.int64, copy=False)  # codes >= -1 (missing): +1 keeps each radix digit >= 0
    del user
    pair += 1
    pair *= len(items) + 1
    pair += item
    pair += 1
    if (len(users) + 1) * (len(items) + 1) * (len(reqs) + 1) >= 2**63:
        pair, _ = pd.factorize(pair)  # dense: at most one code per event
    triple = pair * (len(reqs) + 1)
    triple += req
    triple += 1
    key, keys = pd.factorize(triple)
    del triple
    key[req < 0] = -1
    return key, len(keys), item, pair


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(values, sort=True)`` for text or categorical values alike: codes in the order of the
    values themselves (a categorical's own factorize would sort by its categories' order)."""
    codes, uniques = pd.factorize(values)
    uniques = np.asarray(uniques, dtype=object)
    order = np.argsort(uniques, kind="stable")
    rank = np.empty(len(uniques) + 1, dtype=np.intp)
    rank[order], rank[-1] = np.arange(len(uniques)), -1  # code -1 (missing) hits the trailing slot
    return rank[codes], uniques[order]


def _orphan_keys(key, pair, is_imp, is_logged_imp, ts, horizon) -> np.ndarray:
    """Per event: for a response without request_id, the key of the same user/item's latest logged
    impression at or before it within the horizon (sources that log some responses without the
    request); -1 otherwise."""
    out = np.full(len(key), -1, dtype=np.int64)
    candidates = np.flatnonzero(~is_imp & (key < 0))
    shown = np.flatnonzero(is_logged_imp)
    if len(candidates) == 0 or len(shown) == 0:
        return out
    left = pd.DataFrame({"pair": pair[candidates], "ts": ts[candidates], "row": candidates}).sort_values("ts")
    right = pd.DataFrame({"pair": pair[shown], "ts": ts[shown], "key": key[shown]}).sort_values("ts")
    matched = pd.merge_asof(left, right, on="ts", by="pair", direction="backward", tolerance=int(horizon))
    matched = matched[matched["key"].notna()]
    out[matched["row"].to_numpy()] = matched["key"].to_numpy(dtype=np.int64)
    return out


def _logged_rows(key, n_keys, is_imp, ts, grades, horizon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(event row of each impression, its best grade, its query source row) for logged impressions."""
    imp_rows = np.flatnonzero(is_imp)
    imp_rows = imp_rows[np.lexsort((ts[imp_rows], key[imp_rows]))]
    first = np.r_[True, key[imp_rows][1:] != key[imp_rows][:-1]] if len(imp_rows) else np.zeros(0, bool)
    imp_rows = imp_rows[first]
    imp_ts = np.full(n_keys + 1, np.iinfo(np.int64).max, dtype=np.int64)
    imp_ts[key[imp_rows]] = ts[imp_rows]
    resp_ts_imp = imp_ts[key]
    ok = (key >= 0) & ~is_imp & ~np.isnan(grades) & (ts >= resp_ts_imp) & (ts - resp_ts_imp <= horizon)
    best = _group_max(key[ok], grades[ok], n_keys + 1)
    return imp_rows, best[key[imp_rows]], imp_rows


def _group_max(codes: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    best = np.zeros(size, dtype=np.float64)  # no response = grade 0 (grades are >= 0)
    np.maximum.at(best, codes, values)
    return best


def _fallback_query(ev: pd.DataFrame) -> pd.Series:
    """request_id, else 'user|session', else 'user|YYYY-MM-DD'."""
    day = ev["ts"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
    session = ev["session_id"].astype("string")
    user = ev["user_id"].astype("string")
    grouped = user + "|" + session.fillna(day.astype("string"))
    return ev["request_id"].astype("string").fillna(grouped)


def _fallback_rows(ev, rows, ts, grades, horizon) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """(first event row of each fallback group, its best grade, its query id)."""
    if len(rows) == 0:
        return rows, np.zeros(0), pd.Series([], dtype="string")
    sub = ev.iloc[rows]
    query = _fallback_query(sub)
    key = sub.groupby([sub["user_id"], sub["item_id"], query], sort=False, dropna=False).ngroup().to_numpy()
    order = np.lexsort((ts[rows], key))
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    start_ts = np.repeat(ts[rows][order][starts], np.diff(np.r_[starts, len(order)]))
    g = grades[rows][order]
    ok = ~np.isnan(g) & (ts[rows][order] - start_ts <= horizon)
    best = _group_max(key_sorted[ok], g[ok], int(key.max()) + 1)
    first = order[starts]
    return rows[first], best[key[first]], query.iloc[first].reset_index(drop=True)


def _assemble(ev, logged, fallback, settings: LabelSettings, ts: np.ndarray, item_code: np.ndarray) -> pd.DataFrame:
    rows = np.r_[logged[0], fallback[0]]
    qid = pd.concat([ev["request_id"].iloc[logged[2]].astype("string").reset_index(drop=True),
                     fallback[2].astype("string")], ignore_index=True)
    position = (pd.to_numeric(ev["position"].iloc[rows]).to_numpy(dtype=np.float64, na_value=np.inf)
                if "position" in ev.columns else np.full(len(rows), np.inf))
    order = _order(qid, item_code[rows], ts[rows], position)
    present = [c for c in CARRIED_COLUMNS if c in ev.columns]
    out = ev[present].iloc[rows[order]].reset_index(drop=True)  # only the carried columns are copied
    for c in ("user_id", "item_id"):  # ids read as codes (categoricals) come out as the text they stand for
        if isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = _decoded(out[c])
    # An absent carried column as a null one reads: the numeric ones (position, propensity) as float NaN, the
    # split's key columns keeping their type whether the stage read an empty column or left it unread.
    out = out.assign(**{c: pd.Series(np.nan if c in _NUMERIC_CARRIED else None, index=out.index,
                                     dtype=np.float64 if c in _NUMERIC_CARRIED else object)
                        for c in CARRIED_COLUMNS if c not in present})[list(CARRIED_COLUMNS)]
    out.insert(0, "query_id", qid.iloc[order].reset_index(drop=True))
    out["grade"] = np.clip(np.r_[logged[1], fallback[1]], 0.0, 1.0)[order]
    out["label"] = np.rint(out["grade"].to_numpy() * settings.levels).astype(np.int32)
    return out


def _decoded(values: pd.Series) -> pd.Series:
    """A categorical's values in its categories' own dtype (``astype`` of it), taken through the categories
    array: for text categories an Arrow take, with no Python string per row on the way (``astype`` made
    them: ~0.5 GB at 7.5M rows)."""
    categories = values.cat.categories
    if not isinstance(categories.dtype, pd.api.extensions.ExtensionDtype):  # numbers: a missing one needs objects
        return values.astype(categories.dtype if not values.isna().any() else object)
    taken = categories.array.take(values.cat.codes.to_numpy(), allow_fill=True)  # code -1: missing
    return pd.Series(taken, index=values.index, name=values.name)


def _order(qid: pd.Series, item: np.ndarray, ts: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Rows by query start time, query id, position (unknown last), item id: a query's rows are contiguous."""
    qcode, _ = pd.factorize(qid, sort=True)
    n_queries = int(qcode.max(initial=-1)) + 1
    qstart = np.full(n_queries, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(qstart, qcode, ts)
    if len(qcode) and qcode.min() < 0:  # a row without a query id: the rows' four-key sort
        return np.lexsort((item, position, qcode, qstart[qcode]))
    # The queries put in (start, id) order once (a tenth of the rows), then the rows by (that rank,
    # position, item): the same order as sorting the rows by all four keys, one row-sized key fewer.
    rank = np.empty(n_queries, dtype=np.int64)
    rank[np.lexsort((np.arange(n_queries), qstart))] = np.arange(n_queries)
    return np.lexsort((item, position, rank[qcode]))
