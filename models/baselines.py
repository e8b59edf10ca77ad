"""The two rankings every model must beat: item popularity and the seed's similarity-only ranking."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

# The feature registry's cosine of the user's profile embedding and the item's embedding
# (features/defs_context.py); the seed ranked by it alone.
SIMILARITY_FEATURE = "emb_cos_user_profile"


def _require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, found {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; found {[str(c) for c in frame.columns]}")


def popularity_scores(
    train: pd.DataFrame,
    test_frame: pd.DataFrame,
    *,
    label_column: str = "label",
    positive_event_types: Collection[str] | None = None,
) -> np.ndarray:
    """Score each test row by its item's number of positive engagements in the training period.

    Args:
        train: the training period, either labelled impressions (``item_id`` and ``label_column``;
            a row is positive when its label is > 0) or raw canonical events (``item_id`` and
            ``event_type``; pass ``positive_event_types`` to say which events are engagements).
        test_frame: rows to score; needs ``item_id``.
        label_column: name of the graded label in ``train``.
        positive_event_types: when given, count events of these types instead of labels > 0.

    Returns:
        (len(test_frame),) float64 counts; items unseen (or never engaged with) in training score 0.
    """
    _require_columns(test_frame, ["item_id"], "test_frame")
    if positive_event_types is not None:
        _require_columns(train, ["item_id", "event_type"], "train")
        positive = train["event_type"].isin(list(positive_event_types)).to_numpy(dtype=bool)
    else:
        _require_columns(train, ["item_id", label_column], "train")
        positive = (train[label_column].to_numpy(dtype=np.float64, na_value=0.0) > 0)
    counts = train.loc[positive, "item_id"].value_counts()
    return test_frame["item_id"].map(counts).fillna(0).to_numpy(dtype=np.float64)


def similarity_scores(
    test_frame: pd.DataFrame, similarity_column: str = SIMILARITY_FEATURE
) -> np.ndarray:
    """The seed's similarity-only ranking: cosine of the user's profile and the item's embedding.

    Args:
        test_frame: rows to score, holding the similarity feature.
        similarity_column: the feature with the cosine similarity.

    Returns:
        (len(test_frame),) float64 scores; a missing similarity (NaN) ranks last (-inf).
    """
    _require_columns(test_frame, [similarity_column], "test_frame")
    column = test_frame[similarity_column]
    if not pd.api.types.is_numeric_dtype(column.dtype):
        raise TypeError(f"{similarity_column!r} must be numeric, found dtype {column.dtype}")
    scores = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(scores), -np.inf, scores)
