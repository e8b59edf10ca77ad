"""The feature aggregates over *every* event before t, from per-day parts (rolling per-day state).

Two families of features read more than their key's events: the smoothed rates (their prior is the global
past click-through, hits per exposure over every event before t) and the position-bias ratios (each exposure
weighed by the click-through of its position before it). A build by key bucket is given those values
(``features.partitioned``); on a cluster no task holds the window's events to make them. They are counts of
events before t, so they split by UTC day exactly: the count before t is the total of every earlier day plus
the count in t's own day before t. A day's part (:func:`day_part`) is that day's selected event times, sorted,
with their keys (the position bucket, or one key); :class:`WindowCounts` holds the parts of a window and
answers counts before any times, and :func:`window_given` turns them into the values the builder takes.

Exposures are the logged impression events here (a window without any infers them from sessions, which this
does not: ``features.partitioned.window_aggregates`` does, over the whole window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.config.features import FeatureSettings
from core.schema import EventType
from features.context import ENGAGE, EXPOSURE
from features.defs_activity import position_buckets, position_rate, rate_from_counts
from features.timeline import DAY_MS

# The selections counted: (what the global rates read, keyed by one key) and (by position bucket).
GLOBAL: tuple[str, ...] = (EXPOSURE, "click", ENGAGE)
BY_POSITION: tuple[str, ...] = (EXPOSURE, "click")


def _ms(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").to_numpy(dtype="datetime64[us]").view(np.int64) // 1000


def selections(event_types: pd.Series, settings: FeatureSettings) -> dict[str, np.ndarray]:
    """Per event, whether it is an exposure (a logged impression), a click, an engagement."""
    types = event_types.astype("string").fillna("")
    return {EXPOSURE: (types == EventType.IMPRESSION.value).to_numpy(dtype=bool),
            "click": (types == "click").to_numpy(dtype=bool),
            ENGAGE: types.isin(list(settings.engagement_types)).to_numpy(dtype=bool)}


@dataclass(frozen=True)
class DayPart:
    """One UTC day's selected events: per series name, (keys, ms) sorted by (key, ms)."""

    day: int  # days since 1970-01-01
    series: dict[str, tuple[np.ndarray, np.ndarray]]


def day_parts(events: pd.DataFrame, settings: FeatureSettings) -> list[DayPart]:
    """The parts of every UTC day ``events`` (``event_type``, ``ts``, ``position``) touch."""
    if len(events) == 0:
        return []
    ms = _ms(events["ts"])
    chosen = selections(events["event_type"], settings)
    bucket = position_buckets(events, len(events), settings)
    day = ms // DAY_MS
    order = np.argsort(day, kind="stable")  # each day's rows one slice, in their order
    ms, day, bucket = ms[order], day[order], bucket[order]
    chosen = {name: mask[order] for name, mask in chosen.items()}
    bounds = np.flatnonzero(np.r_[True, day[1:] != day[:-1], True])
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = slice(lo, hi)
        series = {}
        for name in GLOBAL:
            picked = chosen[name][rows]
            series[f"all:{name}"] = _sorted(np.zeros(int(picked.sum()), np.int16), ms[rows][picked])
        for name in BY_POSITION:
            keep = chosen[name][rows] & (bucket[rows] >= 0)
            series[f"position:{name}"] = _sorted(bucket[rows][keep].astype(np.int16), ms[rows][keep])
        parts.append(DayPart(day=int(day[lo]), series=series))
    return parts


def _sorted(keys: np.ndarray, ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((ms, keys))
    return keys[order], ms[order]


def save_parts(parts: list[DayPart], path: Any) -> None:
    """The parts in one ``.npz`` file."""
    arrays = {}
    for part in parts:
        for name, (keys, ms) in part.series.items():
            arrays[f"{part.day}|{name}|keys"] = keys
            arrays[f"{part.day}|{name}|ms"] = ms
    np.savez(path, **arrays)


def load_parts(path: Any) -> list[DayPart]:
    """The parts :func:`save_parts` wrote."""
    series: dict[int, dict[str, list[np.ndarray]]] = {}
    with np.load(path) as stored:
        for name in stored.files:
            day, what, kind = name.split("|")
            series.setdefault(int(day), {}).setdefault(what, [None, None])[kind == "ms"] = stored[name]
    return [DayPart(day=d, series={k: (v[0], v[1]) for k, v in s.items()}) for d, s in sorted(series.items())]


class WindowCounts:
    """Counts of selected events strictly before given times, from a window's day parts (each day at most once).

    The parts' events are held as one sorted composite key per series (``key * span + time``, as
    ``features.timeline.counts_before`` builds them): a count is two binary searches, whatever the days."""

    def __init__(self, parts: list[DayPart], settings: FeatureSettings) -> None:
        days = [p.day for p in parts]
        if len(set(days)) != len(days):
            raise ValueError(f"day parts overlap: days {sorted(d for d in set(days) if days.count(d) > 1)} given twice")
        self.settings = settings
        self.days = sorted(days)
        self._series: dict[str, tuple[np.ndarray, int, int]] = {}
        for name in (*(f"all:{n}" for n in GLOBAL), *(f"position:{n}" for n in BY_POSITION)):
            keys = np.concatenate([p.series[name][0] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
            ms = np.concatenate([p.series[name][1] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
            t0 = int(ms.min()) - 1 if len(ms) else 0
            span = (int(ms.max()) - t0 + 2) if len(ms) else 2
            comp = keys * span + (ms - t0)
            comp.sort(kind="stable")  # runs of sorted days: timsort merges them (the global series: already sorted)
            self._series[name] = (comp, t0, span)

    def before(self, name: str, query_key: np.ndarray, query_ms: np.ndarray) -> np.ndarray:
        """Per query, the events of series ``name`` with the query's key and a time strictly before its time
        (0 for a negative key)."""
        comp, t0, span = self._series[name]
        query_key, query_ms = np.asarray(query_key), np.asarray(query_ms, dtype=np.int64)
        if len(comp) == 0 or len(query_ms) == 0:
            return np.zeros(len(query_ms), dtype=np.int64)
        valid = query_key >= 0
        block = np.where(valid, query_key, 0).astype(np.int64) * span
        needles = block + np.clip(query_ms - t0, 0, span - 1)
        counts = np.searchsorted(comp, needles, side="left") - np.searchsorted(comp, block, side="left")
        return np.where(valid, counts, 0).astype(np.int64)

    def past_rate(self, what: str, at_ms: np.ndarray) -> np.ndarray:
        """``features.defs_activity.past_rate``'s values at ``at_ms``."""
        zero = np.zeros(len(at_ms), np.int16)
        return rate_from_counts(self.before(f"all:{EXPOSURE}", zero, at_ms), self.before(f"all:{what}", zero, at_ms),
                                self.settings)

    def position_weights(self, events: pd.DataFrame) -> np.ndarray:
        """``features.defs_activity.position_weights``' values for ``events`` (any of the window's)."""
        ms = _ms(events["ts"])
        exposed = selections(events["event_type"], self.settings)[EXPOSURE]
        bucket = position_buckets(events, len(events), self.settings)
        rows = np.flatnonzero(exposed)
        at, slot = ms[rows], bucket[rows]
        prior = self.past_rate("click", at)
        clicks = self.before("position:click", slot, at)
        shown = self.before(f"position:{EXPOSURE}", slot, at)
        weights = np.zeros(len(events), dtype=np.int64)
        weights[rows] = position_rate(prior, clicks, shown, self.settings)
        return weights


def window_given(counts: WindowCounts, impressions: pd.DataFrame, events: pd.DataFrame,
                 keys: set[Any]) -> dict[Any, np.ndarray]:
    """What a key bucket's build is given (``BuildContext.given``): the window aggregates among ``keys``, for
    its ``impressions`` and ``events``, and the exposure mask."""
    given: dict[Any, np.ndarray] = {("mask", EXPOSURE): selections(events["event_type"], counts.settings)[EXPOSURE]}
    q_ms = _ms(impressions["ts"])
    for key in keys:
        if isinstance(key, tuple) and len(key) == 2 and key[0] == "past_rate":
            given[key] = counts.past_rate(key[1], q_ms)
        elif key == ("values", "position_weight"):
            given[key] = counts.position_weights(events)
    return given
