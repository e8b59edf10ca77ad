"""The Dask stages' blocks of days: the extraction's windows, their combination, and the setting that sizes them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from core.config.executor import ExecutorSettings, executor_summary
from core.settings import Settings
from rankloop.distributed import BlockPart, block_windows, combine_extracts, day_windows, feature_blocks


@pytest.mark.parametrize("days_per_task", [1, 3, 7, 40])
def test_block_windows_cover_the_window_once_in_the_feature_blocks_days(days_per_task: int) -> None:
    start, end = datetime(2026, 10, 12, 6, 30, tzinfo=UTC), datetime(2026, 11, 16, 0, 0, tzinfo=UTC) + timedelta(hours=5)
    blocks = block_windows(start, end, days_per_task)
    assert blocks[0][0] == start and blocks[-1][1] == end  # partial first and last days kept
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))  # contiguous, no overlap
    days = [w[0].date() for w in day_windows(start, end)]
    expected = feature_blocks(days, days_per_task)
    assert [(w[0].date(), (w[1] - timedelta(microseconds=1)).date()) for w in blocks] == [(b[0], b[-1]) for b in expected]
    if days_per_task == 1:
        assert blocks == day_windows(start, end)


def test_overlapping_block_snapshots_are_refused(tmp_path: Path) -> None:
    def part(first: date, last: date) -> BlockPart:
        return BlockPart(first=first, last=last, path=tmp_path / f"{first}.parquet", digest="d", rows=1, reused=False)

    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 15, tzinfo=UTC)
    with pytest.raises(ValueError, match="overlap: 2026-10-01..2026-10-07 and 2026-10-07..2026-10-14"):
        combine_extracts(Settings(), [part(date(2026, 10, 7), date(2026, 10, 14)), part(date(2026, 10, 1), date(2026, 10, 7))],
                         start, end)


def test_days_per_task_reads_its_former_name_and_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKLOOP_EXECUTOR__FEATURE_DAYS_PER_TASK", "3")
    assert Settings().executor.days_per_task == 3  # a deployment configured before the rename keeps its value
    monkeypatch.delenv("RANKLOOP_EXECUTOR__FEATURE_DAYS_PER_TASK")
    monkeypatch.setenv("RANKLOOP_EXECUTOR__DAYS_PER_TASK", "5")
    assert Settings().executor.days_per_task == 5
    assert executor_summary(ExecutorSettings(kind="dask", days_per_task=2))["days_per_task"] == 2
    with pytest.raises(ValueError, match="days_per_task"):
        ExecutorSettings(days_per_task=0)
