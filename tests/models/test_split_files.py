"""The split as Parquet files (what the weekly stages hand each other) holds exactly ``time_split``'s frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from models.training import split_rows, time_split, write_split

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
    features = pd.DataFrame({"f_count": rng.integers(0, 100, len(keys)).astype(np.int32),
                             "f_rate": rng.random(len(keys)).astype(np.float32),
                             "f_code": rng.integers(-1, 4, len(keys)).astype(np.int16)})
    features.loc[features.index[::7], "f_rate"] = np.nan
    return keys, features


@pytest.mark.parametrize("chunk_rows", [7, 1000])
def test_split_files_hold_time_split_frames(tmp_path, chunk_rows):
    keys, features = _frames()
    expected = time_split(pd.concat([keys, features], axis=1), end=END, valid_days=7, test_days=7)
    rows, valid_start, test_start = split_rows(keys, end=END, valid_days=7, test_days=7)
    files = write_split(rows, [keys, features], tmp_path / "split", valid_start=valid_start,
                        test_start=test_start, chunk_rows=chunk_rows)
    for part in ("train", "valid", "test"):
        got = files.read(part)
        pdt.assert_frame_equal(got, getattr(expected, part), check_dtype=False)
        assert {c: str(got[c].dtype) for c in features} == {"f_count": "int32", "f_rate": "float32", "f_code": "int16"}
    assert files.sizes() == expected.sizes()
    assert (files.valid_start, files.test_start) == (expected.valid_start, expected.test_start)
    assert list(files.read("test", ["query_id", "f_rate"]).columns) == ["query_id", "f_rate"]
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["test.parquet", "train.parquet", "valid.parquet"]
    with pytest.raises(ValueError, match="no split part 'holdout'"):
        files.read("holdout")


def test_split_rows_rejects_an_empty_part():
    keys, _ = _frames()
    with pytest.raises(ValueError, match="empty"):
        split_rows(keys, end=END + timedelta(days=60), valid_days=7, test_days=7)
