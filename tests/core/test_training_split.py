from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from models.training import group_sizes, time_split, with_positive_label

END = datetime(2026, 11, 16, tzinfo=UTC)


def _frame() -> pd.DataFrame:
    rows = []
    for q, days_before in enumerate([20, 16, 10, 9, 3, 1]):
        for pos in range(3):
            rows.append({"query_id": f"q{q}", "ts": END - timedelta(days=days_before), "position": pos,
                         "label": int(pos == 0 and q != 4)})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)


def test_time_split_by_query_and_contiguous_groups() -> None:
    split = time_split(_frame(), end=END, valid_days=7, test_days=7)
    assert set(split.train.query_id) == {"q0", "q1"}
    assert set(split.valid.query_id) == {"q2", "q3"}
    assert set(split.test.query_id) == {"q4", "q5"}
    assert list(group_sizes(split.test)) == [3, 3]
    assert list(split.test.position[:3]) == [0, 1, 2]
    assert split.sizes()["test_queries"] == 2


def test_with_positive_label_drops_queries_without_relevance() -> None:
    split = time_split(_frame(), end=END, valid_days=7, test_days=7)
    assert set(with_positive_label(split.test).query_id) == {"q5"}


def test_empty_part_is_a_clear_error() -> None:
    frame = _frame()
    with pytest.raises(ValueError, match=r"\['train', 'valid', 'test'\] empty"):
        time_split(frame, end=END - timedelta(days=60), valid_days=7, test_days=7)
    with pytest.raises(ValueError, match="label"):
        time_split(frame.drop(columns="label"), end=END, valid_days=7, test_days=7)
    assert group_sizes(frame.iloc[:0]).size == 0 and np.sum(group_sizes(frame.sort_values("query_id"))) == len(frame)
