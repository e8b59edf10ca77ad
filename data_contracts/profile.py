"""Per-window profiles of the valid rows, and the batch-level checks that compare them.

A profile (rows, rows per event type, rows per UTC day, suite version) is small JSON kept under the
data home, one file per (source, mapping, window). The next run compares its own profile with the
latest one whose window ends *before* its own (never with the same window, so a re-run does not
compare with itself):

* ``volume_change_vs_previous``: valid rows per active day, relative change vs the previous window.
* ``event_mix_shift_vs_previous``: total variation distance between the event-type shares
  (``0.5 * sum(|p_i - q_i|)``, 0 = same mix, 1 = disjoint).
* ``day_volume_in_window`` (no history needed): every full active day has at least
  ``min_day_volume_fraction`` of the median day's rows.

"Active days" are the full UTC days of the window that are not after ``now`` and not before the
source's first row in the window (a source whose history starts inside the window is not short of
data on the days before it existed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import write_json
from core.config.contracts import ContractSettings

DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class WindowProfile:
    """What a validated window held (valid rows only)."""

    window_start: str
    window_end: str
    rows: int
    event_type_counts: dict[str, int]
    day_counts: dict[str, int]  # "YYYY-MM-DD" -> rows, every active day (zeros included)
    suite_version: str
    source_key: str = ""
    snapshot_digest: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def rows_per_active_day(self) -> float | None:
        days = list(self.day_counts.values())
        return float(np.mean(days)) if days else None

    def describe(self) -> str:
        """How the report names it: window, snapshot and when it was validated."""
        digest = f", snapshot {self.snapshot_digest[:12]}" if self.snapshot_digest else ""
        return f"window [{self.window_start}, {self.window_end}){digest}, validated {self.created_at}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowProfile:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def source_key(source: str, mapping: str) -> str:
    """Folder name of a (redacted source, mapping) pair's profiles."""
    return hashlib.sha256(f"{source}|{mapping}".encode()).hexdigest()[:16]


def build_profile(
    ts_us: np.ndarray, event_types: np.ndarray | Mapping[str, int], window: tuple[datetime, datetime], now: datetime,
    suite_version: str,
) -> WindowProfile:
    """Profile of the valid rows.

    Args:
        ts_us: (n,) int64 microseconds since the epoch, valid rows only.
        event_types: (n,) object array of the rows' event types, or their counts by type.
        window: the extract window ``[start, end)``.
        now: the validation time (days after it are not active).
        suite_version: recorded with the profile.
    """
    if isinstance(event_types, Mapping):
        types, counts = zip(*sorted(event_types.items()), strict=True) if event_types else ((), ())
    else:
        types, counts = np.unique(event_types.astype(str), return_counts=True) if len(event_types) else ([], [])
    first_day = _ceil_day(window[0])
    last_day = min(_floor_day(window[1]), _floor_day(now))  # exclusive: days ending by then
    n_days = max((last_day - first_day).days, 0)
    start_us = int(first_day.timestamp() * 1_000_000)
    offsets = (ts_us - start_us) // DAY_US
    in_days = (offsets >= 0) & (offsets < n_days)
    per_day = np.bincount(offsets[in_days], minlength=n_days) if n_days else np.zeros(0, np.int64)
    nonzero = np.flatnonzero(per_day)
    begin = int(nonzero[0]) if len(nonzero) else n_days
    day_counts = {(first_day + timedelta(days=d)).date().isoformat(): int(per_day[d]) for d in range(begin, n_days)}
    return WindowProfile(
        window_start=window[0].isoformat(), window_end=window[1].isoformat(), rows=int(len(ts_us)),
        event_type_counts={str(t): int(c) for t, c in zip(types, counts, strict=True)},
        day_counts=day_counts, suite_version=suite_version,
    )


def _floor_day(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def _ceil_day(moment: datetime) -> datetime:
    floor = _floor_day(moment)
    return floor if floor == moment.astimezone(UTC) else floor + timedelta(days=1)


def total_variation(p: dict[str, int], q: dict[str, int]) -> float:
    """0.5 * sum |p_i - q_i| over the union of keys, each dict normalised to shares."""
    p_total, q_total = sum(p.values()) or 1, sum(q.values()) or 1
    return 0.5 * sum(abs(p.get(k, 0) / p_total - q.get(k, 0) / q_total) for k in set(p) | set(q))


def batch_records(
    profile: WindowProfile, previous: WindowProfile | None, settings: ContractSettings
) -> list[dict[str, Any]]:
    """One record per batch-level check: name, success, observed, allowed, previous, message; all fatal."""
    records = [_day_volume(profile, settings)]
    if previous is None:
        note = "first run for this source and mapping: no previous window to compare with (passes)"
        for name in ("volume_change_vs_previous", "event_mix_shift_vs_previous"):
            records.append(_record(name, True, None, None, None, note))
        return records
    before, now = previous.rows_per_active_day, profile.rows_per_active_day
    if before and now is not None:
        change = now / before - 1.0
        records.append(_record(
            "volume_change_vs_previous", abs(change) <= settings.max_volume_change, round(change, 4),
            settings.max_volume_change, previous,
            f"{now:,.0f} valid rows per active day vs {before:,.0f} in the previous {previous.describe()}: "
            f"change {change:+.1%}, allowed ±{settings.max_volume_change:.0%}",
        ))
    else:
        records.append(_record("volume_change_vs_previous", True, None, settings.max_volume_change, previous,
                               "no active days to compare (passes)"))
    shift = total_variation(profile.event_type_counts, previous.event_type_counts)
    moved = sorted(set(profile.event_type_counts) | set(previous.event_type_counts),
                   key=lambda k: -abs(_share(profile, k) - _share(previous, k)))[:3]
    records.append(_record(
        "event_mix_shift_vs_previous", shift <= settings.max_event_mix_shift, round(shift, 4),
        settings.max_event_mix_shift, previous,
        f"event-type mix total variation distance {shift:.3f} vs the previous {previous.describe()}, allowed "
        f"{settings.max_event_mix_shift}; largest moves: "
        + ", ".join(f"{k} {_share(previous, k):.1%} -> {_share(profile, k):.1%}" for k in moved),
    ))
    return records


def _share(profile: WindowProfile, key: str) -> float:
    return profile.event_type_counts.get(key, 0) / (sum(profile.event_type_counts.values()) or 1)


def _day_volume(profile: WindowProfile, settings: ContractSettings) -> dict[str, Any]:
    days = profile.day_counts
    median = float(np.median(list(days.values()))) if days else 0.0
    if median < settings.day_volume_min_rows:
        return _record("day_volume_in_window", True, None, settings.min_day_volume_fraction, None,
                       f"median day {median:,.0f} rows < day_volume_min_rows={settings.day_volume_min_rows}: "
                       "too few rows to judge daily volume (passes)")
    short = {d: c for d, c in days.items() if c < settings.min_day_volume_fraction * median}
    lowest = min(days, key=days.__getitem__)
    observed = round(days[lowest] / median, 4)
    listed = ", ".join(f"{d} {c:,} rows ({c / median:.0%})" for d, c in sorted(short.items()))
    message = (f"{len(short)} day(s) below {settings.min_day_volume_fraction:.0%} of the median day "
               f"({median:,.0f} rows): {listed}" if short else
               f"lowest day {lowest} has {days[lowest]:,} rows, {observed:.0%} of the median day ({median:,.0f})")
    return _record("day_volume_in_window", not short, observed, settings.min_day_volume_fraction, None, message,
                   days=sorted(short))


def _record(name: str, success: bool, observed: Any, allowed: Any, previous: WindowProfile | None,
            message: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "success": bool(success), "observed_value": observed, "allowed": allowed,
            "previous": None if previous is None else {"window": [previous.window_start, previous.window_end],
                                                       "snapshot_digest": previous.snapshot_digest,
                                                       "created_at": previous.created_at},
            "message": message, "fatal": True, "engine": "batch", "unexpected_count": None,
            "element_count": None, **extra}


# --- persistence -----------------------------------------------------------------------------
def _file_name(window_start: str, window_end: str) -> str:
    tag = "_".join(datetime.fromisoformat(w).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
                   for w in (window_start, window_end))
    return f"profile-{tag}.json"


def write_profile(profile: WindowProfile, directory: Path) -> Path:
    """Write ``profile`` atomically to ``<directory>/<source_key>/profile-<start>_<end>.json``."""
    folder = Path(directory) / (profile.source_key or "default")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _file_name(profile.window_start, profile.window_end)
    write_json(path, asdict(profile))
    return path


def previous_profile(directory: Path, key: str, window: tuple[datetime, datetime]) -> WindowProfile | None:
    """The stored profile of ``key`` whose window ends latest strictly before ``window``'s end; None if none."""
    folder = Path(directory) / (key or "default")
    best: WindowProfile | None = None
    for path in folder.glob("profile-*.json") if folder.is_dir() else ():
        profile = WindowProfile.from_dict(json.loads(path.read_text()))
        end = datetime.fromisoformat(profile.window_end)
        if end < window[1] and (best is None or end > datetime.fromisoformat(best.window_end)):
            best = profile
    return best
