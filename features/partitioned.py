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
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from core.config.features import FeatureSettings, LabelSettings
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


@dataclass(frozen=True)
class QueryBuckets:
    """A window's queries made and written one bucket of users at a time (:func:`implicit_query_buckets`): the
    window's rows are bucket 0's, then bucket 1's, ...; within a bucket in the window's order (queries contiguous).
    Bucket ``b`` holds the queries of the users :func:`key_buckets` puts in bucket ``b`` of ``buckets``."""

    buckets: int
    keys: tuple[Path, ...]  # per bucket: its rows' key columns (Arrow IPC, plain Arrow types)
    queries: tuple[Path, ...]  # per bucket: its rows' query columns (Arrow IPC, ids dictionary-coded)
    rows: tuple[int, ...]  # per bucket
    days: np.ndarray  # the UTC days holding a query's start (days since 1970-01-01), ascending
    items: pd.Series  # the queries' item ids, each once, in the order the window's rows first name them

    @property
    def n(self) -> int:
        return int(sum(self.rows))

    @property
    def offsets(self) -> np.ndarray:
        """Each bucket's first row in the window, and the window's rows last."""
        return np.r_[0, np.cumsum(self.rows, dtype=np.int64)]

    def read_queries(self, bucket: int) -> pd.DataFrame:
        return _unspill(self.queries[bucket])

    def key_names(self) -> list[str]:
        """The key columns the buckets' files hold."""
        with pa.memory_map(str(self.keys[0])) as source:
            return list(pa.ipc.open_file(source).schema.names)

    def probe(self) -> pd.DataFrame:
        """A few query rows (the first bucket's that holds any): what ``features.build.keys_read`` probes."""
        return next((self.read_queries(b).iloc[:64] for b, n in enumerate(self.rows) if n), self.read_queries(0))


def implicit_query_buckets(events: pd.DataFrame, settings: LabelSettings, *, buckets: int, folder: Path,
                           key_columns: tuple[str, ...] | list[str], query_columns: tuple[str, ...] | list[str]
                           ) -> QueryBuckets:
    """The window's implicit queries (``features.implicit_queries`` with categorical ids, without the columns no row
    has a value in) made one bucket of users at a time from that bucket's events and the window's pool, each
    bucket's ``key_columns`` and ``query_columns`` written to ``folder``: the window's 19.3M query rows of a log
    without slates at 10M events are never in memory together (made whole they held ~2.2 GB while made).
    ``events`` are the window's, in its order; the caller removes ``folder``."""
    from core.parquet import arrow_table
    from features.implicit import implicit_pool, implicit_queries

    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys([*key_columns, *query_columns]))
    pool = implicit_pool(events, columns)
    bucket = key_buckets(events["user_id"], buckets)
    small = np.int16 if buckets < 2**15 else np.int64  # int16: numpy's stable sort is a radix sort
    order = np.argsort(bucket.astype(small), kind="stable")  # each bucket's events in the window's order
    bounds = np.r_[0, np.cumsum(np.bincount(bucket, minlength=buckets))]
    del bucket
    keys, queries, rows, days, firsts = [], [], [], [], []
    for b in range(buckets):
        bucket_events = events.take(order[bounds[b]:bounds[b + 1]])
        q = implicit_queries(bucket_events, settings, categorical_ids=True, columns=columns, null_columns=False,
                             pool=pool)
        del bucket_events
        us = q["ts"].dt.tz_convert("UTC").to_numpy(dtype="datetime64[us]").view(np.int64)
        days.append(np.unique(us // (86_400 * 1_000_000)))
        # Where each item is first named: the window's rows are ordered by (start, query id, item), so an item's
        # first row in the window is the least (start, query id) of its first rows in the buckets.
        code = pool.codes(q["item_id"])
        item, first = np.unique(code, return_index=True)
        firsts.append(pd.DataFrame({"item": item, "us": us[first],
                                    "query": q["query_id"].take(first).astype("string").to_numpy(dtype=object)}))
        del us, code, item, first
        present = [c for c in key_columns if c in q.columns]
        keys.append(folder / f"keys.{b}.arrow")
        _write_ipc(_plain(arrow_table(q[present])), keys[-1])
        queries.append(folder / f"queries.{b}.arrow")
        _write_ipc(arrow_table(q[[c for c in query_columns if c in q.columns]]), queries[-1])
        rows.append(len(q))
        del q
    firsts = pd.concat(firsts, ignore_index=True).sort_values(["us", "query", "item"], kind="stable")
    named = pd.Series(pool.items[firsts.drop_duplicates("item")["item"].to_numpy()], dtype=object)
    return QueryBuckets(buckets=buckets, keys=tuple(keys), queries=tuple(queries), rows=tuple(rows),
                        days=np.unique(np.concatenate(days)) if days else np.zeros(0, dtype=np.int64), items=named)


def _plain(table: pa.Table) -> pa.Table:
    """``table`` with each dictionary-coded column as its values (what a split's key files hold)."""
    return pa.table({name: column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column
                     for name, column in zip(table.column_names, table.columns, strict=True)})


def _write_ipc(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def iter_keyed_columns(impressions: pd.DataFrame | QueryBuckets, events: pd.DataFrame, names: tuple[str, ...], *,
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

    ``impressions`` may be :class:`QueryBuckets` (queries never whole): the values are then aligned with its rows
    (bucket 0's, then bucket 1's, ...), its buckets of users are the user buckets (``buckets`` is its own), and
    the buckets of items are cut from its files.
    """
    from features.build import iter_columns, keys_read
    from features.registry import REGISTRY
    from features.window import WindowCounts, day_parts, save_parts, window_given

    groups = key_groups(names)
    bucketed = isinstance(impressions, QueryBuckets)
    if bucketed:
        buckets = impressions.buckets
    if bucketed and not any(k is not None for k in groups):  # nothing keyed: the window's queries, read whole
        impressions = _concat([impressions.read_queries(b) for b in range(impressions.buckets)])
        bucketed = False
    if not bucketed and (buckets <= 1 or not any(k is not None for k in groups)):
        yield from iter_columns(impressions, events, tuple(names), items=items, users=users, settings=settings)
        return
    keyed = tuple(n for k, names in groups.items() if k is not None for n in names)
    read = keys_read(impressions.probe() if bucketed else impressions, events, keyed, items=items, users=users,
                     settings=settings)
    # The window-wide aggregates from per-day counts of the few columns they read (features.window); exposures
    # inferred from sessions when no impression is logged (each bucket is handed its events' part of the mask).
    exposures = None if has_logged_exposures(events) else window_exposures(events)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".keyed.", suffix=".tmp") as tmp:
        folder = Path(tmp)
        # The day parts wait on disk, each day's mapped when its queries come (held, they were every selected
        # event's time: ~0.2 GB at 30M events of a log without slates, under every bucket's build).
        counts = WindowCounts.from_files([save_parts(day_parts(events, settings, exposures), folder / "window")],
                                         settings)
        # Co-occurrence reads every user's pairs: the window's S of each query day is made once (kept on disk)
        # and each bucket of users scores its own queries with it (defs_collaborative.CooccurrenceDays).
        across = tuple(n for n in groups.get(None, ()) if n in ACROSS_KEYS)
        cooccurrence = None
        if across and bucketed:  # the queries' users are among the events' (only their number counts)
            cooccurrence = CooccurrenceDays.from_parts(events["user_id"].iloc[:0], impressions.items, impressions.days,
                                                       events, items=items, users=users, folder=folder / "cooccurrence")
        elif across:
            cooccurrence = CooccurrenceDays.build(impressions, events, items=items, users=users,
                                                  folder=folder / "cooccurrence")
        if across:
            groups["user_id"] = (*groups.get("user_id", ()), *across)
            groups[None] = tuple(n for n in groups[None] if n not in across)
        if groups.get(None) and all(REGISTRY[n].grain == "context" for n in groups[None]):
            # Context features read the query row alone (its own columns, the item's attributes, the vocabulary):
            # built in a bucket, a row's value is the window's. Built over the window they held ~0.7 GB over the
            # 19.3M query rows of a log without slates at 10M (a BuildContext coding every row).
            host = "user_id" if "user_id" in groups else next(k for k in groups if k is not None)
            groups[host] = (*groups[host], *groups.pop(None))
        if groups.get(None):
            whole = _concat([impressions.read_queries(b) for b in range(buckets)]) if bucketed else impressions
            yield from iter_columns(whole, events, groups[None], items=items, users=users, settings=settings)
            del whole
        groups.pop(None, None)
        cuts = {}  # key column -> per bucket (its query rows' files, paths of its queries, path of its events)
        for key in (k for k in groups if k is not None):
            e_bucket = key_buckets(events[key], buckets)
            if bucketed:
                q_cuts = _cut_buckets(impressions, key, folder)
            else:
                q_bucket = key_buckets(impressions[key], buckets)
                q_cuts = []
                for b in range(buckets):
                    q_rows = np.flatnonzero(q_bucket == b)
                    _spill_rows(impressions, q_rows, folder / f"{key}.{b}.queries.arrow")
                    np.save(folder / f"{key}.{b}.rows.npy", q_rows)
                    q_cuts.append(([folder / f"{key}.{b}.rows.npy"], [folder / f"{key}.{b}.queries.arrow"]))
                del q_bucket, q_rows
            cuts[key] = []
            for b in range(buckets):
                e_rows = np.flatnonzero(e_bucket == b)
                e_path = folder / f"{key}.{b}.events.arrow"
                _spill_rows(events, e_rows, e_path)
                if exposures is not None:
                    np.save(folder / f"{key}.{b}.exposures.npy", exposures[e_rows])
                cuts[key].append((q_cuts[b][0], q_cuts[b][1], e_path))
            del e_bucket
        n_queries = impressions.n if bucketed else len(impressions)
        del impressions, events, exposures  # the buckets on disk hold them now
        for key, parts in cuts.items():
            for b, (_, q_paths, e_path) in enumerate(parts):
                queries, bucket_events = _concat([_unspill(p) for p in q_paths]), _unspill(e_path)
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
                for path in (*q_paths, e_path):
                    if path.parent == folder:  # not a QueryBuckets' own file
                        path.unlink()
            for name in groups[key]:
                out = np.empty(n_queries, dtype=REGISTRY[name].dtype)
                for b, (q_rows, _, _) in enumerate(parts):
                    chunk = folder / f"{name}.{b}.npy"
                    if isinstance(q_rows, range):  # a bucket of users of QueryBuckets: its rows are one run
                        out[q_rows.start:q_rows.stop] = np.load(chunk)
                    else:
                        out[_bucket_rows(q_rows)] = np.load(chunk)
                    chunk.unlink()
                yield name, out
                del out


def _cut_buckets(queries: QueryBuckets, key: str, folder: Path) -> list[tuple[range | list[Path], list[Path]]]:
    """Per bucket of ``key`` (its :func:`key_buckets`): the window rows of ``queries`` in it, ascending (a range,
    or the files of its pieces' rows: :func:`_bucket_rows`), and the files of its rows (for the user buckets
    ``queries``' own files; else one piece per bucket of users). The rows wait on disk: held, each key's were
    an int64 per query row of the window (0.46 GB at 30M events of a log without slates) under every build."""
    offsets = queries.offsets
    if key == "user_id":
        return [(range(int(offsets[b]), int(offsets[b + 1])), [queries.queries[b]]) for b in range(queries.buckets)]
    rows: list[list[Path]] = [[] for _ in range(queries.buckets)]
    paths: list[list[Path]] = [[] for _ in range(queries.buckets)]
    for u in range(queries.buckets):
        frame = queries.read_queries(u)
        of_row = key_buckets(frame[key], queries.buckets)
        for b in np.unique(of_row).tolist():
            at = np.flatnonzero(of_row == b)
            paths[b].append(folder / f"{key}.{b}.queries.{u}.arrow")
            _spill_rows(frame, at, paths[b][-1])
            rows[b].append(folder / f"{key}.{b}.rows.{u}.npy")
            np.save(rows[b][-1], offsets[u] + at)
        del of_row
    for b in (b for b in range(queries.buckets) if not paths[b]):  # a bucket of items no query names
        paths[b].append(folder / f"{key}.{b}.queries.none.arrow")
        _spill_rows(frame, np.zeros(0, dtype=np.int64), paths[b][-1])
    return list(zip(rows, paths, strict=True))


def _bucket_rows(rows: range | list[Path]) -> np.ndarray:
    """A bucket's window rows, ascending: a range, or the concatenation of its pieces' saved rows."""
    if isinstance(rows, range):
        return np.arange(rows.start, rows.stop, dtype=np.int64)
    return np.concatenate([np.load(p) for p in rows]) if rows else np.zeros(0, dtype=np.int64)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``frames`` one after the other; categorical columns stay categorical (their categories united)."""
    from pandas.api.types import union_categoricals

    if len(frames) == 1:
        return frames[0]
    if not frames:
        return pd.DataFrame()
    out = {}
    for name in frames[0].columns:
        parts = [f[name] for f in frames]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            out[name] = pd.Series(union_categoricals(parts))
        else:
            out[name] = pd.concat(parts, ignore_index=True)
    return pd.DataFrame(out, copy=False)


def has_logged_exposures(events: pd.DataFrame) -> bool:
    """Whether any event is a logged impression (else the builder infers exposures from sessions)."""
    from core.schema import EventType

    return bool((events["event_type"] == EventType.IMPRESSION.value).any())


def _spill_rows(frame: pd.DataFrame, rows: np.ndarray, path: Path) -> None:
    """``frame``'s rows ``rows`` written to ``path``; a categorical column with more categories than rows keeps only
    the ones those rows use.
    A bucket's events took the window's categories with them: every bucket's file held the window's session ids
    (1.8M texts at 30M events of a log without slates), each read back and checked once per bucket of users and
    of items (the 30M stage's highest point, and a cost that grew with the buckets times the window)."""
    from core.parquet import arrow_table

    piece = frame.take(rows).reset_index(drop=True)
    for name in piece.columns:
        column = piece[name]
        if isinstance(column.dtype, pd.CategoricalDtype) and len(column.cat.categories) > len(column):
            piece[name] = column.cat.remove_unused_categories()  # only where the dictionary outweighs the rows
    _write_ipc(arrow_table(piece), path)


def _unspill(path: Path) -> pd.DataFrame:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all().to_pandas()


def window_exposures(events: pd.DataFrame) -> np.ndarray:
    """Per event of a window without logged impressions, whether it is an inferred exposure (the builder's own,
    ``features.context.inferred_exposures``), from the ids' codes, sessions and times alone."""
    from features.context import _ms, column_or_null, inferred_exposures

    user, item = pd.factorize(events["user_id"])[0], pd.factorize(events["item_id"])[0]
    return inferred_exposures(user, item, column_or_null(events, "session_id"), _ms(events["ts"]))

