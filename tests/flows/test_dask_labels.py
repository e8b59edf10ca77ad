"""The Dask labels run per bucket of users (``rankloop.distributed``: ``bucket_day``, ``label_bucket``,
``combine_labels``): each query day's rows equal the whole window's labels of that day, row for row,
whatever the number of buckets, on logged slates with responses past midnight, responses logged
without their request, and users whose source logs no impressions at all (no cluster needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
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
from features.partitioned import split_by_query_day
from rankloop import distributed
from rankloop.partitions import split_by_day
from rankloop.simulator import SimulationConfig, simulate

NO_CATALOG = SimpleNamespace(items=None, users=None)


def _events() -> pd.DataFrame:
    config = SimulationConfig(n_users=120, n_items=50, weeks=2, requests_per_user_week=3.0, seed=11,
                              end=datetime(2026, 11, 16, tzinfo=UTC))
    events = pa.concat_tables(list(simulate(config))).to_pandas()
    rng = np.random.default_rng(3)
    responses = events.index[events["event_type"] != "impression"]
    # A quarter of the responses logged without their request (they join the user's latest slate of the item) ...
    events.loc[rng.choice(responses, len(responses) // 4, replace=False), "request_id"] = None
    # ... some of them the next day (a label looks forward across midnight) ...
    late = rng.choice(responses, 40, replace=False)
    events.loc[late, "ts"] = events.loc[late, "ts"] + timedelta(hours=20)
    # ... and a third of the users logged without impressions (their queries are the fallback ones).
    users = events["user_id"].unique()
    silent = set(rng.choice(users, len(users) // 3, replace=False))
    events = events[~(events["user_id"].isin(silent) & (events["event_type"] == "impression"))]
    return events.sort_values("ts", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def window(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pd.DataFrame, dict[date, Path]]:
    root = tmp_path_factory.mktemp("labels")
    events = _events()
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), root / "events.parquet")
    valid = split_by_day(root / "events.parquet", root / "valid")
    return Settings(home=root / "home"), pd.read_parquet(root / "events.parquet"), valid


@pytest.mark.parametrize("buckets", [1, 3, 7])
def test_each_query_day_equals_the_whole_windows_labels(window: tuple, tmp_path: Path, buckets: int) -> None:
    settings, events, valid = window
    settings = settings.model_copy(update={"executor": settings.executor.model_copy(update={"label_buckets": buckets})})
    whole = features.impressions(events, settings.labels)
    expected = split_by_query_day(whole)
    # The layout this test means to cover is there: fallback queries (no request), and responses graded a day later.
    assert whole["query_id"].str.contains("|", regex=False).any() and (whole["grade"] > 0).sum() > 100

    labelled = distributed.label_partitions(settings, valid, NO_CATALOG, tmp_path)

    assert list(labelled.impression_paths) == list(expected)
    assert labelled.impressions == len(whole)
    assert max(len(paths) for paths in labelled.impression_paths.values()) == buckets
    for day, rows in expected.items():
        pd.testing.assert_frame_equal(labelled.day(day), rows, check_exact=True)
    assert labelled.protocol["name"] == "logged_slates"
    assert (tmp_path / "labels-in").is_dir()  # the cut stays for the features (removed once they are combined)


def test_a_user_lands_in_one_bucket_whatever_the_day_or_dtype() -> None:
    ids = pd.Series(["u1", "u2", "u3", "u1", "u42"] * 3)
    a = distributed.user_buckets(ids, 5)
    assert ((a >= 0) & (a < 5)).all()
    np.testing.assert_array_equal(a, distributed.user_buckets(ids.astype(object), 5))
    np.testing.assert_array_equal(a, distributed.user_buckets(ids.astype("category"), 5))
    np.testing.assert_array_equal(a[[0, 3]], distributed.user_buckets(pd.Series(["u1", "u1"]), 5))
    assert len(set(distributed.user_buckets(pd.Series([f"u{i}" for i in range(1000)]), 5))) == 5


def test_bucket_count_follows_the_days_per_task_unless_set() -> None:
    settings = Settings()
    assert distributed.label_bucket_count(settings, 35) == 5  # 7 days per task by default
    assert distributed.label_bucket_count(settings, 36) == 6
    assert distributed.label_bucket_count(settings, 1) == 1
    pinned = settings.model_copy(update={"executor": settings.executor.model_copy(update={"label_buckets": 3})})
    assert distributed.label_bucket_count(pinned, 35) == 3


def test_a_window_without_enough_slates_is_refused_with_the_local_hint(window: tuple, tmp_path: Path) -> None:
    settings, events, valid = window
    labels = settings.labels.model_copy(update={"implicit": settings.labels.implicit.model_copy(
        update={"mode": "auto", "min_logged_queries": 10**9})})
    with pytest.raises(ConfigError, match="implicit protocol") as caught:
        distributed.label_partitions(settings.model_copy(update={"labels": labels}), valid, NO_CATALOG, tmp_path)
    assert "RANKLOOP_EXECUTOR__KIND=local" in caught.value.hint

