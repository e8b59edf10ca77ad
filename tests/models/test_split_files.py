"""The split as Parquet files (what the weekly stages hand each other) holds exactly ``time_split``'s frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from models.training import SplitFiles, SplitParts, cap_mask, cap_queries, split_rows, time_split, write_split

END = datetime(2026, 11, 16, tzinfo=UTC)


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    rows = []
    for q in range(40):
        start = END - timedelta(days=float(rng.uniform(0.1, 27)))
        for pos in rng.permutation(5):
            rows.append({"query_id": f"q{q}", "user_id": f"u{q % 7}", "item_id": f"i{rng.integers(30)}",
                         "ts": start + timedelta(minutes=int(pos)), "position": int(pos), "label": int(rng.integers(3))})
    keys = pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)
    keys.loc[keys.index[::9], "position"] = np.nan
    features = pd.DataFrame({"f_count": rng.integers(0, 100, len(keys)).astype(np.int32),
                             "f_rate": rng.random(len(keys)).astype(np.float32),
                             "f_code": rng.integers(-1, 4, len(keys)).astype(np.int16)})
    features.loc[features.index[::7], "f_rate"] = np.nan
    return keys, features


@pytest.mark.parametrize("saved", [False, True])
def test_split_files_hold_time_split_frames(tmp_path, saved):
    keys, features = _frames()
    expected = time_split(pd.concat([keys, features], axis=1), end=END, valid_days=7, test_days=7)
    rows, valid_start, test_start = split_rows(keys, end=END, valid_days=7, test_days=7)
    sources = {c: features[c].to_numpy() for c in features}
    if saved:  # columns spilled with np.save, loaded one at a time
        for name, values in sources.items():
            np.save(tmp_path / f"{name}.npy", values)
        sources = {name: tmp_path / f"{name}.npy" for name in sources}
    files = write_split(rows, keys, sources, tmp_path / "split", valid_start=valid_start, test_start=test_start)
    for part in ("train", "valid", "test"):
        got = files.read(part)
        pdt.assert_frame_equal(got, getattr(expected, part), check_dtype=False)
        assert {c: str(got[c].dtype) for c in features} == {"f_count": "int32", "f_rate": "float32", "f_code": "int16"}
    assert files.sizes() == expected.sizes()
    assert isinstance(files, SplitParts)  # what rankloop.stages.Dataset.split is typed as
    assert (files.valid_start, files.test_start) == (expected.valid_start, expected.test_start)
    assert list(files.read("test", ["query_id", "f_rate"]).columns) == ["query_id", "f_rate"]
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["test.parquet", "train.parquet", "valid.parquet"]
    with pytest.raises(ValueError, match="no split part 'holdout'"):
        files.read("holdout")
    with pytest.raises(ValueError, match="has 1 rows"):
        write_split(rows, keys, {"short": np.zeros(1)}, tmp_path / "bad", valid_start=valid_start, test_start=test_start)


def test_reading_a_capped_part_equals_capping_it(tmp_path):
    keys, features = _frames()
    rows, valid_start, test_start = split_rows(keys, end=END, valid_days=7, test_days=7)
    files = write_split(rows, keys, {c: features[c].to_numpy() for c in features}, tmp_path,
                        valid_start=valid_start, test_start=test_start)
    train = files.read("train")
    keep = cap_mask(train["query_id"], 5, seed=4)
    assert keep is not None and keep.sum() == 25 and cap_mask(train["query_id"], 10_000) is None
    pdt.assert_frame_equal(files.read("train", ["query_id", "f_rate"], rows=keep),
                           cap_queries(train, 5, seed=4)[["query_id", "f_rate"]])
    with pytest.raises(ValueError, match="row mask has 3 values"):
        files.read("train", rows=np.ones(3, dtype=bool))


def test_split_rows_rejects_an_empty_part():
    keys, _ = _frames()
    with pytest.raises(ValueError, match="empty"):
        split_rows(keys, end=END + timedelta(days=60), valid_days=7, test_days=7)


@pytest.mark.parametrize("group", [1, 7, 64, 10_000])
def test_a_part_written_group_by_group_reads_back_the_same(tmp_path, group):
    """The split goes out one row group at a time (the feature matrix is never in memory): any
    group size gives the same frames, with an object column that is null in the first groups
    only (its type comes from the whole part, not from the first group)."""
    import pyarrow.parquet as pq

    keys, features = _frames()
    keys["policy_version"] = pd.Series([None] * len(keys), dtype=object)
    keys.loc[keys.index[-3:], "policy_version"] = "v2"
    rows, valid_start, test_start = split_rows(keys, end=END, valid_days=7, test_days=7)
    for name in features:
        np.save(tmp_path / f"{name}.npy", features[name].to_numpy())
    sources = {name: tmp_path / f"{name}.npy" for name in features}
    whole = write_split(rows, keys, sources, tmp_path / "whole", valid_start=valid_start, test_start=test_start)
    grouped = write_split(rows, keys, sources, tmp_path / "grouped", valid_start=valid_start, test_start=test_start,
                          row_group_rows=group)
    expected = time_split(pd.concat([keys, features], axis=1), end=END, valid_days=7, test_days=7)
    for part in ("train", "valid", "test"):
        pdt.assert_frame_equal(grouped.read(part), whole.read(part))
        pdt.assert_frame_equal(grouped.read(part).drop(columns="policy_version"),
                               getattr(expected, part).drop(columns="policy_version"), check_dtype=False)
        n = len(rows[part])
        assert pq.ParquetFile(grouped.paths[part]).metadata.num_row_groups == -(-n // group)
        assert pq.ParquetFile(whole.paths[part]).metadata.num_row_groups == 1
    assert grouped.read("train")["policy_version"].notna().sum() + grouped.read("valid")["policy_version"].notna().sum() \
        + grouped.read("test")["policy_version"].notna().sum() == 3
    with pytest.raises(ValueError, match="row_group_rows"):
        write_split(rows, keys, sources, tmp_path / "bad", valid_start=valid_start, test_start=test_start, row_group_rows=0)


def test_spilled_keys_give_the_same_split(tmp_path):
    """build_dataset parks the split's key columns on disk while features are built: the split
    written from what comes back is the one written from the frame itself (text, tz-aware times,
    int and float with missing values, an all-null object column of a log without slates)."""
    import pyarrow.parquet as pq

    from models.training import spill, unspill

    keys, features = _frames()
    keys["label"] = keys["label"].astype(np.int32)
    keys["propensity"] = np.where(np.arange(len(keys)) % 5 == 0, np.nan, 0.2)
    keys["policy_version"] = pd.Series(None, index=keys.index, dtype=object)
    keys["query_id"] = keys["query_id"].astype("str")
    back = unspill(spill(keys, tmp_path / "keys.parquet"))
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left beside it
    pdt.assert_frame_equal(back.drop(columns="policy_version"), keys.drop(columns="policy_version"))
    assert back["policy_version"].isna().all()
    rows, valid_start, test_start = split_rows(keys, end=END, valid_days=7, test_days=7)
    sources = {c: features[c].to_numpy() for c in features}
    direct = write_split(rows, keys, sources, tmp_path / "direct", valid_start=valid_start, test_start=test_start)
    parked = write_split(rows, back, sources, tmp_path / "parked", valid_start=valid_start, test_start=test_start)
    for part in ("train", "valid", "test"):
        assert pq.read_schema(parked.paths[part]) == pq.read_schema(direct.paths[part])
        pdt.assert_frame_equal(parked.read(part), direct.read(part))


def test_only_the_key_columns_are_dictionary_encoded(tmp_path):
    """Feature values rarely repeat: Parquet's dictionary attempt on them cost ~3x the write at 10M rows.
    The ids keep their dictionaries (they repeat), the features are written plain; the values read back
    are the same either way (test_split_files_hold_time_split_frames)."""
    import pyarrow.parquet as pq

    keys, features = _frames()
    rows, valid_start, test_start = split_rows(keys, end=END, valid_days=7, test_days=7)
    files = write_split(rows, keys, {c: features[c].to_numpy() for c in features}, tmp_path,
                        valid_start=valid_start, test_start=test_start)
    meta = pq.ParquetFile(files.paths["train"]).metadata
    encodings = {meta.schema.column(k).name: meta.row_group(0).column(k).encodings for k in range(meta.num_columns)}
    for name in keys.columns:
        assert any("DICTIONARY" in e for e in encodings[name]), (name, encodings[name])
    for name in features.columns:
        assert not any("DICTIONARY" in e for e in encodings[name]), (name, encodings[name])


def _fit_split(tmp_path) -> tuple[SplitFiles, list[str]]:
    """The split files of :func:`_frames` with one validation query without a relevant item, and their features."""
    keys, features = _frames()
    rows, valid_start, test_start = split_rows(keys, end=END, valid_days=7, test_days=7)
    keys.loc[keys["query_id"] == keys["query_id"].iloc[rows["valid"][0]], "label"] = 0  # a query without a relevant item
    files = write_split(rows, keys, {c: features[c].to_numpy() for c in features}, tmp_path,
                        valid_start=valid_start, test_start=test_start)
    return files, ["f_rate", "f_count", "f_code"]


@pytest.mark.parametrize("cap", [5, None, 10_000])
def test_training_matrices_hold_the_capped_train_rows_and_the_relevant_valid_rows(tmp_path, cap):
    """What the ranker fits (stages.train_ranker and the bench's floor both build it here): the train rows
    cap_mask keeps, the validation queries with a relevant item, features and key columns row for row."""
    from models.training import group_sizes, positive_query_rows, training_matrices

    files, cols = _fit_split(tmp_path)
    m = training_matrices(files, cols, max_train_queries=cap, max_valid_queries=None, seed=4)
    train = files.read("train")
    keep = cap_mask(train["query_id"], cap, seed=4) if cap is not None else None
    kept = train if keep is None else train[keep].reset_index(drop=True)
    assert len(m.train) == len(m.X) == (25 if cap == 5 else len(train))
    assert m.train_rows_available == len(train)
    # the query ids are read as codes of the file's dictionary (34M texts at 30M events without slates), the same ids
    assert isinstance(m.train["query_id"].dtype, pd.CategoricalDtype)
    pdt.assert_frame_equal(m.train.astype({"query_id": train["query_id"].dtype}), kept[["query_id", "label", "position"]])
    if cap is not None:  # the cap keeps the same queries whichever way the ids are held
        np.testing.assert_array_equal(cap_mask(train["query_id"].astype("category"), cap, seed=4), keep)
    assert m.X.columns == cols  # read in batches as LightGBM bins them
    np.testing.assert_array_equal(m.X[0:len(m.X)], kept[cols].to_numpy(dtype=np.float64))
    assert m.dtypes == {"f_rate": "float32", "f_count": "int32", "f_code": "int16"}
    valid = files.read("valid")
    relevant_rows = valid[positive_query_rows(valid)].reset_index(drop=True)
    assert 0 < len(m.valid) < len(valid)
    pdt.assert_frame_equal(m.valid.astype({"query_id": valid["query_id"].dtype}), relevant_rows[["query_id", "label"]])
    np.testing.assert_array_equal(group_sizes(m.valid), group_sizes(relevant_rows))
    assert len(m.X_valid) == len(m.valid) and m.X_valid.columns == cols  # read in batches as LightGBM bins them
    np.testing.assert_array_equal(m.X_valid[0:len(m.X_valid)], relevant_rows[cols].to_numpy(dtype=np.float64))


@pytest.mark.parametrize("cap", [1, 3, 1_000])
def test_training_matrices_early_stop_on_at_most_max_valid_queries_relevant_queries(tmp_path, cap):
    """ranker.max_valid_queries: the validation queries with a relevant item, at most ``cap`` of them, whole, by
    the train cap's seeded hash (cap_mask over the relevant rows); their features row for row with their keys."""
    from models.training import group_sizes, positive_query_rows, training_matrices

    files, cols = _fit_split(tmp_path)
    m = training_matrices(files, cols, max_train_queries=None, max_valid_queries=cap, seed=4)
    valid = files.read("valid")
    relevant_rows = valid[positive_query_rows(valid)].reset_index(drop=True)
    assert relevant_rows["query_id"].nunique() > 3  # the caps below 1,000 bind
    keep = cap_mask(relevant_rows["query_id"], cap, seed=4)
    expected = relevant_rows if keep is None else relevant_rows[keep].reset_index(drop=True)
    assert expected["query_id"].nunique() == min(cap, relevant_rows["query_id"].nunique())
    assert m.valid_rows_available == len(relevant_rows)
    pdt.assert_frame_equal(m.valid.astype({"query_id": valid["query_id"].dtype}), expected[["query_id", "label"]])
    np.testing.assert_array_equal(group_sizes(m.valid), group_sizes(expected))
    assert len(m.X_valid) == len(m.valid)
    np.testing.assert_array_equal(m.X_valid[0:len(m.X_valid)], expected[cols].to_numpy(dtype=np.float64))
    # a seeded choice: the same queries every time, others with another seed (the train cap's seed)
    again = training_matrices(files, cols, max_train_queries=None, max_valid_queries=cap, seed=4)
    pdt.assert_frame_equal(again.valid, m.valid)
    if cap == 3:
        other = training_matrices(files, cols, max_train_queries=None, max_valid_queries=cap, seed=5)
        assert set(other.valid["query_id"]) != set(m.valid["query_id"])


def test_categorical_ids_write_the_files_text_ids_write(tmp_path):
    """The weekly stage's implicit queries carry their ids as categoricals (a code per row); the split's files
    hold the ids themselves: the same schema and values as from text ids, and the same rows in each part (a sort
    by code is a sort by text: the categories are sorted)."""
    import pyarrow.parquet as pq

    keys, features = _frames()
    coded = keys.assign(**{c: keys[c].astype(pd.CategoricalDtype(sorted(keys[c].unique())))
                           for c in ("query_id", "user_id", "item_id")})
    sources = {c: features[c].to_numpy() for c in features}
    written = {}
    for name, frame in (("text", keys), ("coded", coded)):
        rows, valid_start, test_start = split_rows(frame, end=END, valid_days=7, test_days=7)
        written[name] = write_split(rows, frame, sources, tmp_path / name, valid_start=valid_start,
                                    test_start=test_start)
    for part in ("train", "valid", "test"):
        text, got = (pq.read_table(written[n].paths[part]) for n in ("text", "coded"))
        assert got.schema == text.schema and got.num_rows > 0
        pdt.assert_frame_equal(got.to_pandas(), text.to_pandas())
    assert written["coded"].sizes() == written["text"].sizes()


def test_split_rows_are_the_groupby_split(tmp_path):
    """Each row goes to the part of its query's first time (a groupby's ``transform("min")``, as before it was
    made through the query codes), in (query, position) order; a row without a query id, or of a query without a
    time, is in no part; text or categorical ids, times in ns or us."""
    keys, _ = _frames()
    keys = pd.concat([keys, keys.head(3).assign(query_id=None), keys.head(2).assign(query_id="q-no-time", ts=pd.NaT)],
                     ignore_index=True)
    keys["ts"] = pd.to_datetime(keys["ts"], utc=True)
    keys.loc[keys.index[5], "ts"] = pd.NaT  # one row of a query without its time: the query's other rows decide
    for frame in (keys, keys.astype({"query_id": "category"}), keys.assign(ts=keys["ts"].dt.as_unit("ns")),
                  keys.assign(position=np.nan)):
        rows, valid_start, test_start = split_rows(frame, end=END, valid_days=7, test_days=7)
        first = frame.groupby("query_id", sort=False, observed=True)["ts"].transform("min")
        order = np.lexsort((frame["position"].to_numpy(dtype=np.float64),
                            pd.factorize(frame["query_id"], sort=True)[0] % (len(frame) + 1)))
        expected = {"train": first < valid_start, "valid": (first >= valid_start) & (first < test_start),
                    "test": (first >= test_start) & (first < END)}
        for part, mask in expected.items():
            np.testing.assert_array_equal(rows[part], order[mask.to_numpy()[order]])
        assert sum(len(r) for r in rows.values()) == len(frame) - 5


def test_an_unsplittable_window_names_the_empty_parts_and_the_days_held():
    from core.errors import Reason, TrainingError
    from rankloop.stages import check_split_coverage

    ts = pd.Series(pd.to_datetime(["2026-10-20T05:00", "2026-10-20T23:59", "2026-11-03T10:00", None], utc=True))
    with pytest.raises(TrainingError) as info:
        check_split_coverage(ts, end=END, valid_days=7, test_days=7)
    assert "test part(s) empty" in str(info.value) and "2 day(s) with impressions, 2026-10-20 .. 2026-11-03" in str(info.value)
    assert info.value.reason is Reason.EMPTY and info.value.details["days"] == ["2026-10-20", "2026-11-03"]
    check_split_coverage(pd.concat([ts, pd.Series(pd.to_datetime(["2026-11-12T01:00"], utc=True))]).dt.as_unit("ns"),
                         end=END, valid_days=7, test_days=7)  # every part holds a day: no error


def test_the_popularity_history_reads_the_item_ids_of_engaged_rows_only(tmp_path):
    """The test-week scoring counts each item's engaged (label > 0) train and valid rows: read by their labels
    first, then the ids of those rows, it is the same history as every row read and filtered."""
    from rankloop.stages import _positive_history, _positive_rows

    keys, features = _frames()
    keys["label"] = keys["label"].astype("float64")
    keys.loc[keys.index[::11], "label"] = np.nan  # a missing label counts as 0
    rows, valid_start, test_start = split_rows(keys, end=END, valid_days=7, test_days=7)
    files = write_split(rows, keys, {c: features[c].to_numpy() for c in features}, tmp_path,
                        valid_start=valid_start, test_start=test_start)
    for part in ("train", "valid"):
        every = files.read(part, ["item_id", "label"])
        got = _positive_history(files, part)
        assert 0 < len(got) < len(every)
        pdt.assert_frame_equal(_positive_rows(got), _positive_rows(every))
        pdt.assert_frame_equal(got, _positive_rows(every))
