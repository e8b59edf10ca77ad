"""The split written from query days (``models.day_split``) is the split of the days' rows concatenated
(``split_rows`` + ``write_split``): the same files, schema and rows in the same order, on keys of other types
(numeric ids, missing positions, an all-missing column), and it declines the days it cannot order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from models.day_split import write_split_from_days
from models.training import split_rows, write_split

END = datetime(2026, 11, 16, tzinfo=UTC)
KEYS = ["query_id", "user_id", "item_id", "ts", "position", "propensity", "label"]
FEATURES = ["f_count", "f_rate", "f_code"]


def _window(ids: str, propensity: str, seed: int = 0) -> pd.DataFrame:
    """Impressions of queries that each start on one day, in ``features.labels.in_label_order``'s order per
    day (query start, query id, position with missing last, item id)."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(300):
        start = END - timedelta(days=float(rng.uniform(0.01, 27.9)))
        for pos in rng.permutation(int(rng.integers(1, 7))):
            rows.append({"query_id": q * 7919 % 1000 if ids == "numeric" else f"q{q * 7919 % 1000}",
                         "user_id": q % 13 if ids == "numeric" else f"u{q % 13}",
                         "item_id": int(rng.integers(50)) if ids == "numeric" else f"i{rng.integers(50)}",
                         "ts": start + timedelta(seconds=int(rng.integers(0, 600))), "position": float(pos),
                         "label": int(rng.integers(3))})
    frame = pd.DataFrame(rows)
    frame.loc[frame.index[::11], "position"] = np.nan
    if propensity == "missing":
        frame["propensity"] = None
    else:
        frame["propensity"] = rng.uniform(0.05, 1.0, len(frame))
        frame.loc[frame.index[::5], "propensity"] = np.nan
    frame["f_count"] = rng.integers(0, 100, len(frame)).astype(np.int32)
    frame["f_rate"] = rng.random(len(frame)).astype(np.float32)
    frame.loc[frame.index[::7], "f_rate"] = np.nan
    frame["f_code"] = rng.integers(-1, 4, len(frame)).astype(np.int16)
    start = frame.groupby("query_id")["ts"].transform("min")
    frame = frame.assign(_start=start, _pos=frame["position"].fillna(np.inf))
    frame = frame.sort_values(["_start", "query_id", "_pos", "item_id"], kind="stable")
    return frame.drop(columns=["_start", "_pos"]).reset_index(drop=True)


def _days(frame: pd.DataFrame, folder: Path, *, empty_day: bool = False) -> list[Path]:
    """``frame``'s rows as one Arrow IPC file (lz4) per day of their query's start, days in order."""
    folder.mkdir(parents=True, exist_ok=True)
    day = frame.groupby("query_id")["ts"].transform("min").dt.floor("D")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    at = table.schema.get_field_index("position")  # whole numbers with missing ones, as sources give them
    table = table.set_column(at, "position", table["position"].cast(pa.int64()))
    paths = []
    for i, d in enumerate(sorted(day.unique())):
        paths.append(folder / f"{i:03d}.arrow")
        feather.write_feather(table.filter(pa.array((day == d).to_numpy())), paths[-1], compression="lz4",
                              chunksize=17)  # several batches per file, as the stage's files have
        if empty_day and i == 3:
            paths.append(folder / f"{i:03d}-empty.arrow")
            feather.write_feather(table.slice(0, 0), paths[-1], compression="lz4")
    return paths


def _expected(days: list[Path], folder: Path):
    """``split_rows`` + ``write_split`` over the days' rows concatenated (what the stage did before)."""
    keys = pa.concat_tables([feather.read_table(p, columns=KEYS) for p in days]).to_pandas()
    rows, valid_start, test_start = split_rows(keys, end=END, valid_days=7, test_days=7)
    folder.mkdir(parents=True)
    saved = {}
    for name in FEATURES:
        saved[name] = folder / f"{name}.npy"
        np.save(saved[name], np.concatenate([feather.read_table(p, columns=[name]).column(0).to_numpy()
                                             for p in days]))
    return write_split(rows, keys, saved, folder / "split", valid_start=valid_start, test_start=test_start)


@pytest.mark.parametrize(("ids", "propensity"), [("text", "partial"), ("numeric", "partial"), ("text", "missing")])
def test_the_days_split_is_the_window_split(tmp_path: Path, ids: str, propensity: str) -> None:
    days = _days(_window(ids, propensity), tmp_path / "days", empty_day=True)
    expected = _expected(days, tmp_path / "expected")
    got = write_split_from_days(days, KEYS, FEATURES, tmp_path / "split", tmp_path / "scratch", end=END,
                                valid_days=7, test_days=7, row_group_rows=50)
    assert got is not None
    assert got.sizes() == expected.sizes() and got.sizes()["train_rows"] > 0
    assert (got.valid_start, got.test_start) == (expected.valid_start, expected.test_start)
    for part in ("train", "valid", "test"):
        a, b = pq.read_table(expected.paths[part]), pq.read_table(got.paths[part])
        assert b.schema == a.schema
        assert pq.ParquetFile(got.paths[part]).metadata.num_row_groups == -(-a.num_rows // 50)
        pdt.assert_frame_equal(b.to_pandas(), a.to_pandas())
    assert got.sizes()["test_queries"] == pq.read_table(got.paths["test"])["query_id"].to_pandas().nunique()


def test_the_split_laid_out_in_blocks_is_the_window_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The split's order is laid out a block of rows at a time (features and keys): blocks that cut parts and
    queries anywhere give the window's split, row group for row group."""
    import models.day_split as day_split

    monkeypatch.setattr(day_split, "ORDER_BLOCK_ROWS", 37)
    monkeypatch.setattr(day_split, "_QUERY_BLOCK", 5)
    days = _days(_window("text", "partial"), tmp_path / "days", empty_day=True)
    expected = _expected(days, tmp_path / "expected")
    got = write_split_from_days(days, KEYS, FEATURES, tmp_path / "split", tmp_path / "scratch", end=END,
                                valid_days=7, test_days=7, row_group_rows=50)
    assert got is not None and got.sizes() == expected.sizes()
    assert got.sizes()["train_rows"] > 3 * 37  # several blocks in a part
    for part in ("train", "valid", "test"):
        a, b = pq.read_table(expected.paths[part]), pq.read_table(got.paths[part])
        assert b.schema == a.schema
        assert pq.ParquetFile(got.paths[part]).metadata.num_row_groups == -(-a.num_rows // 50)
        pdt.assert_frame_equal(b.to_pandas(), a.to_pandas())
    ordered = np.load(tmp_path / "scratch" / "ordered" / "f_rate.npy")
    assert len(ordered) == sum(got.sizes()[f"{p}_rows"] for p in ("train", "valid", "test"))


def test_a_query_on_two_days_is_left_to_the_window_split(tmp_path: Path) -> None:
    frame = _window("text", "partial")
    days = _days(frame, tmp_path / "days")
    last = feather.read_table(days[-1])  # the first day's first query id again, on the last day
    first = feather.read_table(days[0])["query_id"][0]
    ids = last["query_id"].to_pylist()
    last = last.set_column(0, "query_id", pa.array([first.as_py()] * 1 + ids[1:]))
    feather.write_feather(last, days[-1])
    got = write_split_from_days(days, KEYS, FEATURES, tmp_path / "split", tmp_path / "scratch", end=END,
                                valid_days=7, test_days=7)
    assert got is None
    assert not (tmp_path / "split").exists()


def test_a_missing_query_id_is_left_to_the_window_split(tmp_path: Path) -> None:
    days = _days(_window("text", "partial"), tmp_path / "days")
    table = feather.read_table(days[2])
    ids = table["query_id"].to_pylist()
    feather.write_feather(table.set_column(0, "query_id", pa.array([None, *ids[1:]], pa.string())), days[2])
    assert write_split_from_days(days, KEYS, FEATURES, tmp_path / "split", tmp_path / "scratch", end=END,
                                 valid_days=7, test_days=7) is None


def test_an_empty_part_says_which(tmp_path: Path) -> None:
    frame = _window("text", "partial")
    days = _days(frame[frame["ts"] < END - timedelta(days=8)], tmp_path / "days")
    with pytest.raises(ValueError, match=r"time split leaves \['test'\] empty: window ends 2026-11-16"):
        write_split_from_days(days, KEYS, FEATURES, tmp_path / "split", tmp_path / "scratch", end=END,
                              valid_days=7, test_days=7)
    with pytest.raises(ValueError, match=r"time_split needs columns \['label'\]"):
        write_split_from_days(days, KEYS[:-1], FEATURES, tmp_path / "split", tmp_path / "scratch", end=END,
                              valid_days=7, test_days=7)


def test_a_feature_column_of_other_rows_is_refused_before_the_split_is_written(tmp_path: Path) -> None:
    """The plan's features are laid out as they come: a column that is not one value per row of the days is named
    and refused, and nothing is written in the split's folder."""
    from models.day_split import plan_split

    days = _days(_window("text", "partial"), tmp_path / "days", empty_day=True)
    plan = plan_split(days, KEYS, tmp_path / "scratch", end=END, valid_days=7, test_days=7)
    assert plan is not None and plan.window_rows == sum(feather.read_table(p).num_rows for p in days)
    with pytest.raises(ValueError, match="feature 'f_rate' has 3 rows; the days have"):
        plan.save_ordered("f_rate", np.zeros(3, dtype=np.float32))
    assert not (tmp_path / "split").exists()
