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

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from core.config.features import FeatureSettings
from features.build import build_features

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
