"""Popularity and similarity baselines on three-row frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.baselines import popularity_scores, similarity_scores

TRAIN = pd.DataFrame({"item_id": ["a", "a", "a", "b", "b", "c"], "label": [2, 1, 0, 0, 3, 0]})
TEST = pd.DataFrame({"item_id": ["c", "a", "z", "b"], "emb_cos_user_profile": [0.3, np.nan, -0.2, 0.9]})


def test_popularity_counts_positive_labels_per_item_and_unseen_items_score_zero():
    assert popularity_scores(TRAIN, TEST).tolist() == [0.0, 2.0, 0.0, 1.0]


def test_popularity_from_raw_events_counts_the_engagement_types_given():
    events = pd.DataFrame({"item_id": ["a", "a", "b", "b", "b"],
                           "event_type": ["impression", "click", "click", "purchase", "skip"]})
    scores = popularity_scores(events, TEST, positive_event_types={"click", "purchase"})
    assert scores.tolist() == [0.0, 1.0, 0.0, 2.0]


def test_popularity_names_missing_columns():
    with pytest.raises(ValueError, match=r"train lacks column\(s\) \['label'\]; found \['item_id'\]"):
        popularity_scores(TRAIN[["item_id"]], TEST)
    with pytest.raises(ValueError, match=r"test_frame lacks column\(s\) \['item_id'\]"):
        popularity_scores(TRAIN, TEST.drop(columns="item_id"))


def test_similarity_ranks_missing_similarity_last():
    scores = similarity_scores(TEST)
    assert scores.tolist() == [0.3, -np.inf, -0.2, 0.9]


def test_similarity_column_is_a_parameter():
    frame = TEST.rename(columns={"emb_cos_user_profile": "cos"})
    assert similarity_scores(frame, "cos")[3] == 0.9
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['emb_cos_user_profile'\]"):
        similarity_scores(frame)


def test_similarity_refuses_a_non_numeric_column():
    with pytest.raises(TypeError, match="must be numeric"):
        similarity_scores(TEST.astype({"emb_cos_user_profile": str}))


def test_the_run_counts_popularity_from_the_positive_rows_alone():
    """``rankloop.stages`` keeps only the rows with label > 0 of the train and valid parts for this baseline
    (not every row's item id): the same scores, missing labels included."""
    from rankloop.stages import _positive_rows

    rng = np.random.default_rng(4)
    train = pd.DataFrame({"item_id": rng.choice([f"i{k}" for k in range(30)], 5000),
                          "label": rng.choice([0.0, 0.0, 0.0, 0.5, 1.0, np.nan], 5000)})
    test = pd.DataFrame({"item_id": [f"i{k}" for k in range(35)]})
    kept = _positive_rows(train)
    assert 0 < len(kept) < len(train) and (kept["label"] > 0).all()
    np.testing.assert_array_equal(popularity_scores(kept, test), popularity_scores(train, test))
