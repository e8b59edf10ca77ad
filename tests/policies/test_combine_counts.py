"""``thompson.combine_counts`` codes each partition's keys as it comes instead of concatenating the
partitions' frames: the combined counts are those of the concatenation's group-by, to the last bit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from models import thompson
from tests.buffers import held_bytes


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


def _grouped_part(part: thompson.BetaCounts) -> thompson.BetaCounts:
    """A part as :func:`thompson.beta_counts` makes it: one row per key, in key order."""
    pairs = part.user_items.groupby(["user_id", "item_id"], as_index=False)[["successes", "failures"]].sum()
    return thompson.BetaCounts(items=part.items, user_items=pairs, data_end=part.data_end, rows=part.rows)


def _parked(parts: list[thompson.BetaCounts], folder, row_group_size: int) -> tuple[list[thompson.BetaCounts], list]:
    """The parts' user x item rows written to files (small row groups), and the parts without them."""
    paths = []
    for i, p in enumerate(parts):
        paths.append(folder / f"{i}.parquet")
        p.user_items.to_parquet(paths[-1], index=False, row_group_size=row_group_size)
    bare = [thompson.BetaCounts(items=p.items, user_items=p.user_items.iloc[:0], data_end=p.data_end, rows=p.rows)
            for p in parts]
    return bare, paths


@pytest.mark.parametrize("range_rows", [None, 1, 5, 37])
@pytest.mark.parametrize("case", ["text", "numbers", "missing", "empty parts", "grouped", "grouped, one item",
                                  "one part", "disjoint in order"])
def test_counts_combined_from_files_by_user_range_equal_the_group_by(case: str, range_rows: int | None,
                                                                     tmp_path) -> None:
    """``combine_count_files`` reads the parts' rows a user range at a time (slices of files in key
    order, filters of others) and gives the concatenation's group-by to the last bit: also where a
    range's rows come in key order (pandas would sum them with reduceat) while all rows together do not,
    and where all of them do (one part; parts of disjoint users in order)."""
    rng = np.random.default_rng(len(case) + 100)
    users = (np.arange(40) * 7 if case == "numbers" else
             np.array([f"u{i}" for i in range(40)] + ["é", "U", "u10 ", ""], dtype=object))
    items = np.arange(9) if case == "numbers" else np.array([f"i{i}" for i in (3, 1, 20, 100, 2)], dtype=object)
    if case == "grouped, one item":
        items = items[:1]
    sizes = {"empty parts": [0, 50, 0, 7], "one part": [400]}.get(case, [300, 1, 120, 80, 300])
    if case == "disjoint in order":
        ordered = np.sort(users)
        parts = [_grouped_part(_part(rng, 200, ordered[lo:hi], items, False)) for lo, hi in ((0, 10), (10, 25), (25, 40))]
    else:
        parts = [_part(rng, n, users, items, case == "missing") for n in sizes]
    if case.startswith("grouped") or case == "one part":
        parts = [_grouped_part(p) for p in parts]
    bare, paths = _parked(parts, tmp_path, row_group_size=16)
    got = thompson.combine_count_files(bare, paths, range_rows=range_rows)
    want = _by_definition([p.user_items for p in parts], ["user_id", "item_id"])
    pdt.assert_frame_equal(got.user_items, want, check_exact=True)
    assert got.user_items["successes"].to_numpy().tobytes() == want["successes"].to_numpy().tobytes()
    pdt.assert_frame_equal(got.items, _by_definition([p.items for p in parts], ["item_id"]), check_exact=True)
    assert got.rows == sum(p.rows for p in parts)
    scans = [thompson._scan_keys(p) for p in paths]
    in_order = thompson._in_key_order(scans)
    assert in_order == (case in ("one part", "disjoint in order")), case
    assert all(s.sliced for s in scans) == (case.startswith("grouped") or case in ("one part", "disjoint in order"))
    if case == "grouped, one item" and range_rows == 1:  # the case the row out of order is for
        sums = pd.concat([p.user_items for p in parts], ignore_index=True).sort_values(
            "user_id", kind="stable").groupby("user_id")["successes"].sum()  # in key order: reduceat
        assert (sums.to_numpy() != want.set_index("user_id")["successes"].reindex(sums.index).to_numpy()).any()


def test_counts_from_files_need_one_file_per_part(tmp_path) -> None:
    part = thompson.BetaCounts(items=pd.DataFrame({"item_id": [], "successes": [], "failures": []}),
                               user_items=pd.DataFrame(), data_end=None, rows=0)
    with pytest.raises(ValueError, match="2 files"):
        thompson.combine_count_files([part], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="at least one"):
        thompson.combine_count_files([], [])


def _refit_case(case: str, rng: np.random.Generator, settings) -> tuple[list, thompson.BetaTables | None, Any, Any]:
    """The days' grouped counts and the champion (None for "no champion" and "numbers") of a refit case."""
    users = np.arange(60) * 3 if case == "numbers" else np.array([f"u{i}" for i in range(40)] + ["é", "U", ""],
                                                                  dtype=object)
    items = np.arange(7) if case == "numbers" else np.array([f"i{i}" for i in (3, 1, 20, 100, 2)], dtype=object)
    sizes = (150,) if case == "champion, files in key order" else (200, 1, 90, 160)
    parts = [_grouped_part(_part(rng, n, users, items, False)) for n in sizes]
    previous = None
    if case not in ("no champion", "numbers"):
        old_users = np.array([f"v{i}" for i in range(15)], dtype=object) if case == "champion of other users" else users
        previous = thompson.refit_from_counts(None, _grouped_part(_part(rng, 300, old_users, items, False)),
                                              settings, datetime(2025, 12, 20, tzinfo=UTC))
        if case == "champion not in key order":
            previous = thompson.BetaTables(items=previous.items, user_items=previous.user_items.iloc[::-1],
                                           settings=settings, fitted_at=previous.fitted_at, data_end=previous.data_end)
    return parts, previous, users, items


@pytest.mark.parametrize("range_rows", [None, 1, 23])
@pytest.mark.parametrize("case", ["champion", "champion, files in key order", "champion not in key order",
                                  "no champion", "champion of other users"])
def test_refit_from_files_adds_the_champion_a_user_range_at_a_time(case: str, range_rows: int | None,
                                                                   tmp_path) -> None:
    """``refit_from_count_files`` (the tables stage's refit) gives ``refit_from_counts`` of the combined
    counts to the last bit, with the champion's decayed user x item rows merged range by range."""
    from core.config.policy import BanditSettings

    settings = BanditSettings(half_life_days=3.0)
    parts, previous, _, _ = _refit_case(case, np.random.default_rng(len(case)), settings)
    bare, paths = _parked(parts, tmp_path, row_group_size=8)
    now = datetime(2026, 2, 1, tzinfo=UTC)
    got = thompson.refit_from_count_files(previous, bare, paths, settings, now, range_rows=range_rows)
    want = thompson.refit_from_counts(previous, thompson.combine_counts(parts), settings, now)
    pdt.assert_frame_equal(got.user_items.reset_index(drop=True), want.user_items.reset_index(drop=True),
                           check_exact=True)
    pdt.assert_frame_equal(got.items, want.items, check_exact=True)
    assert (got.data_end, got.fitted_at) == (want.data_end, want.fitted_at)
    if previous is not None:  # the champion's rows were decayed and added, not dropped or taken as they are
        assert len(want.user_items) >= len(previous.user_items)
        joined = want.user_items.merge(previous.user_items, on=["user_id", "item_id"], suffixes=("", "_old"))
        assert len(joined) and (joined["successes"] != joined["successes_old"]).any()


@pytest.mark.parametrize("range_rows", [None, 1, 23])
@pytest.mark.parametrize("case", ["champion", "champion, files in key order", "champion not in key order",
                                  "no champion", "champion of other users", "numbers"])
def test_a_refit_written_range_by_range_saves_the_table_held_in_memory(case: str, range_rows: int | None,
                                                                       tmp_path) -> None:
    """With ``write_to`` the user x item rows go to a file range by range (never a frame of them); the table
    saved from it loads back as the one refit in memory, to the last bit, with the same meta file. Where
    the rows are read whole anyway (files in key order, a champion not in it) the table holds them."""
    from core.config.policy import BanditSettings

    settings = BanditSettings(half_life_days=3.0)
    parts, previous, users, items = _refit_case(case, np.random.default_rng(len(case) + 7), settings)
    bare, paths = _parked(parts, tmp_path, row_group_size=8)
    now = datetime(2026, 2, 1, tzinfo=UTC)
    held = thompson.refit_from_count_files(previous, bare, paths, settings, now, range_rows=range_rows)
    target = tmp_path / "out" / "all.parquet"
    written = thompson.refit_from_count_files(previous, bare, paths, settings, now, range_rows=range_rows,
                                              write_to=target)
    streamed = case not in ("champion, files in key order", "champion not in key order")
    assert (written.user_items_path is not None) == streamed == target.exists()
    if streamed:
        assert len(written.user_items) == 0 and list(written.user_items.columns) == list(held.user_items.columns)
        assert held_bytes(written.user_items) < 1_000  # not a view of a range it summed: that would stay alive
        with pytest.raises(RuntimeError, match="read it with BetaTables.load"):
            written.mean(list(items[:2]), user_id=str(users[0]))
    a = thompson.BetaTables.load(held.save(tmp_path / "held"))
    b = thompson.BetaTables.load(written.save(tmp_path / "written"))
    pdt.assert_frame_equal(b.user_items, a.user_items, check_exact=True)
    assert b.user_items["successes"].to_numpy().tobytes() == a.user_items["successes"].to_numpy().tobytes()
    pdt.assert_frame_equal(b.items, a.items, check_exact=True)
    assert (tmp_path / "written" / thompson.META_FILE).read_text() == (tmp_path / "held" / thompson.META_FILE).read_text()
    assert len(a.user_items) > 10
    np.testing.assert_array_equal(b.mean(list(items), user_id=str(users[1])), a.mean(list(items), user_id=str(users[1])))
    assert not list(target.parent.glob(".*.tmp"))  # written atomically: no temporary file left


def test_a_table_cannot_hold_its_rows_both_in_memory_and_in_a_file(tmp_path) -> None:
    table = thompson.empty_tables(thompson.BanditSettings(), datetime(2026, 1, 1, tzinfo=UTC))
    rows = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "successes": [1.0], "failures": [0.0]})
    with pytest.raises(ValueError, match="not in user_items"):
        thompson.BetaTables(items=table.items, user_items=rows, settings=table.settings, fitted_at=table.fitted_at,
                            data_end=None, user_items_path=tmp_path / "x.parquet")


def _saved_champion(previous: thompson.BetaTables, case: str, folder) -> Any:
    """The champion as the registry holds it (saved), its user x item file made as ``case`` says."""
    if case == "champion with a key twice":  # a hand-made file: one key's row split in two
        rows = previous.user_items
        twice = pd.concat([rows.iloc[:3], rows.iloc[2:]], ignore_index=True)
        twice.loc[2, ["successes", "failures"]] /= 2.0
        twice.loc[3, ["successes", "failures"]] = twice.loc[2, ["successes", "failures"]].to_numpy()
        previous = thompson.BetaTables(items=previous.items, user_items=twice, settings=previous.settings,
                                       fitted_at=previous.fitted_at, data_end=previous.data_end)
    return previous.save(folder)


@pytest.mark.parametrize("range_rows", [None, 1, 23])
@pytest.mark.parametrize("case", ["champion", "champion, files in key order", "champion not in key order",
                                  "champion of other users", "champion with a key twice"])
def test_a_champion_read_for_a_refit_is_read_a_user_range_at_a_time(case: str, range_rows: int | None, tmp_path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables stage reads the champion bandit with its user x item rows left in their file
    (``load_for_refit``); the refit reads them a user range at a time, never whole, and gives the table the
    champion read whole gives, to the last bit (written range by range or held). A file not as ``save``
    writes a refit's rows (not in key order, a key twice) is read whole and merged as before."""
    from core.config.policy import BanditSettings

    settings = BanditSettings(half_life_days=3.0)
    monkeypatch.setattr(thompson, "_SCAN_BATCH_ROWS", 7)  # the champion's keys scanned a few rows at a time
    base_case = "champion" if case == "champion with a key twice" else case
    parts, previous, users, items = _refit_case(base_case, np.random.default_rng(len(case) + 3), settings)
    saved = _saved_champion(previous, case, tmp_path / "champion")
    champion_file = saved / thompson.USER_ITEM_FILE
    lazy = thompson.BetaTables.load_for_refit(saved)
    whole = thompson.BetaTables.load(saved)
    assert len(lazy.user_items) == 0 and lazy.user_items_path == champion_file
    assert list(lazy.user_items.columns) == list(whole.user_items.columns) and len(whole.user_items) > 10
    with pytest.raises(RuntimeError, match="read it with BetaTables.load"):
        lazy.mean(list(items[:2]), user_id=str(users[0]))
    bare, paths = _parked(parts, tmp_path, row_group_size=8)
    now = datetime(2026, 2, 1, tzinfo=UTC)
    whole_reads = []
    real_read = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda path, *a, **k: whole_reads.append(str(path)) or real_read(path, *a, **k))
    for n, write_to in enumerate((None, tmp_path / "out" / "all.parquet")):
        got = thompson.refit_from_count_files(lazy, bare, paths, settings, now, range_rows=range_rows,
                                              write_to=write_to)
        want = thompson.refit_from_count_files(whole, bare, paths, settings, now, range_rows=range_rows,
                                               write_to=write_to)
        a = thompson.BetaTables.load(want.save(tmp_path / f"want{n}"))
        b = thompson.BetaTables.load(got.save(tmp_path / f"got{n}"))
        pdt.assert_frame_equal(b.user_items, a.user_items, check_exact=True)
        pdt.assert_frame_equal(b.items, a.items, check_exact=True)
        assert (b.data_end, b.fitted_at) == (a.data_end, a.fitted_at)
        joined = a.user_items.merge(whole.user_items, on=["user_id", "item_id"], suffixes=("", "_old"))
        assert len(joined) and (joined["successes"] != joined["successes_old"]).any()  # the champion was added
    read_whole = str(champion_file) in whole_reads
    assert read_whole == (case in ("champion not in key order", "champion with a key twice",
                                   "champion, files in key order"))
    # the challenger's refit (judged by its per-item table): no user x item rows, the champion's file forgotten
    pre = thompson.refit_from_counts(thompson.without_user_items(lazy), thompson.combine_counts(parts), settings, now)
    assert pre.user_items_path is None and len(pre.user_items) == len(thompson.combine_counts(parts).user_items)


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 5, 1000])
@pytest.mark.parametrize("layout", ["grouped", "a key twice", "backwards at a batch edge", "missing first",
                                    "missing later", "all missing", "empty", "numbers"])
def test_the_key_scan_in_batches_is_the_scan_of_the_whole_file(layout: str, batch_rows: int, tmp_path) -> None:
    """``_scan_keys`` reads a file's keys a record batch at a time: what it finds (in key order, a key twice,
    rows missing a key first, first and last keys, rows per user) is what one read of the whole file shows."""
    users = ["a", "a", "b", "b", "b", "c", "d", "d"]
    items = ["x", "y", "x", "y", "z", "x", "x", "y"]
    if layout == "a key twice":
        items[4] = "y"
    elif layout == "backwards at a batch edge":
        users[3], users[4] = "c", "b"
    elif layout in ("missing first", "missing later"):
        users[0 if layout == "missing first" else 5] = None
    elif layout == "all missing":
        users = [None] * len(users)
    frame = pd.DataFrame({"user_id": pd.Series(users, dtype="str"), "item_id": pd.Series(items, dtype="str"),
                          "successes": 1.0, "failures": 0.0})
    if layout == "empty":
        frame = frame.iloc[:0]
    if layout == "numbers":
        frame = frame.assign(user_id=frame["user_id"].map({"a": 1, "b": 5, "c": 7, "d": 30}))
    path = tmp_path / "keys.parquet"
    frame.to_parquet(path, index=False, row_group_size=3)
    got = thompson._scan_keys(path, batch_rows=batch_rows)
    whole = frame[frame["user_id"].notna() & frame["item_id"].notna()]
    keys = list(zip(whole["user_id"], whole["item_id"], strict=True))
    missing = int(len(frame) - len(whole))
    ordered = frame.iloc[:missing]["user_id"].isna().all() and keys == sorted(keys)
    assert got.ordered == ordered
    assert got.distinct == (ordered and len(set(keys)) == len(keys))
    assert got.sliced == (ordered and missing == 0)
    if ordered:  # rows missing a key first, first and last key: read only of a file in key order
        assert got.leading_missing == (missing > 0)
        assert (got.first, got.last) == ((keys[0], keys[-1]) if keys else (None, None))
    assert got.rows == len(frame)
    want_rows = frame["user_id"].dropna().value_counts(sort=False)
    assert got.user_rows.to_dict() == want_rows.to_dict() and list(got.user_rows.index) == list(want_rows.index)
    assert {"grouped": ordered and got.distinct, "a key twice": ordered and not got.distinct,
            "backwards at a batch edge": not ordered, "missing later": not ordered}.get(layout, True)
