"""The declared event columns are all that labels and features read: loading only those changes nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config.features import FeatureSettings, LabelSettings
from core.schema import INTERACTION_SCHEMA, TRAIT_COLUMNS
from features import build_features, event_columns, impressions
from features.labels import EVENT_COLUMNS


@pytest.fixture(scope="module")
def wide_events(events: pd.DataFrame) -> pd.DataFrame:
    """The fixture with every other canonical column filled (own categories differ from the items
    table's for some rows; traits logged on events), so a column the code reads but the lists
    lack would change some feature."""
    rng = np.random.default_rng(2)
    n = len(events)
    extra = {"category": np.where(rng.random(n) < 0.3, "c9", None), "content_type": np.where(rng.random(n) < 0.3, "video", None),
             "action_id": rng.integers(0, 27, n).astype(np.int32), "mood_delta": rng.choice([-1.0, 0.0, 1.0], n)}
    extra |= {c: np.where(rng.random(n) < 0.5, rng.random(n), np.nan) for c in TRAIT_COLUMNS}
    wide = events.assign(**extra)
    assert set(INTERACTION_SCHEMA.names) <= set(wide.columns)
    return wide


def test_labels_read_only_their_columns(wide_events):
    pdt.assert_frame_equal(impressions(wide_events[list(EVENT_COLUMNS)], LabelSettings()),
                           impressions(wide_events, LabelSettings()))


@pytest.mark.parametrize("with_users", [True, False])
def test_features_read_only_event_columns(wide_events, items, users, with_users):
    users = users if with_users else None
    labelled = impressions(wide_events, LabelSettings())
    full = build_features(labelled, wide_events, items=items, users=users, settings=FeatureSettings())
    slim = build_features(labelled, wide_events[list(event_columns(users))], items=items, users=users,
                          settings=FeatureSettings())
    pdt.assert_frame_equal(slim, full)
    traits_read = set(TRAIT_COLUMNS) & set(event_columns(users))
    assert traits_read == (set() if with_users else set(TRAIT_COLUMNS))  # the users table has them all


def test_features_read_only_query_columns(wide_events, items, users):
    """Every registered feature (logged ones too) is the same from the impressions' declared
    columns alone: the weekly run hands the builder only those."""
    from features import QUERY_COLUMNS
    from features.build import build_columns
    from features.registry import REGISTRY

    labelled = impressions(wide_events, LabelSettings())
    rng = np.random.default_rng(5)
    labelled = labelled.assign(device=rng.choice(["mobile", "tv", None], len(labelled)),
                               mood=rng.choice(["calm", "happy", None], len(labelled)),
                               time_of_day=rng.choice(["morning", "night", None], len(labelled)))
    names = tuple(REGISTRY)
    full = build_columns(labelled, wide_events, names, items=items, users=users, settings=FeatureSettings())
    slim = build_columns(labelled[[c for c in QUERY_COLUMNS if c in labelled.columns]], wide_events, names,
                         items=items, users=users, settings=FeatureSettings())
    pdt.assert_frame_equal(slim, full)
    assert set(QUERY_COLUMNS) <= set(labelled.columns)  # nothing declared is missing from the fixture
    assert full[[f"ctx_{c}" for c in ("device", "mood", "time_of_day")]].nunique().min() > 1  # the context is read


def test_traits_that_hold_no_value_need_not_be_read(wide_events, items, tmp_path):
    """The weekly stage does not read a trait column that holds no value (``unless_null``: a log without the Big
    Five, 325 MB of NaN at 10M events): every registered feature is the same with the column absent; a trait
    with one value is read."""
    from features.build import build_columns
    from features.registry import REGISTRY
    from rankloop.stages import Validated, null_columns

    events = wide_events.assign(**{c: np.nan for c in TRAIT_COLUMNS[1:]})  # trait_openness keeps its values
    path = tmp_path / "events.parquet"
    table = pa.Table.from_pandas(events, preserve_index=False)
    pq.write_table(table, path, row_group_size=max(1, len(events) // 3))  # several row groups
    assert pq.ParquetFile(path).metadata.num_row_groups >= 3
    assert null_columns(path, (*TRAIT_COLUMNS, "user_id", "absent")) == set(TRAIT_COLUMNS[1:])
    validated = Validated(events_path=path, rows_in=len(events), rows_valid=len(events), rows_quarantined=0,
                          quarantine_path=None, suite_name="t", suite_version="0")
    read = validated.load_events(list(event_columns(None)), unless_null=TRAIT_COLUMNS)
    assert set(TRAIT_COLUMNS) & set(read.columns) == {TRAIT_COLUMNS[0]}
    labelled = impressions(events, LabelSettings())
    names = tuple(REGISTRY)
    full = build_columns(labelled, events, names, items=items, users=None, settings=FeatureSettings())
    slim = build_columns(labelled, read, names, items=items, users=None, settings=FeatureSettings())
    pdt.assert_frame_equal(slim, full)
    assert full[f"user_{TRAIT_COLUMNS[0]}"].notna().any()  # the kept trait is read


def test_a_column_null_in_one_row_group_only_is_read(tmp_path):
    from rankloop.stages import null_columns

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [None, None, 1.0, None], "b": pa.array([None] * 4, pa.float64())}), path,
                   row_group_size=2)
    assert null_columns(path, ("a", "b")) == {"b"}
