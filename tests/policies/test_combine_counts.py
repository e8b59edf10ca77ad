"""``thompson.combine_counts`` codes each partition's keys as it comes instead of concatenating the
partitions' frames: the combined counts are those of the concatenation's group-by, to the last bit."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from models import thompson


def _by_definition(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True).groupby(keys, as_index=False)[["successes", "failures"]].sum()


def _part(rng: np.random.Generator, n: int, users: np.ndarray, items: np.ndarray, missing: bool) -> thompson.BetaCounts:
    user = pd.Series(rng.choice(users, n), dtype=users.dtype if users.dtype != object else "str")
    item = pd.Series(rng.choice(items, n), dtype=items.dtype if items.dtype != object else "str")
    if missing and n:
        user = user.mask(rng.random(n) < 0.05)
    weights = rng.random(n) * 10.0 ** rng.integers(-8, 8, n)  # magnitudes far apart: summation order shows
    pairs = pd.DataFrame({"user_id": user, "item_id": item, "successes": weights, "failures": weights[::-1].copy()})
    per_item = pairs.groupby("item_id", as_index=False)[["successes", "failures"]].sum()
    end = pd.Timestamp(datetime(2026, 1, 1, tzinfo=UTC)) + pd.Timedelta(days=int(rng.integers(0, 30)))
    return thompson.BetaCounts(items=per_item, user_items=pairs, data_end=end if n else None, rows=n)


@pytest.mark.parametrize("chunk_rows", [None, 1, 37])
@pytest.mark.parametrize("case", ["text", "numbers", "missing", "empty parts"])
def test_combined_counts_equal_the_group_by_of_the_concatenation(case: str, chunk_rows: int | None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Summed in one group-by or over key ranges of a few rows each (the 10M-interaction path)."""
    if chunk_rows is not None:
        monkeypatch.setattr(thompson, "_TOTAL_CHUNK_ROWS", chunk_rows)
    rng = np.random.default_rng(len(case))
    users = (np.arange(40) * 7 if case == "numbers" else
             np.array([f"u{i}" for i in range(40)] + ["é", "U", "u10 ", ""], dtype=object))
    items = np.arange(9) if case == "numbers" else np.array([f"i{i}" for i in (3, 1, 20, 100, 2)], dtype=object)
    sizes = [0, 50, 0, 7] if case == "empty parts" else [300, 1, 120, 80, 300]
    parts = [_part(rng, n, users, items, case == "missing") for n in sizes]
    got = thompson.combine_counts(iter(parts))  # read once, one part at a time
    want = _by_definition([p.user_items for p in parts], ["user_id", "item_id"])
    pdt.assert_frame_equal(got.user_items, want, check_exact=True)
    pdt.assert_frame_equal(got.items, _by_definition([p.items for p in parts], ["item_id"]), check_exact=True)
    assert got.rows == sum(sizes)
    assert got.data_end == max(p.data_end for p in parts if p.data_end is not None)
    assert len(want) > 0 and (want.groupby(["user_id", "item_id"]).size() == 1).all()
    if case == "missing":
        assert sum(p.user_items["user_id"].isna().sum() for p in parts) > 0


def test_no_partition_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        thompson.combine_counts(iter([]))


def test_grouped_is_one_row_per_key_in_sorted_order() -> None:
    """``_grouped`` (adjacent rows compared) against its definition (an index over the keys), on small
    frames of every kind: sorted or not, repeated keys or not, missing values."""
    def by_index(frame: pd.DataFrame, keys: list[str]) -> bool:
        index = pd.MultiIndex.from_frame(frame[keys]) if len(keys) > 1 else pd.Index(frame[keys[0]])
        return bool(index.is_monotonic_increasing and index.is_unique)

    rng = np.random.default_rng(3)
    seen = {True: 0, False: 0}
    for _ in range(1500):
        n = int(rng.integers(0, 6))
        frame = pd.DataFrame({"a": pd.Series(rng.choice(["x", "y", "é", "X", None], n, p=[.3, .3, .2, .15, .05]),
                                             dtype="str"),
                              "b": rng.integers(0, 3, n)})
        if rng.random() < 0.5:
            frame = frame.sort_values(["a", "b"])
        if rng.random() < 0.5:
            frame = frame.drop_duplicates(["a", "b"])
        for keys in (["a", "b"], ["a"], ["b"]):
            want = by_index(frame, keys)
            assert thompson._grouped(frame, keys) == want, (frame, keys)
            seen[want] += 1
    assert min(seen.values()) > 500


def test_key_ranges_sum_as_one_group_by_whether_rows_come_sorted_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """pandas sums a frame whose keys come sorted with ``np.add.reduceat``, else with its compensated sum:
    the ranges of ``_summed_by_key`` never let a sorted range be summed alone, so every input (sorted,
    partly sorted, unsorted, one key) gives the single group-by's floats to the last bit."""
    differs = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 200))
        key = rng.integers(0, int(rng.integers(1, 40)), n)
        if seed % 3 == 0:
            key = np.sort(key)
        elif seed % 3 == 1:
            key[: n // 2] = np.sort(key[: n // 2])
        successes = rng.random(n) * 10.0 ** rng.integers(-8, 8, n)
        failures = successes[::-1].copy()
        want = pd.DataFrame({"key": key, "successes": successes, "failures": failures}).groupby(
            "key", sort=True)[["successes", "failures"]].sum()
        for chunk_rows in (1, 3, 37, 10_000):
            monkeypatch.setattr(thompson, "_TOTAL_CHUNK_ROWS", chunk_rows)
            keys, s, f = thompson._CodedCounts._summed_by_key(key, successes, failures)
            np.testing.assert_array_equal(keys, want.index.to_numpy())
            assert s.tobytes() == want["successes"].to_numpy().tobytes(), (seed, chunk_rows)
            assert f.tobytes() == want["failures"].to_numpy().tobytes(), (seed, chunk_rows)
        # the two ways pandas sums do differ on these magnitudes: a range summed alone would show
        sorted_rows = np.argsort(key, kind="stable")
        alone = pd.DataFrame({"key": key[sorted_rows], "s": successes[sorted_rows]}).groupby("key")["s"].sum()
        differs += int((alone.to_numpy() != want["successes"].to_numpy()).any())
    assert differs > 10
