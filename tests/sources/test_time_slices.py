"""Time slicing for connectorx reads: ordered, covering, bounded, and terminating on bursts."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta

from sources.mysql_slices import time_slices

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _counter(events: list[datetime]):
    events = sorted(events)
    return lambda lo, hi: bisect.bisect_left(events, hi) - bisect.bisect_left(events, lo)


def test_slices_cover_the_window_in_order_and_respect_the_bound() -> None:
    events = [T0 + timedelta(seconds=s) for s in range(1000)] + [T0 + timedelta(seconds=500, microseconds=i) for i in range(300)]
    count = _counter(events)
    slices = list(time_slices(count, T0, T0 + timedelta(hours=1), 100))
    assert sum(count(lo, hi) for lo, hi in slices) == len(events)
    assert all(a[1] <= b[0] for a, b in zip(slices, slices[1:], strict=False))
    assert max(count(lo, hi) for lo, hi in slices) <= 100


def test_a_burst_at_one_instant_is_read_whole_not_split_forever() -> None:
    burst = [T0 + timedelta(minutes=5)] * 50
    slices = list(time_slices(_counter(burst), T0, T0 + timedelta(hours=1), 10))
    assert len(slices) == 1 and slices[0][0] <= burst[0] < slices[0][1]


def test_empty_window_gives_no_slices() -> None:
    assert list(time_slices(lambda lo, hi: 0, T0, T0 + timedelta(days=1), 10)) == []
