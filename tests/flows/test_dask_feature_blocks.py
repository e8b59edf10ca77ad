"""A Dask feature task builds a block of query days at once (the history read once): each day's rows
equal what that day built alone gives, whatever the block size (no cluster needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.settings import Settings
from rankloop import distributed
from rankloop.partitions import split_by_day
from rankloop.simulator import SimulationConfig, simulate


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, distributed.Labelled, dict[date, Path]]:
    root = tmp_path_factory.mktemp("blocks")
    config = SimulationConfig(n_users=150, n_items=60, weeks=2, requests_per_user_week=3.0, seed=5,
                              end=datetime(2026, 11, 16, tzinfo=UTC))
    pq.write_table(pa.concat_tables(list(simulate(config))), root / "events.parquet")
    valid = split_by_day(root / "events.parquet", root / "valid")
    settings = Settings(home=root / "home")
    return settings, distributed.label_partitions(settings, valid, SimpleNamespace(items=None, users=None),
                                                  root / "work"), valid


def test_feature_blocks_cut_sorted_days_into_runs() -> None:
    days = [date(2026, 11, d) for d in (5, 1, 2, 3, 4)]
    assert distributed.feature_blocks(days, 2) == [[date(2026, 11, 1), date(2026, 11, 2)],
                                                   [date(2026, 11, 3), date(2026, 11, 4)], [date(2026, 11, 5)]]
    assert distributed.feature_blocks(days, 7) == [sorted(days)]
    assert distributed.feature_blocks([], 7) == []


def test_a_block_of_days_writes_what_each_day_alone_writes(labelled: tuple, tmp_path: Path) -> None:
    settings, parts, valid = labelled
    days = sorted(parts.impression_paths)
    assert len(days) >= 10
    block = distributed.featurise_days(settings, days[:6], parts, valid, tmp_path / "block")
    assert [p.day for p in block] == days[:6]
    for part in block:
        alone = distributed.featurise_days(settings, [part.day], parts, valid, tmp_path / "alone" / str(part.day))
        assert len(alone) == 1 and alone[0].rows == part.rows > 0
        np.testing.assert_array_equal(part.groups, alone[0].groups)
        pd.testing.assert_frame_equal(pd.read_parquet(part.path), pd.read_parquet(alone[0].path), check_exact=True)
    # Every impression of those days is in exactly one day's file.
    expected = sum(len(parts.day(d)) for d in days[:6])
    assert sum(p.rows for p in block) == expected
