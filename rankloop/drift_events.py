"""The drift report's events part: the event-type mix, the Q action mix and the reward rates of the week
before the test week and of the test week, read from the valid events file a record batch at a time.

Nothing holds the two weeks' rows:

* one streamed read of the key columns counts each week's event types, says whether the window has
  requests and impressions, and keeps the 64-bit hash of each request with a row in the two weeks;
* a second streamed read spills those requests' rows (older rows of theirs included: a reward reads
  its whole request) to one file per bucket of requests (``core.spill``);
* each bucket gives its requests' slates (a request's first row in the file) and rewards; only the
  two weeks' reward values, times and rows are kept, then put in ``impression_rewards``' order (time,
  then row), so each week's means are those of the whole window's rewards to the last bit.

A request's rows are all in one bucket, so the rewards and slates are those of the whole file. Rows
without a request are counted in the event-type mix only: they make no slate and no reward.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.config.policy import RewardSettings
from core.config.ranker import split_starts
from core.parquet import open_for_streaming
from core.schema import EventType
from core.spill import BucketSpill, key_hashes

# Rows read per record batch, and two weeks' rows per bucket of requests (one bucket is in memory at a time).
BATCH_ROWS = 262_144
BUCKET_ROWS = 1_000_000
# What a bucket's file holds (those the file has): what the rewards and the slates read, and the row's place.
_SPILLED = ("user_id", "item_id", "event_type", "ts", "value", "request_id", "action_id")
_ROW = "_row"
_REFERENCE, _CURRENT = 0, 1
_RATES = (("click_rate", "clicked"), ("success_rate", "success"), ("mean_reward", "reward"))


@dataclass(frozen=True)
class Weeks:
    """The week before the test week ``[reference, current)`` and the test week ``[current, end)``."""

    reference: pd.Timestamp
    current: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def of(cls, end: datetime, test_days: int) -> Weeks:
        ref_start, test_start = split_starts(end, valid_days=test_days, test_days=test_days)
        return cls(pd.Timestamp(ref_start), pd.Timestamp(test_start), pd.Timestamp(end))

    def of_times(self, ts: pd.Series | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Per time: 0 in the week before the test week, 1 in the test week, -1 neither (a missing time too).
        A time without a zone is UTC."""
        t = pd.to_datetime(ts.to_pandas() if not isinstance(ts, pd.Series) else ts, utc=True)
        week = np.full(len(t), -1, dtype=np.int8)
        week[((t >= self.reference) & (t < self.current)).to_numpy()] = _REFERENCE
        week[((t >= self.current) & (t < self.end)).to_numpy()] = _CURRENT
        return week


@dataclass
class _Counts:
    """Category counts per week (``models.drift.category_counts`` of each piece, summed at the end)."""

    pieces: tuple[list[pd.Series], list[pd.Series]] = field(default_factory=lambda: ([], []))

    def add(self, values: pd.Series, week: np.ndarray) -> None:
        from models.drift import category_counts

        for w in (_REFERENCE, _CURRENT):
            mask = week == w
            if mask.any():
                self.pieces[w].append(category_counts(values[mask]))

    def week(self, w: int) -> pd.Series:
        pieces = self.pieces[w]
        if not pieces:
            return pd.Series([], dtype=np.int64, index=pd.Index([], dtype=object))
        return pd.concat(pieces).groupby(level=0, sort=False).sum()


@dataclass
class _Keys:
    """What the first read finds: each week's event types, the window's requests and impressions."""

    event_types: _Counts
    has_requests: bool
    has_impressions: bool
    requests: np.ndarray  # the sorted distinct hashes of the requests with a row in the two weeks
    rows: int  # rows of those requests in the two weeks


def event_drift(path: Path, end: datetime, test_days: int, rewards: RewardSettings, *,
                bucket_rows: int = BUCKET_ROWS, batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """The report's ``event_mix``, ``action_mix`` and ``rewards`` from the valid events file at ``path``."""
    from models.drift import categorical_psi_of_counts, shares_of_counts

    weeks = Weeks.of(end, test_days)
    keys = _read_keys(path, weeks, batch_rows)
    actions, rates = _by_request_bucket(path, weeks, keys, rewards, bucket_rows, batch_rows)
    ev_ref, ev_cur = keys.event_types.week(_REFERENCE), keys.event_types.week(_CURRENT)
    act_ref, act_cur = actions.week(_REFERENCE), actions.week(_CURRENT)
    return {
        "event_mix": {"reference": shares_of_counts(ev_ref), "current": shares_of_counts(ev_cur),
                      "psi": categorical_psi_of_counts(ev_ref, ev_cur)},
        "action_mix": {"psi": categorical_psi_of_counts(act_ref, act_cur) if len(act_cur) else None,
                       "actions_reference": len(act_ref), "actions_current": len(act_cur)},
        "rewards": rates,
    }


def _batches(path: Path, columns: list[str], batch_rows: int) -> Any:
    return open_for_streaming(path).iter_batches(batch_size=batch_rows, columns=columns, use_threads=False)


def _read_keys(path: Path, weeks: Weeks, batch_rows: int) -> _Keys:
    names = set(pq.read_schema(path).names)
    with_requests = "request_id" in names
    event_types, hashes = _Counts(), []
    has_requests = has_impressions = False
    rows = 0
    for batch in _batches(path, [c for c in ("request_id", "event_type", "ts") if c in names], batch_rows):
        week = weeks.of_times(batch.column("ts"))
        types = batch.column("event_type")
        event_types.add(types.to_pandas(), week)
        if not with_requests:
            continue
        request = batch.column("request_id")
        present = pc.is_valid(request).to_numpy(zero_copy_only=False)
        impression = pc.fill_null(pc.equal(types, EventType.IMPRESSION.value), False).to_numpy(zero_copy_only=False)
        has_requests |= bool(present.any())
        has_impressions |= bool((present & impression).any())
        recent = present & (week >= 0)
        if recent.any():
            rows += int(recent.sum())
            hashes.append(np.unique(key_hashes(request.filter(pa.array(recent)))[0]))
    requests = np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, dtype=np.uint64)
    return _Keys(event_types, has_requests, has_impressions, requests, rows)


def _by_request_bucket(path: Path, weeks: Weeks, keys: _Keys, rewards: RewardSettings, bucket_rows: int,
                       batch_rows: int) -> tuple[_Counts, dict[str, Any]]:
    """Each week's slate actions (counts) and reward rates, one bucket of requests at a time."""
    actions = _Counts()
    if not len(keys.requests):
        return actions, {} if not (keys.has_requests and keys.has_impressions) else _rates(None, None)
    schema = pq.read_schema(path)
    read = [c for c in _SPILLED if c in schema.names]
    buckets = max(1, -(-keys.rows // bucket_rows))
    spilled = pa.schema([*(schema.field(c) for c in read), pa.field(_ROW, pa.int64())])
    parts: tuple[list[pd.DataFrame], list[pd.DataFrame]] = ([], [])
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".drift.", suffix=".tmp") as folder:
        spill = BucketSpill(Path(folder), buckets, spilled)
        with spill:
            offset = 0
            for batch in _batches(path, read, batch_rows):
                hashes, present = key_hashes(batch.column("request_id"))
                place = np.minimum(np.searchsorted(keys.requests, hashes), len(keys.requests) - 1)
                wanted = present & (keys.requests[place] == hashes)
                if wanted.any():
                    rows = np.flatnonzero(wanted)
                    table = pa.Table.from_batches([batch]).take(pa.array(rows)).append_column(
                        _ROW, pa.array(rows + offset, type=pa.int64()))
                    spill.append(table, (hashes[rows] % np.uint64(buckets)).astype(np.int64))
                offset += batch.num_rows
        for table in spill.buckets():
            if table.num_rows:
                frame = table.to_pandas()
                del table
                _bucket(frame, weeks, keys.has_impressions, rewards, actions, parts)
    return actions, _rates(*parts) if keys.has_impressions else {}


def _bucket(frame: pd.DataFrame, weeks: Weeks, impressions: bool, settings: RewardSettings, actions: _Counts,
            parts: tuple[list[pd.DataFrame], list[pd.DataFrame]]) -> None:
    """One bucket's slates (each request's first row) into ``actions``; its two weeks' rewards into ``parts``."""
    from models.rewards import impression_rewards

    if "action_id" in frame:
        slates = frame[["request_id", "ts", "action_id"]].drop_duplicates("request_id")
        slates = slates[slates["action_id"].notna()]
        actions.add(slates["action_id"], weeks.of_times(slates["ts"]))
    if not impressions:
        return
    got = impression_rewards(frame, settings, carry=(_ROW,))
    week = weeks.of_times(got["ts"])
    for w in (_REFERENCE, _CURRENT):
        mask = week == w
        if mask.any():
            parts[w].append(got.loc[mask, ["ts", _ROW, "clicked", "success", "reward"]])


def _rates(reference: list[pd.DataFrame] | None, current: list[pd.DataFrame] | None) -> dict[str, Any]:
    """Per week: click, success and mean reward over its impressions in ``impression_rewards``' order
    (by time, then row), so the sums are those of the whole window's frame; None for a week without one."""
    means: dict[str, dict[str, float | None]] = {name: {} for name, _ in _RATES}
    for side, parts in (("reference", reference), ("current", current)):
        week = pd.concat(parts, ignore_index=True) if parts else None
        if parts:
            parts.clear()
        if week is not None:
            ts = pd.to_datetime(week["ts"], utc=True).to_numpy(dtype="datetime64[ns]")
            week = week.take(np.lexsort((week[_ROW].to_numpy(), ts)))
        for name, col in _RATES:
            means[name][side] = float(week[col].mean()) if week is not None else None
        del week
    return means
