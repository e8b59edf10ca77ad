"""The ranker's training-set cap: whole queries, deterministic, order-independent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config.ranker import RankerSettings
from models.training import cap_queries, group_sizes


def _frame(queries: int = 200, size: int = 4) -> pd.DataFrame:
    q = np.repeat([f"q{i}" for i in range(queries)], size)
    return pd.DataFrame({"query_id": q, "position": np.tile(np.arange(size), queries),
                         "label": np.tile([1, 0, 0, 0][:size], queries)})


def test_keeps_whole_queries_in_order() -> None:
    frame = _frame()
    capped = cap_queries(frame, 50, seed=1)
    assert capped["query_id"].nunique() == 50
    assert (group_sizes(capped) == 4).all()
    assert (capped["position"].to_numpy() == np.tile(np.arange(4), 50)).all()


def test_same_queries_whatever_the_row_order_and_seed_matters() -> None:
    frame = _frame()
    shuffled = frame.sample(frac=1.0, random_state=3)
    kept = set(cap_queries(frame, 30, seed=7)["query_id"])
    assert kept == set(cap_queries(shuffled, 30, seed=7)["query_id"])
    assert kept != set(cap_queries(frame, 30, seed=8)["query_id"])


def test_no_cap_or_small_part_is_returned_unchanged() -> None:
    frame = _frame(10)
    assert cap_queries(frame, None) is frame
    assert cap_queries(frame, 10) is frame
    with pytest.raises(ValueError, match="max_queries >= 1"):
        cap_queries(frame, 0)


def test_setting_is_validated_and_on_by_default() -> None:
    assert RankerSettings().max_train_queries == 100_000
    assert RankerSettings(max_train_queries=None).max_train_queries is None
    assert RankerSettings().max_valid_queries == 50_000
    assert RankerSettings(max_valid_queries=None).max_valid_queries is None
    with pytest.raises(ValueError):
        RankerSettings(max_valid_queries=0)
    with pytest.raises(ValueError):
        RankerSettings(max_train_queries=0)
