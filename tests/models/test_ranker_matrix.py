"""LightGBM reads the feature matrix as float32 when that is exact: same model, same scores, half the memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

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


# --- the split's features read straight into that matrix ----------------------------------------
def _split_files(tmp_path, *, big: bool = False, wide: bool = False, row_group_rows: int | None = None):
    """A split written as the weekly run writes it: int32/int16/bool/float32 features (with NaN),
    optionally an int32 beyond 2**24 (``big``) or a float64 column (``wide``), and row groups of
    ``row_group_rows`` (the default: one per part, at this size)."""
    from datetime import UTC, datetime, timedelta

    from models.training import split_rows, write_split

    end = datetime(2026, 11, 16, tzinfo=UTC)
    rng = np.random.default_rng(5)
    n_queries, slate = 300, 8
    n = n_queries * slate
    start = [end - timedelta(days=float(d)) for d in rng.uniform(0.1, 27, n_queries)]
    keys = pd.DataFrame({"query_id": np.repeat([f"q{q}" for q in range(n_queries)], slate),
                         "user_id": np.repeat([f"u{q % 11}" for q in range(n_queries)], slate),
                         "item_id": [f"i{i}" for i in rng.integers(0, 40, n)],
                         "ts": [start[q] + timedelta(minutes=k) for q in range(n_queries) for k in range(slate)],
                         "position": np.tile(np.arange(slate), n_queries), "label": rng.integers(0, 3, n)})
    keys.loc[np.repeat(np.arange(n_queries) % 5 == 0, slate), "label"] = 0  # queries without a relevant item
    count = rng.integers(0, 50, n).astype(np.int32)
    features = {"f_count": count, "f_rate": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)).astype(np.float32),
                "f_code": rng.integers(-1, 4, n).astype(np.int16), "f_flag": rng.random(n) < 0.3}
    if big:
        features["f_count"] = np.where(count == 0, 2**24 + 1, count).astype(np.int32)
    if wide:
        features["f_exact"] = rng.random(n)
    rows, valid_start, test_start = split_rows(keys, end=end, valid_days=7, test_days=7)
    groups = {"row_group_rows": row_group_rows} if row_group_rows else {}
    return write_split(rows, keys, features, tmp_path / "split", valid_start=valid_start,
                       test_start=test_start, **groups), list(features)


@pytest.mark.parametrize(("big", "wide", "dtype"), [(False, False, np.float32), (True, False, np.float64),
                                                    (False, True, np.float64)])
def test_read_matrix_is_the_matrix_of_the_read_frame(tmp_path, big, wide, dtype):
    files, cols = _split_files(tmp_path, big=big, wide=wide)
    for part in ("train", "valid"):
        n = files.sizes()[f"{part}_rows"]
        for rows in (None, np.random.default_rng(1).random(n) < 0.4):
            frame = files.read(part, cols, rows=rows)
            X, dtypes = files.read_matrix(part, cols, rows=rows)
            expected = _matrix(frame)
            assert expected.dtype == dtype and X.dtypes.unique().tolist() == [dtype]
            np.testing.assert_array_equal(_matrix(X), expected)  # the same values, NaN where they were
            assert list(X.columns) == cols and len(X) == len(frame) > 0
            assert dtypes == {c: str(frame[c].dtype) for c in cols}
            assert np.shares_memory(_matrix(X), X.to_numpy())  # LightGBM gets the matrix itself, no copy


def test_training_on_read_matrix_gives_the_model_of_the_read_frame(tmp_path, make_ranker):
    from models.training import group_sizes

    files, cols = _split_files(tmp_path)
    train, valid = files.read("train"), files.read("valid")

    def fit(X, Xv, **extra):
        return make_ranker().fit(X, train["label"], group=group_sizes(train), eval_set=[(Xv, valid["label"])],
                                 eval_group=[group_sizes(valid)], **extra)

    from_frames = fit(train[cols], valid[cols])
    (X, dtypes), (Xv, _) = files.read_matrix("train", cols), files.read_matrix("valid", cols)
    from_matrix = fit(X, Xv, feature_dtypes=dtypes)
    assert from_matrix.model_to_string() == from_frames.model_to_string()
    assert from_matrix.feature_dtypes_ == from_frames.feature_dtypes_ == {
        "f_count": "int32", "f_rate": "float32", "f_code": "int16", "f_flag": "bool"}
    assert fit(X, Xv).feature_dtypes_["f_count"] == "float32"  # without them: the matrix's


@pytest.mark.parametrize(("big", "wide"), [(False, False), (True, False), (False, True)])
def test_drift_reads_a_column_or_a_week_at_a_time_and_measures_the_same(tmp_path, make_ranker, monkeypatch, big,
                                                                        wide):
    """The drift stage's scores (each week read into the matrix) and feature drift (one column of each week
    at a time) are those of the two weeks' frames."""
    from models.drift import feature_drift, feature_drift_of
    from models.training import group_sizes
    from rankloop import drift
    from rankloop.drift import _scores

    files, cols = _split_files(tmp_path, big=big, wide=wide)
    train = files.read("train")
    ranker = make_ranker().fit(train[cols], train["label"], group=group_sizes(train))
    for part in ("valid", "test"):
        np.testing.assert_array_equal(_scores(ranker, files, part, cols), ranker.predict(files.read(part, cols)))
    ref, cur = files.read("valid", cols), files.read("test", cols)
    by_column = feature_drift_of((c, files.read("valid", [c])[c], files.read("test", [c])[c]) for c in cols)
    pd.testing.assert_frame_equal(by_column, feature_drift(ref, cur, cols))
    assert len(by_column) == len(cols) and by_column["psi"].notna().all()
    monkeypatch.setattr(drift, "_DRIFT_COLUMNS_PER_READ", 3)  # columns read a few at a time: two reads here
    assert len(cols) > 3
    pd.testing.assert_frame_equal(feature_drift_of(drift._column_pairs(files, cols)), by_column)


@pytest.mark.parametrize("big", [False, True])
def test_the_champion_scores_the_test_week_it_would_score_from_the_frame(tmp_path, make_ranker, monkeypatch, big):
    """The champion's test-week scores, read straight into the matrix, are its scores of the relevant queries'
    frame (what serving would compute); a feature this run did not build judges it broken."""
    from types import SimpleNamespace

    from core.settings import Settings
    from models.metrics import per_query_ndcg
    from models.training import group_sizes, with_positive_label
    from rankloop import stages

    files, cols = _split_files(tmp_path, big=big)
    train = files.read("train")
    ranker = make_ranker().fit(train[cols[:3]], train["label"], group=group_sizes(train))
    manifest = {"feature_set": {"features": cols[:3]}, "files": {"model.txt": "abc"}}
    champion = SimpleNamespace(version=4, manifest=manifest, predict=ranker.predict)
    monkeypatch.setattr(stages, "current_champion", lambda kind, settings: champion)
    dataset = stages.Dataset(split=files, feature_set="x", feature_set_hash="h", features=tuple(cols), impressions=0)

    got = stages.champion_per_query_ndcg(Settings(), dataset)
    test = with_positive_label(files.read("test"))
    expected = ranker.predict(test[cols[:3]])
    assert 0 < len(expected) < files.sizes()["test_rows"]  # some queries have no relevant item
    np.testing.assert_array_equal(got.scores, expected)
    np.testing.assert_array_equal(got.query_id, test["query_id"].to_numpy())
    np.testing.assert_array_equal(got.per_query_ndcg, per_query_ndcg(test["label"], expected, group_sizes(test), 10))
    assert got.version == 4 and got.model_sha256 == "abc"

    manifest["feature_set"]["features"] = [*cols[:3], "not_built"]
    broken = stages.champion_per_query_ndcg(Settings(), dataset)
    assert broken.scores is None and broken.per_query_ndcg.tolist() == [0.0] * test["query_id"].nunique()


# --- the validation rows read in batches as LightGBM bins them ----------------------------------
@pytest.mark.parametrize(("big", "wide"), [(False, False), (True, False), (False, True)])
def test_matrix_rows_and_batches_are_the_read_matrix(tmp_path, big, wide):
    """``MatrixRows`` (LightGBM's Sequence) and ``iter_matrix`` give ``read_matrix``'s rows, values and dtype,
    however the reads and the slices fall: across row groups, a slice over several, a step back, a row group
    with no row kept."""
    files, cols = _split_files(tmp_path, big=big, wide=wide)
    grouped, _ = _split_files(tmp_path / "grouped", big=big, wide=wide, row_group_rows=37)
    n = files.sizes()["valid_rows"]
    assert pq.ParquetFile(grouped.paths["valid"]).metadata.num_row_groups > 5
    rng = np.random.default_rng(2)
    for rows in (None, rng.random(n) < 0.4, np.repeat(rng.random(-(-n // 37)) < 0.5, 37)[:n]):  # whole groups out
        X, _ = files.read_matrix("valid", cols, rows=rows)
        np.testing.assert_array_equal(grouped.read_matrix("valid", cols, rows=rows)[0].to_numpy(), X.to_numpy())
        for split in (files, grouped):
            _check_batches(split, cols, rows, X.to_numpy())


def _check_batches(files, cols, rows, expected):
    """``iter_matrix`` and ``MatrixRows`` of ``files``' valid part are ``expected`` (``read_matrix``'s)."""
    from models.training import MatrixRows

    batches = list(files.iter_matrix("valid", cols, rows=rows))
    np.testing.assert_array_equal(np.concatenate([b.to_numpy() for b in batches]), expected)
    assert {b.to_numpy().dtype for b in batches} == {expected.dtype}
    seq = MatrixRows(files.paths["valid"], cols, rows)  # grouped: several row groups, none aligned with the slices
    assert len(seq) == len(expected) > 100 and seq.dtype == expected.dtype
    got = np.concatenate([seq[a:a + 50] for a in range(0, len(seq), 50)])
    np.testing.assert_array_equal(got, expected)
    assert got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(seq[10:95], expected[10:95])  # before the last read: read again
    np.testing.assert_array_equal(seq[-1], expected[-1])
    np.testing.assert_array_equal(seq.select(cols[::-1])[0:20], expected[:20, ::-1])
    assert seq[len(seq):len(seq) + 5].shape == (0, len(cols))


def test_validation_rows_read_in_batches_train_the_model_of_the_matrix(tmp_path, make_ranker):
    """The validation Dataset built from ``MatrixRows`` (pushed in batches against the train set's bins) is the
    Dataset of the whole matrix: the same trees, the same validation curve, the same best iteration."""
    from models.training import MatrixRows, group_sizes, relevant

    files, cols = _split_files(tmp_path, row_group_rows=101)
    train = files.read("train")
    valid, positive = relevant(files, "valid", ["query_id", "label"])
    X, dtypes = files.read_matrix("train", cols)

    def fit(Xv):
        return make_ranker().fit(X, train["label"], group=group_sizes(train), eval_set=[(Xv, valid["label"])],
                                 eval_group=[group_sizes(valid)], feature_dtypes=dtypes)

    whole = fit(files.read_matrix("valid", cols, rows=positive)[0])
    seq = MatrixRows(files.paths["valid"], cols[::-1], positive)  # another column order: put in the model's
    seq.batch_size = 29
    batched = fit(seq)
    assert batched.model_to_string() == whole.model_to_string()
    assert batched.evals_result_ == whole.evals_result_ and batched.best_iteration_ == whole.best_iteration_
    assert len(whole.evals_result_["valid"]["ndcg@10"]) > 1


@pytest.mark.parametrize("seed", [0, 42, 2**31 - 1])
def test_train_rows_read_in_batches_train_the_model_of_the_matrix(tmp_path, make_ranker, seed):
    """The training Dataset built from ``MatrixRows`` (its bins from a sample of rows, then every row pushed in
    batches) is the Dataset of the whole matrix: the same trees, validation curve and best iteration, the
    same recorded dtypes, under any seed. The sample is smaller than the part, so the rows it draws matter:
    LightGBM draws them with ``data_random_seed``, which a Sequence's Dataset does not derive from ``seed``
    unless ``models.ranker`` passes it."""
    from models.training import MatrixRows, cap_mask, group_sizes, matrix_dtypes, relevant

    files, cols = _split_files(tmp_path, row_group_rows=101)
    keep = cap_mask(files.read("train", ["query_id"])["query_id"], 150, seed=3)
    train = files.read("train", rows=keep)
    valid, positive = relevant(files, "valid", ["query_id", "label"])
    X, dtypes = files.read_matrix("train", cols, rows=keep)
    assert len(X) > 500 and matrix_dtypes(files.paths["train"], cols, keep) == dtypes

    def fit(Xt):
        return make_ranker(seed=seed, extra_params={"bin_construct_sample_cnt": 300}).fit(
            Xt, train["label"], group=group_sizes(train), eval_set=[(MatrixRows(files.paths["valid"], cols, positive),
                                                                     valid["label"])],
            eval_group=[group_sizes(valid)], feature_dtypes=dtypes)

    whole = fit(X)
    seq = MatrixRows(files.paths["train"], cols, keep)
    seq.batch_size = 53
    batched = fit(seq)
    assert batched.model_to_string() == whole.model_to_string()
    assert batched.evals_result_ == whole.evals_result_ and batched.best_iteration_ == whole.best_iteration_
    assert batched.feature_dtypes_ == whole.feature_dtypes_ == dtypes
    assert len(whole.evals_result_["valid"]["ndcg@10"]) > 1
    # Without the seed it derives from ``seed``, a Sequence's Dataset samples other rows: other bins.
    other = make_ranker(seed=seed, extra_params={"bin_construct_sample_cnt": 300, "data_random_seed": 1 + seed % 7})
    other.fit(MatrixRows(files.paths["train"], cols, keep), train["label"], group=group_sizes(train))
    assert other.model_to_string().split("Tree=0")[0] != whole.model_to_string().split("Tree=0")[0]


def test_a_frames_dtypes_are_known_without_reading_the_matrix(tmp_path):
    """``matrix_dtypes`` gives ``read_matrix``'s dtypes: an integer or boolean column is float64 / object only
    when a kept row is null (a null in a dropped row, or in another row group, does not count)."""
    import pyarrow as pa

    from models.training import matrix_dtypes, read_matrix

    n = 60
    table = pa.table({"i": pa.array([None if k == 45 else k for k in range(n)], pa.int32()),
                      "b": pa.array([None if k == 5 else k % 2 == 0 for k in range(n)]),
                      "f": pa.array([None if k == 1 else 0.5 for k in range(n)], pa.float32()),
                      "j": pa.array(range(n), pa.int64())})
    path = tmp_path / "part.parquet"
    pq.write_table(table, path, row_group_size=20)
    everything = np.ones(n, dtype=bool)
    for rows in (None, everything, everything & (np.arange(n) != 45), np.arange(n) >= 20, np.arange(n) < 40,
                 np.zeros(n, dtype=bool)):
        assert matrix_dtypes(path, ["i", "b", "f", "j"], rows) == read_matrix(path, ["i", "b", "f", "j"], rows)[1]
    assert matrix_dtypes(path, ["i", "b"]) == {"i": "float64", "b": "object"}
    assert matrix_dtypes(path, ["i", "b"], np.arange(n) >= 20) == {"i": "float64", "b": "bool"}
    assert matrix_dtypes(path, ["i", "b"], np.arange(n) != 45) == {"i": "int32", "b": "object"}


def test_validation_rows_are_checked_like_a_frame(tmp_path, make_ranker):
    """A ``MatrixRows`` eval set missing a feature, with a text column, with a feature twice or with the wrong
    label count fails ``fit`` with the frame's messages, before LightGBM reads a row."""
    from models.training import MatrixRows, group_sizes

    files, cols = _split_files(tmp_path)
    train = files.read("train")
    valid = files.read("valid", ["label", "query_id"])

    def fit(Xv, labels=valid["label"]):
        return make_ranker().fit(train[cols], train["label"], group=group_sizes(train),
                                 eval_set=[(Xv, labels)], eval_group=[group_sizes(valid)])

    with pytest.raises(ValueError, match=r"eval_set\[0\] X columns differ from the training features: "
                                         r"missing \['f_flag'\]"):
        fit(MatrixRows(files.paths["valid"], cols[:-1]))
    with pytest.raises(TypeError, match=r"eval_set\[0\] X columns must be numeric.*'item_id'"):
        fit(MatrixRows(files.paths["valid"], [*cols, "item_id"]))
    with pytest.raises(ValueError, match=r"eval_set\[0\] labels has \d+ labels for \d+ rows"):
        fit(MatrixRows(files.paths["valid"], cols), valid["label"].iloc[1:])
    with pytest.raises(ValueError, match=r"eval_set\[0\] X has duplicate column names: \['f_flag'\]"):
        fit(MatrixRows(files.paths["valid"], [*cols, "f_flag"]))


def test_the_split_module_does_not_load_lightgbm():
    """``models.training`` (imported by every stage and worker) leaves LightGBM and scikit-learn unloaded
    (~80 MB per process); ``MatrixRows`` is a LightGBM Sequence once ``models.ranker`` is imported."""
    import subprocess
    import sys

    probe = ("import sys, models.training as t; print('lightgbm' in sys.modules, 'sklearn' in sys.modules); "
             "import lightgbm, models.ranker; print(issubclass(t.MatrixRows, lightgbm.Sequence))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]
