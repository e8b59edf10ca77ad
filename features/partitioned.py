"""Features per day partition (the Dask executor, docs/scale-out.md).

A partition is one UTC day of *queries* (a query belongs to the day of its earliest impression, so
a slate is never split). Its features need its impressions plus every event strictly before them:
features look back up to 28 days, and some over the whole extracted past (first-seen times,
all-time pair counts, the global past click-through). So a partition's events are all events up
to its latest impression (a slate that starts before midnight may show items after it); labels look *forward* (a response within the attribution window),
so they are computed once, globally, before partitioning (:func:`features.impressions`).

Given those inputs, :func:`build_partition` returns exactly the rows and values the local build
returns for the same impressions: every feature is a function of (impression, events before it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from core.config.features import FeatureSettings
from features.build import build_features
from features.defs_collaborative import CooccurrenceDays

ID_COLUMNS: tuple[str, ...] = ("query_id", "user_id", "item_id", "ts", "position", "label")


def day_starts(start: datetime, end: datetime) -> list[datetime]:
    """00:00 UTC of every day that overlaps ``[start, end)``."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(f"window bounds must be tz-aware (UTC), got start={start!r}, end={end!r}")
    if not start < end:
        raise ValueError(f"need start < end, got start={start.isoformat()}, end={end.isoformat()}")
    first = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while first < end:
        days.append(first)
        first += timedelta(days=1)
    return days


def event_days(ts: pd.Series) -> np.ndarray:
    """UTC day (datetime64[D]) of each timestamp."""
    return ts.dt.tz_convert("UTC").to_numpy(dtype="datetime64[us]").astype("datetime64[D]")


def query_days(impressions: pd.DataFrame) -> np.ndarray:
    """Per impression: the UTC day of its query's earliest impression (datetime64[D])."""
    first = impressions.groupby("query_id", sort=False, dropna=False)["ts"].transform("min")
    return event_days(first)


def split_by_query_day(impressions: pd.DataFrame) -> dict[date, pd.DataFrame]:
    """Impressions grouped by their query's day (rows keep their order; days ascending)."""
    days = query_days(impressions)
    out = {}
    for day in np.unique(days):
        out[pd.Timestamp(day).date()] = impressions[days == day].reset_index(drop=True)
    return out


def contiguous(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in (query_id, position) order, missing last: what ``models.training.time_split`` gives a part."""
    query, _ = pd.factorize(frame["query_id"], sort=True)
    query = np.where(query < 0, len(query), query)
    position = frame["position"].to_numpy(dtype=np.float64, na_value=np.nan) if "position" in frame else np.zeros(len(frame))
    return frame.take(np.lexsort((position, query))).reset_index(drop=True)


def build_partition(impressions: pd.DataFrame, events: pd.DataFrame, *, items: pd.DataFrame | None,
                    users: pd.DataFrame | None, settings: FeatureSettings, feature_set: str | None = None) -> pd.DataFrame:
    """The labelled feature rows of one partition, in (query_id, position) order.

    Args:
        impressions: the partition's labelled impressions (``features.impressions`` output).
        events: the events the partition may see; must hold every event before its latest impression
            (events after it are ignored).
        items, users: the catalogue tables, as for :func:`features.build_features`.
        settings: feature settings; ``feature_set`` defaults to ``settings.feature_set``.

    Returns:
        ``ID_COLUMNS`` followed by the set's features.
    """
    missing = [c for c in ID_COLUMNS if c not in impressions.columns]
    if missing:
        raise ValueError(f"partition impressions lack column(s) {missing}; expected features.impressions output")
    if len(impressions):
        events = events[events["ts"] <= impressions["ts"].max()]  # nothing later can be seen
    X = build_features(impressions, events, items=items, users=users, settings=settings, feature_set=feature_set)
    frame = pd.concat([impressions[list(ID_COLUMNS)], X], axis=1)
    return contiguous(frame)


# --- features by key bucket (the local build's bounded working set) -------------------------------------------
#
# A feature of the user, user_item or user_category grain reads the events of the query's user only; one of the
# item grain, the events of the query's item only; apart from a few aggregates over *every* event before t (the
# global past click-through that smooths the rates, the position click-through curve behind the position-bias
# ratios) and the exposure mask. So the users (items) can be hashed into buckets and each bucket's impressions
# built from that bucket's events alone, given those few window-wide aggregates: the same values, with a
# working set of one bucket's timelines instead of the window's (tests/features/test_partitioned.py).

# The column that keys each grain's events (a grain not listed is built over the whole window).
KEY_OF_GRAIN: dict[str, str] = {"user": "user_id", "user_item": "user_id", "user_category": "user_id",
                                "item": "item_id"}
# Features of a keyed grain that read other keys' events: the item-item co-occurrence scores count what *other*
# users engaged with (key_groups puts them with no key: the Dask tasks refuse them; iter_keyed_columns scores them by
# user bucket from the window's S of each day, defs_collaborative.CooccurrenceDays).
ACROSS_KEYS: frozenset[str] = frozenset({"ui_cooccur_sum", "ui_cooccur_mean", "ui_cooccur_max"})


def key_groups(names: tuple[str, ...] | list[str]) -> dict[str | None, tuple[str, ...]]:
    """``names`` by the column whose buckets can build them (None: only the whole window can), in order."""
    from features.registry import REGISTRY

    groups: dict[str | None, list[str]] = {}
    for name in names:
        key = None if name in ACROSS_KEYS else KEY_OF_GRAIN.get(REGISTRY[name].grain)
        groups.setdefault(key, []).append(name)
    return {k: tuple(v) for k, v in groups.items()}


def key_buckets(values: pd.Series, buckets: int) -> np.ndarray:
    """Per row, the bucket (0..buckets-1) of its key: a hash of the key's text, the same in every process (the
    Dask labels' ``user_buckets``); a missing key goes to bucket 0."""
    codes, uniques = pd.factorize(values)
    of_value = pd.util.hash_pandas_object(pd.Series(np.asarray(uniques, dtype=object)).astype("string"),
                                          index=False).to_numpy() % np.uint64(max(1, buckets))
    return np.where(codes >= 0, of_value[np.maximum(codes, 0)].astype(np.int64) if len(of_value) else 0, 0)


def iter_keyed_columns(impressions: pd.DataFrame, events: pd.DataFrame, names: tuple[str, ...], *,
                       items: pd.DataFrame | None = None, users: pd.DataFrame | None = None,
                       settings: FeatureSettings, buckets: int, scratch: Path) -> Iterator[tuple[str, np.ndarray]]:
    """``features.build.iter_columns`` of ``names`` with the keyed grains built one bucket of users (items) at a
    time.

    Yields ``(name, values)`` for every name, each aligned with ``impressions``' rows: the values of
    ``iter_columns`` (exactly: counts and sums are integers; the window-wide aggregates are made once, over
    every event, and handed to each bucket, the co-occurrence scores from the window's S of each query day).
    A bucket's inputs and values wait in ``scratch`` (a temporary
    folder, removed on the way out). With ``buckets <= 1`` it is ``iter_columns``.

    The caller should hold no other reference to ``impressions`` and ``events``: they are cut into buckets
    and dropped before the first bucket is built.
    """
    from features.build import iter_columns, keys_read
    from features.registry import REGISTRY
    from features.window import WindowCounts, day_parts, window_given

    groups = key_groups(names)
    if buckets <= 1 or not any(k is not None for k in groups):
        yield from iter_columns(impressions, events, tuple(names), items=items, users=users, settings=settings)
        return
    keyed = tuple(n for k, names in groups.items() if k is not None for n in names)
    read = keys_read(impressions, events, keyed, items=items, users=users, settings=settings)
    # The window-wide aggregates from per-day counts of the few columns they read (features.window); exposures
    # inferred from sessions when no impression is logged (each bucket is handed its events' part of the mask).
    exposures = None if has_logged_exposures(events) else window_exposures(events)
    counts = WindowCounts(day_parts(events, settings, exposures), settings)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".keyed.", suffix=".tmp") as tmp:
        folder = Path(tmp)
        # Co-occurrence reads every user's pairs: the window's S of each query day is made once (kept on disk)
        # and each bucket of users scores its own queries with it (defs_collaborative.CooccurrenceDays).
        across = tuple(n for n in groups.get(None, ()) if n in ACROSS_KEYS)
        cooccurrence = None
        if across:
            cooccurrence = CooccurrenceDays.build(impressions, events, items=items, users=users,
                                                  folder=folder / "cooccurrence")
            groups["user_id"] = (*groups.get("user_id", ()), *across)
            groups[None] = tuple(n for n in groups[None] if n not in across)
        if groups.get(None) and all(REGISTRY[n].grain == "context" for n in groups[None]):
            # Context features read the query row alone (its own columns, the item's attributes, the vocabulary):
            # built in a bucket, a row's value is the window's. Built over the window they held ~0.7 GB over the
            # 19.3M query rows of a log without slates at 10M (a BuildContext coding every row).
            host = "user_id" if "user_id" in groups else next(k for k in groups if k is not None)
            groups[host] = (*groups[host], *groups.pop(None))
        if groups.get(None):
            yield from iter_columns(impressions, events, groups[None], items=items, users=users, settings=settings)
        groups.pop(None, None)
        cuts = {}  # key column -> per bucket (query rows, paths of its queries and events)
        for key in (k for k in groups if k is not None):
            q_bucket, e_bucket = key_buckets(impressions[key], buckets), key_buckets(events[key], buckets)
            cuts[key] = []
            for b in range(buckets):
                q_rows, e_rows = np.flatnonzero(q_bucket == b), np.flatnonzero(e_bucket == b)
                paths = (folder / f"{key}.{b}.queries.arrow", folder / f"{key}.{b}.events.arrow")
                _spill_rows(impressions, q_rows, paths[0])
                _spill_rows(events, e_rows, paths[1])
                if exposures is not None:
                    np.save(folder / f"{key}.{b}.exposures.npy", exposures[e_rows])
                cuts[key].append((q_rows, paths))
            del q_bucket, e_bucket
        n_queries = len(impressions)
        del impressions, events, exposures  # the buckets on disk hold them now
        for key, parts in cuts.items():
            for b, (_, (q_path, e_path)) in enumerate(parts):
                queries, bucket_events = _unspill(q_path), _unspill(e_path)
                inferred = folder / f"{key}.{b}.exposures.npy"
                given = window_given(counts, queries, bucket_events, read,
                                     np.load(inferred) if inferred.exists() else None)
                if key == "user_id" and cooccurrence is not None:
                    given[("cooccurrence",)] = cooccurrence.scores(queries, bucket_events)
                columns = iter_columns(queries, bucket_events, groups[key], items=items, users=users,
                                       settings=settings, given=given)
                del given, queries, bucket_events
                for name, values in columns:
                    np.save(folder / f"{name}.{b}.npy", values)
                q_path.unlink()
                e_path.unlink()
            for name in groups[key]:
                out = np.empty(n_queries, dtype=REGISTRY[name].dtype)
                for b, (q_rows, _) in enumerate(parts):
                    chunk = folder / f"{name}.{b}.npy"
                    out[q_rows] = np.load(chunk)
                    chunk.unlink()
                yield name, out
                del out


def has_logged_exposures(events: pd.DataFrame) -> bool:
    """Whether any event is a logged impression (else the builder infers exposures from sessions)."""
    from core.schema import EventType

    return bool((events["event_type"] == EventType.IMPRESSION.value).any())


def _spill_rows(frame: pd.DataFrame, rows: np.ndarray, path: Path) -> None:
    table = pa.Table.from_pandas(frame.take(rows), preserve_index=False)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _unspill(path: Path) -> pd.DataFrame:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all().to_pandas()


def window_exposures(events: pd.DataFrame) -> np.ndarray:
    """Per event of a window without logged impressions, whether it is an inferred exposure (the builder's own,
    ``features.context.inferred_exposures``), from the ids' codes, sessions and times alone."""
    from features.context import _ms, column_or_null, inferred_exposures

    user, item = pd.factorize(events["user_id"])[0], pd.factorize(events["item_id"])[0]
    return inferred_exposures(user, item, column_or_null(events, "session_id"), _ms(events["ts"]))

