"""The Dask features run per bucket of users and per bucket of items (``rankloop.distributed``:
``featurise_users``, ``featurise_items``, ``combine_features``), each bucket from its own events of the window
and the window's day parts: every query day's rows equal the one-piece build's, value for value, whatever the
number of buckets and days per task, with the catalogue's traits and embeddings read (no cluster needed)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import features
from core.errors import ConfigError
from core.settings import Settings
from features.partitioned import ID_COLUMNS, contiguous, split_by_query_day
from rankloop import distributed
from rankloop.partitions import split_by_day
from rankloop.simulator import SimulationConfig, items_table, make_world, users_table
from tests.flows.test_dask_labels import _events

CONFIG = SimulationConfig(n_users=120, n_items=50, weeks=2, requests_per_user_week=3.0, seed=11)


@pytest.fixture(scope="module")
def window(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pd.DataFrame, dict[date, Path], SimpleNamespace]:
    root = tmp_path_factory.mktemp("dask_features")
    events = _events()  # slates, responses past midnight, responses without their request, users without impressions
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), root / "events.parquet")
    valid = split_by_day(root / "events.parquet", root / "valid")
    world = make_world(CONFIG)
    catalog = SimpleNamespace(items=items_table(world), users=users_table(world))
    return Settings(home=root / "home"), pd.read_parquet(root / "events.parquet"), valid, catalog


def test_feature_blocks_cut_sorted_days_into_runs() -> None:
    days = [date(2026, 11, d) for d in (5, 1, 2, 3, 4)]
    assert distributed.feature_blocks(days, 2) == [[date(2026, 11, 1), date(2026, 11, 2)],
                                                   [date(2026, 11, 3), date(2026, 11, 4)], [date(2026, 11, 5)]]
    assert distributed.feature_blocks(days, 7) == [sorted(days)]
    assert distributed.feature_blocks([], 7) == []


def test_the_label_cut_blocks_are_bounded_by_rows_too(tmp_path: Path) -> None:
    rows = {1: 5, 2: 5, 3: 12, 4: 1, 5: 2, 6: 3, 7: 9, 8: 1}
    paths = {}
    for d, n in rows.items():
        paths[date(2026, 11, d)] = tmp_path / f"{d}.parquet"
        pq.write_table(pa.table({"x": np.arange(n)}), paths[date(2026, 11, d)])
    days = lambda *ds: [date(2026, 11, d) for d in ds]  # noqa: E731
    assert distributed.cut_blocks(paths, 7) == [days(1, 2, 3, 4, 5, 6, 7), days(8)]  # no bound: feature_blocks
    assert distributed.cut_blocks(paths, 7, 10) == [days(1, 2), days(3), days(4, 5, 6), days(7), days(8)]
    assert distributed.cut_blocks(paths, 2, 100) == [days(1, 2), days(3, 4), days(5, 6), days(7, 8)]
    assert distributed.cut_blocks(paths, 7, 1) == [[d] for d in sorted(paths)]  # a day above the bound: alone
    assert distributed.cut_blocks({}, 7, 10) == []


@pytest.mark.parametrize(("buckets", "days_per_task"), [(1, 7), (3, 2), (7, 5)])
def test_every_query_day_equals_the_one_piece_build(window: tuple, tmp_path: Path, buckets: int,
                                                    days_per_task: int) -> None:
    settings, events, valid, catalog = window
    settings = settings.model_copy(update={"executor": settings.executor.model_copy(
        update={"label_buckets": buckets, "days_per_task": days_per_task})})
    items, users = catalog.items.to_pandas(), catalog.users.to_pandas()
    imps = features.impressions(events, settings.labels)
    built = features.build_features(imps, events, items=items, users=users, settings=settings.features)
    expected = split_by_query_day(pd.concat([imps[list(ID_COLUMNS)], built], axis=1))

    labelled, parts = distributed.feature_partitions(settings, valid, catalog, tmp_path)

    assert [p.day for p in parts] == list(expected)
    for part in parts:
        got, want = pd.read_feather(part.path), contiguous(expected[part.day])
        assert list(got.columns) == list(want.columns)
        assert part.rows == len(want) > 0
        pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False)
        for name in built.columns:
            assert got[name].dtype == built[name].dtype, name
    assert labelled.impressions == len(imps)
    assert not any((tmp_path / name).exists() for name in distributed.FEATURE_INPUTS)  # removed once combined
    # The comparison can fail: the user-keyed rates differ without the window's day parts.
    assert np.nanstd(built["user_click_rate_28d"].to_numpy()) > 0


def test_a_feature_set_reading_other_users_events_is_refused_on_dask(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, features={"feature_set": "ranker_implicit"}, executor={"kind": "dask"})
    with pytest.raises(ConfigError) as caught:
        distributed.check_supported(settings)
    line = caught.value.one_line()
    assert "ui_cooccur_max" in line and "RANKLOOP_EXECUTOR__KIND=local" in line
