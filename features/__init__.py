"""Graded labels and point-in-time-correct ranking features."""

from features.build import QUERY_COLUMNS, build_features, event_columns, iter_features
from features.implicit import (
           QueryProtocol,
           feature_set_for,
           implicit_queries,
           ranking_protocol,
           ranking_queries,
)
from features.labels import impressions
from features.registry import REGISTRY, FeatureSpec
from features.sets import FEATURE_SETS, FeatureSet, get_feature_set

__all__ = ["FEATURE_SETS", "QUERY_COLUMNS", "REGISTRY", "FeatureSet", "FeatureSpec", "QueryProtocol", "build_features", "event_columns",
           "feature_set_for", "get_feature_set", "implicit_queries", "impressions", "iter_features", "ranking_protocol",
           "ranking_queries"]
