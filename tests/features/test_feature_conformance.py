"""Every registered feature: declared dtype, null policy, determinism under shuffled input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import FEATURE_SETS, REGISTRY, build_features, impressions
from features.config import FeatureSettings, LabelSettings

# Features that can legitimately be constant on the fixture (none today; add with a reason).
CONSTANT_OK: frozenset[str] = frozenset()
ALL = "ranker_implicit"  # every registered feature: the defaults plus the collaborative ones
# ranker_default as the demo's models were trained on it: adding features elsewhere must not move it.
DEFAULT_HASH = "316b94389907d672d6925fdbccfcf63d40b0171141c6d67debbe4d3b151ad4d0"


@pytest.fixture(scope="module")
def labelled(events):
    return impressions(events, LabelSettings())


@pytest.fixture(scope="module")
def table(labelled, events, items, users):
    return build_features(labelled, events, items=items, users=users, settings=FeatureSettings(), feature_set=ALL)


@pytest.fixture(scope="module")
def table_again(labelled, events, items, users):
    return build_features(labelled, events, items=items, users=users, settings=FeatureSettings(), feature_set=ALL)


@pytest.fixture(scope="module")
def shuffled_table(labelled, events, items, users):
    """Same inputs with every frame's rows shuffled (impressions keep their index labels)."""
    rng = np.random.default_rng(11)
    shuffle = lambda f: f.iloc[rng.permutation(len(f))]  # noqa: E731
    out = build_features(shuffle(labelled), shuffle(events).reset_index(drop=True), items=shuffle(items),
                         users=shuffle(users), settings=FeatureSettings(), feature_set=ALL)
    return out.loc[labelled.index]


def test_registry_is_large_enough():
    assert len(REGISTRY) >= 50
    assert len(FEATURE_SETS["ranker_core"].features) >= 15
    assert sorted(FEATURE_SETS[ALL].features) == sorted(REGISTRY)
    assert FEATURE_SETS["ranker_default"].features == tuple(n for n, s in REGISTRY.items() if s.group != "collaborative")
    assert FEATURE_SETS["ranker_default"].hash == DEFAULT_HASH


@pytest.mark.parametrize("name", list(REGISTRY))
def test_feature_conforms(name, table, table_again, shuffled_table, labelled, events, items, users):
    spec = REGISTRY[name]
    column = table[name]
    assert column.dtype == np.dtype(spec.dtype), f"{name}: {column.dtype} != {spec.dtype}"
    if not spec.nullable:
        assert column.notna().all(), f"{name} has nulls but declares {spec.nulls}"
    assert column.notna().any(), f"{name} is entirely null on the fixture"
    if name not in CONSTANT_OK:
        assert column.nunique() > 1, f"{name} is constant on the fixture"
    pd.testing.assert_series_equal(table_again[name], column, check_exact=True)
    pd.testing.assert_series_equal(shuffled_table[name], column, check_exact=True)


def test_a_smaller_set_gives_the_same_values(table, labelled, events, items, users):
    core = build_features(labelled, events, items=items, users=users, settings=FeatureSettings(),
                          feature_set="ranker_core")
    pd.testing.assert_frame_equal(core, table[list(core.columns)], check_exact=True)


def test_output_shape_order_and_index(table, labelled):
    assert list(table.columns) == list(FEATURE_SETS[ALL].features)
    assert table.index.equals(labelled.index)


def test_absent_inputs_follow_null_policy(labelled, events):
    bare = events[["user_id", "item_id", "event_type", "ts"]]
    out = build_features(labelled[["user_id", "item_id", "ts"]], bare, settings=FeatureSettings())
    for name in ("emb_cos_user_profile", "emb_cos_engaged_mean", "user_trait_openness", "item_age_secs"):
        assert out[name].isna().all(), name
    assert (out["ctx_device"] == -1).all()
    assert (out["user_pbc_click_ratio_28d"] > 0).all()
