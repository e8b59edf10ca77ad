"""LightGBM reads the feature matrix as float32 when that is exact: same model, same scores, half the memory."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.ranker import Ranker, _matrix


def test_matrix_is_float32_only_when_exact():
    exact = pd.DataFrame({"a": np.float32([0.1, np.nan]), "b": np.int32([2**24, -(2**24)]),
                          "c": np.int16([1, -1]), "d": [True, False]})
    assert _matrix(exact).dtype == np.float32
    assert np.isnan(_matrix(exact)[1, 0]) and _matrix(exact)[0, 1] == 2**24
    assert _matrix(exact.assign(b=np.int32([2**24 + 1, 0]))).dtype == np.float64  # not a float32
    assert _matrix(exact.assign(e=np.float64([0.1, 0.2]))).dtype == np.float64
    assert _matrix(exact.assign(b=np.int64([2**40, 0]))).dtype == np.float64


def test_float32_matrix_trains_the_same_model_as_float64(make_ranker, train_split, valid_split, test_split):
    def fit(X: pd.DataFrame, Xv: pd.DataFrame) -> Ranker:
        return make_ranker().fit(X, train_split.y, group=train_split.group,
                     eval_set=[(Xv, valid_split.y)], eval_group=[valid_split.group])

    as32 = {c: np.float32 for c in train_split.X.columns if train_split.X[c].dtype == np.float64}
    narrow = fit(train_split.X.astype(as32), valid_split.X.astype(as32))
    # The same values widened to float64 (what the matrix used to be): identical trees and scores.
    wide = fit(train_split.X.astype(as32).astype(np.float64), valid_split.X.astype(as32).astype(np.float64))
    assert _matrix(train_split.X.astype(as32)).dtype == np.float32
    assert narrow.model_to_string().split("feature_importances")[0] == wide.model_to_string().split("feature_importances")[0]
    Xt = test_split.X.astype(as32)
    np.testing.assert_array_equal(narrow.predict(Xt), wide.predict(Xt.astype(np.float64)))
