"""Every invalid input to the Ranker fails fast with a message naming the offence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.ranker import Ranker


def _fit(ranker, X, y, group, **kwargs):
    return ranker.fit(X, y, group=group, **kwargs)


def test_group_sum_mismatch_names_both_numbers(make_ranker, train_split):
    group = train_split.group.copy()
    group[-1] -= 3
    with pytest.raises(ValueError, match=r"add up to 1997 but X has 2000 rows"):
        _fit(make_ranker(), train_split.X, train_split.y, group)


def test_non_positive_or_fractional_group_sizes_are_named(make_ranker, train_split):
    group = np.concatenate([[0, 2.5], train_split.group[:-1], [7.5]])
    with pytest.raises(ValueError, match=r"positive integers; 3 bad, e\.g\. query 0: .*query 1: 2\.5"):
        _fit(make_ranker(), train_split.X, train_split.y, group)


def test_negative_and_fractional_labels_are_counted_with_examples(make_ranker, train_split):
    y = train_split.y.astype(float)
    y[[3, 8, 11]] = [-1.0, 0.5, np.nan]
    with pytest.raises(ValueError, match=r"3 bad label\(s\), e\.g\. row 3: -1\.0, row 8: 0\.5, row 11: nan"):
        _fit(make_ranker(), train_split.X, y, train_split.group)


def test_labels_beyond_label_gain_are_refused(make_ranker, train_split):
    y = train_split.y.copy()
    y[0] = 31
    with pytest.raises(ValueError, match=r"integers in 0\.\.30; 1 bad"):
        _fit(make_ranker(), train_split.X, y, train_split.group)


def test_label_count_must_match_rows(make_ranker, train_split):
    with pytest.raises(ValueError, match="has 1999 labels for 2000 rows"):
        _fit(make_ranker(), train_split.X, train_split.y[:-1], train_split.group)


def test_string_labels_are_a_type_error(make_ranker, train_split):
    with pytest.raises(TypeError, match="labels must be numeric, found dtype <U"):
        _fit(make_ranker(), train_split.X, train_split.y.astype(str), train_split.group)


def test_every_non_numeric_column_is_listed_with_its_dtype(make_ranker, train_split):
    X = train_split.X.assign(
        device=pd.Series(["mobile"] * len(train_split.X), dtype=object),
        category=pd.Categorical(["a"] * len(train_split.X)),
        ts=pd.Timestamp("2026-01-01"),
    )
    with pytest.raises(TypeError) as caught:
        _fit(make_ranker(), X, train_split.y, train_split.group)
    message = str(caught.value)
    assert "'device' (object)" in message and "'category' (category)" in message and "'ts' (datetime64" in message


def test_all_problems_are_reported_at_once(make_ranker, train_split):
    y = train_split.y.copy()
    y[0] = -2
    with pytest.raises(ValueError) as caught:
        _fit(make_ranker(), train_split.X, y, train_split.group[:-1])
    message = str(caught.value)
    assert "2 problem(s)" in message and "row 0: -2" in message and "add up to 1990" in message


def test_x_must_be_a_dataframe(make_ranker, train_split):
    with pytest.raises(TypeError, match="must be a pandas DataFrame, found ndarray"):
        _fit(make_ranker(), train_split.X.to_numpy(), train_split.y, train_split.group)


def test_column_names_lightgbm_cannot_store_are_refused(make_ranker, train_split):
    X = train_split.X.rename(columns={"noise_a": "noise:a", "noise_b": "noise b"})
    with pytest.raises(ValueError, match=r"\['noise:a', 'noise b'\]"):
        _fit(make_ranker(), X, train_split.y, train_split.group)


def test_a_feature_given_twice_is_named_not_a_crash(make_ranker, train_split):
    """A frame with a column name twice (``X[name]`` is then a frame, which once broke the dtype check
    with an AttributeError) is refused with the name."""
    import pandas as pd

    X = pd.concat([train_split.X, train_split.X[["noise_a"]]], axis=1)
    with pytest.raises(ValueError, match=r"training X has duplicate column names: \['noise_a'\]"):
        _fit(make_ranker(), X, train_split.y, train_split.group)


def test_eval_set_and_eval_group_lengths_must_match(make_ranker, train_split, valid_split):
    with pytest.raises(ValueError, match="eval_set has 1 entries but eval_group has 0"):
        _fit(make_ranker(), train_split.X, train_split.y, train_split.group,
             eval_set=[(valid_split.X, valid_split.y)], eval_group=[])


def test_eval_set_problems_name_the_eval_set(make_ranker, train_split, valid_split):
    X = valid_split.X.drop(columns=["noise_a"]).assign(extra=1.0)
    with pytest.raises(ValueError) as caught:
        _fit(make_ranker(), train_split.X, train_split.y, train_split.group,
             eval_set=[(X, valid_split.y)], eval_group=[valid_split.group[:-1]])
    message = str(caught.value)
    assert "eval_set[0] X columns differ from the training features: missing ['noise_a'], extra ['extra']" in message
    assert "eval_set[0] group sizes add up to 590 but X has 600 rows" in message


def test_eval_set_entries_must_be_pairs(make_ranker, train_split, valid_split):
    with pytest.raises(TypeError, match=r"eval_set\[0\] must be an \(X, y\) tuple"):
        _fit(make_ranker(), train_split.X, train_split.y, train_split.group,
             eval_set=[valid_split.X], eval_group=[valid_split.group])


def test_predict_names_missing_and_extra_columns(fitted_ranker, test_split):
    X = test_split.X.drop(columns=["noise_b"]).assign(position=0)
    with pytest.raises(ValueError, match=r"missing \['noise_b'\], extra \['position'\]"):
        fitted_ranker.predict(X)


def test_predict_refuses_non_numeric_columns(fitted_ranker, test_split):
    X = test_split.X.assign(noise_b=test_split.X["noise_b"].astype(str))
    with pytest.raises(TypeError, match=r"non-numeric: 'noise_b'"):
        fitted_ranker.predict(X)


def test_extra_params_may_not_override_what_the_ranker_sets(make_ranker, train_split):
    with pytest.raises(ValueError, match=r"extra_params may not set \['eta', 'objective'\]"):
        _fit(make_ranker(extra_params={"objective": "regression", "eta": 0.3}), train_split.X,
             train_split.y, train_split.group)


def test_invalid_parameter_values_fail_in_fit(train_split):
    with pytest.raises(ValueError, match="learning_rate"):
        Ranker(learning_rate=-1.0).fit(train_split.X, train_split.y, group=train_split.group)


def test_eval_at_must_be_positive_ints(make_ranker, train_split):
    with pytest.raises(ValueError, match=r"eval_at must be positive ints, found \[0, 10\]"):
        _fit(make_ranker(), train_split.X, train_split.y, train_split.group, eval_at=(0, 10))


def test_load_refuses_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="is not a LightGBM text model"):
        Ranker.load(path)
    with pytest.raises(FileNotFoundError, match="no LightGBM model file"):
        Ranker.load(tmp_path / "absent.txt")
