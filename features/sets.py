"""Named, hashed feature sets: the reviewed lists of columns a model trains and serves on.

A model is served with what is known when the request arrives, so a set holds only features
declared ``known="request"``; a ``logged`` feature (the slot the logged slate gave the item) is
refused: it would be scored at serving with a value the model never saw there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from features import defs_activity, defs_affinity, defs_collaborative, defs_context  # noqa: F401  (registers the features)
from features.registry import REGISTRY

FEATURES_VERSION = 1  # bump when a feature's meaning changes without its name changing


@dataclass(frozen=True)
class FeatureSet:
    """A named, ordered tuple of registered request-time feature names."""

    name: str
    features: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.features, tuple):
            raise TypeError(f"FeatureSet.features must be a tuple of names, got {type(self.features).__name__}")
        unknown = [f for f in self.features if f not in REGISTRY]
        duplicated = sorted({f for f in self.features if self.features.count(f) > 1})
        if unknown or duplicated or not self.features:
            raise ValueError(
                f"feature set {self.name!r} is invalid: unknown features {unknown}, duplicated {duplicated}, "
                f"{len(self.features)} features (expected at least one, all registered)"
            )
        logged = [f for f in self.features if REGISTRY[f].known != "request"]
        if logged:
            raise ValueError(
                f"feature set {self.name!r} holds features known only after the slate was shown: {logged}; "
                "serving cannot compute them before ranking (use the ranker's position_bias setting for the "
                "logged position)"
            )

    @property
    def hash(self) -> str:
        """sha256 over the version, the names and each feature's dtype and version."""
        blob = [FEATURES_VERSION, [(n, REGISTRY[n].dtype, REGISTRY[n].version) for n in self.features]]
        return hashlib.sha256(json.dumps(blob).encode()).hexdigest()


_CORE: tuple[str, ...] = (
    "user_event_count_7d", "user_click_count_7d", "user_engage_count_28d", "user_click_rate_28d",
    "user_secs_since_last_event", "user_secs_since_last_click", "user_view_seconds_mean_28d",
    "item_impression_count_7d", "item_click_count_7d", "item_click_rate_7d", "item_click_rate_28d",
    "item_impression_trend_7d_28d", "item_pbc_click_ratio_28d", "item_secs_since_first_impression",
    "ui_impression_count_28d", "ui_engage_count_all", "uc_engage_count_28d", "uc_click_rate_28d",
    "ctx_hour", "ctx_weekday", "ctx_device", "emb_cos_engaged_mean",
)

_DEFAULT: tuple[str, ...] = tuple(n for n, spec in REGISTRY.items()
                                  if spec.group != defs_collaborative.GROUP and spec.known == "request")

FEATURE_SETS: dict[str, FeatureSet] = {
    "ranker_default": FeatureSet("ranker_default", _DEFAULT),
    "ranker_core": FeatureSet("ranker_core", _CORE),
    # Implicit-feedback queries (logs without slates): the defaults plus the collaborative signal.
    "ranker_implicit": FeatureSet("ranker_implicit", _DEFAULT + tuple(n for n, spec in REGISTRY.items()
                                                                      if spec.group == defs_collaborative.GROUP)),
}


def get_feature_set(name: str) -> FeatureSet:
    """The registered feature set called ``name``.

    Raises:
        KeyError: no such set (the message lists the available names).
    """
    try:
        return FEATURE_SETS[name]
    except KeyError as e:
        raise KeyError(f"unknown feature set {name!r}; available: {sorted(FEATURE_SETS)}") from e
