"""Train/serve parity: every feature declares when its value is known, and the declarations hold.

``request`` features are computable before anything is ranked; ``logged`` ones exist only once
the logged slate was shown. A feature set (what a model trains and is served on) holds only
request features.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config.features import FeatureSettings, LabelSettings
from features import FEATURE_SETS, REGISTRY, FeatureSet, impressions
from features.build import build_columns
from features.registry import KNOWN, feature

LOGGED_COLUMNS = ("position", "propensity", "policy_version")  # what only the shown slate says
EXTRA_CANDIDATES = 3  # per request: items the logging policy did not show


@pytest.mark.parametrize("set_name", list(FEATURE_SETS))
def test_every_feature_set_holds_only_request_time_features(set_name):
    logged = [n for n in FEATURE_SETS[set_name].features if REGISTRY[n].known != "request"]
    assert logged == [], f"{set_name} would be served without {logged}"


def test_every_feature_declares_when_it_is_known():
    assert {spec.known for spec in REGISTRY.values()} <= set(KNOWN)
    assert [n for n, spec in REGISTRY.items() if spec.known == "logged"] == ["ctx_position"]


def test_a_set_with_a_logged_feature_is_refused():
    with pytest.raises(ValueError, match=r"'with_slot'.*after the slate was shown: \['ctx_position'\].*position_bias"):
        FeatureSet("with_slot", ("ctx_hour", "ctx_position"))


def test_a_feature_must_say_when_it_is_known():
    def late_feature(ctx):
        """A value nobody said when it exists."""

    with pytest.raises(TypeError, match="known"):
        feature(dtype="float32", grain="user", group="x")(late_feature)
    with pytest.raises(ValueError, match=r"known 'after_click' is not one of \('request', 'logged'\)"):
        feature(dtype="float32", grain="user", group="x", known="after_click")(late_feature)
    assert "late_feature" not in REGISTRY


@pytest.fixture(scope="module")
def logged_and_served(events, items, users):
    """Features of the logged slates, and of the same requests as serving sees them: no slot,
    propensity or policy on the rows, and candidates the logging policy never showed among them."""
    logged = impressions(events, LabelSettings())
    served = _serving_frame(logged, items)
    names = tuple(REGISTRY)
    settings = FeatureSettings()
    return (build_columns(logged, events, names, items=items, users=users, settings=settings),
            build_columns(served, events, names, items=items, users=users, settings=settings).loc[logged.index])


def _serving_frame(logged: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Each request's rows shuffled, without the logged columns, plus unseen candidates (new index labels)."""
    rng = np.random.default_rng(3)
    shown = logged.drop(columns=list(LOGGED_COLUMNS)).sample(frac=1.0, random_state=4)
    catalogue = items.set_index("item_id")
    extra = []
    for _, rows in logged.groupby("query_id", sort=False):
        unseen = np.setdiff1d(catalogue.index.to_numpy(), rows["item_id"].to_numpy())
        for item in rng.choice(unseen, EXTRA_CANDIDATES, replace=False):
            extra.append(rows.iloc[0].drop(list(LOGGED_COLUMNS)).to_dict() | {
                "item_id": item, "category": catalogue.at[item, "category"],
                "content_type": catalogue.at[item, "content_type"]})
    extra_frame = pd.DataFrame(extra).astype(shown.dtypes.to_dict())
    extra_frame.index = np.arange(len(extra_frame)) + logged.index.max() + 1
    return pd.concat([extra_frame, shown])


@pytest.mark.parametrize("name", list(REGISTRY))
def test_the_declaration_holds_when_the_slate_is_unknown(name, logged_and_served):
    at_training, at_serving = logged_and_served
    if REGISTRY[name].known == "request":
        pd.testing.assert_series_equal(at_serving[name], at_training[name], check_exact=True)
    else:
        assert not at_serving[name].equals(at_training[name]), f"{name} is declared logged but serving knows it"
