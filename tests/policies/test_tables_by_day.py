"""The tables stage runs per request day (rankloop.tables.fit_tables_by_day), locally one day at a time:
the day files, and a log without impressions whose sessions cross midnight give the rewards the
whole window gives."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.config.policy import RewardSettings
from models.rewards import exposure_events, request_moves, reward_frames
from rankloop import tables
from rankloop.partitions import InProcess, split_by_day

REWARDS = RewardSettings()
COLUMNS = ["user_id", "item_id", "event_type", "value", "ts", "request_id", "position", "propensity", "session_id"]


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _no_impressions_log() -> pd.DataFrame:
    """Views, clicks and purchases without impressions or request ids: sessions s1 and s3 cross midnight,
    u2 has no session (its requests are its UTC days), u4's click comes a day after its view."""
    rows = [
        ("u1", "a", "view", "2026-03-02 23:50", "s1"), ("u1", "a", "click", "2026-03-02 23:55", "s1"),
        ("u1", "b", "view", "2026-03-03 00:05", "s1"), ("u1", "b", "click", "2026-03-03 00:20", "s1"),
        ("u2", "a", "view", "2026-03-02 10:00", None), ("u2", "a", "click", "2026-03-03 09:00", None),
        ("u3", "c", "view", "2026-03-03 23:59", "s3"), ("u3", "c", "cart_add", "2026-03-04 00:01", "s3"),
        ("u3", "a", "view", "2026-03-04 00:02", "s3"),
        ("u4", "d", "view", "2026-03-02 12:00", "s4"), ("u4", "d", "click", "2026-03-03 12:00", "s4"),
    ]
    return pd.DataFrame({
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "event_type": [r[2] for r in rows],
        "value": [None] * len(rows), "ts": [_ts(r[3]) for r in rows], "request_id": [None] * len(rows),
        "position": [None] * len(rows), "propensity": [None] * len(rows), "session_id": [r[4] for r in rows],
    }).astype({"value": "float64", "position": "float64", "propensity": "float64", "request_id": "object"})


def _window_file(events: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), path)
    return path


def _key(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.sort_values(by, kind="stable").reset_index(drop=True)


def test_split_by_day_keeps_every_row_in_order_and_replaces_the_folder(tmp_path: Path) -> None:
    events = _no_impressions_log()
    days = split_by_day(_window_file(events, tmp_path), tmp_path / "days")
    assert sorted(days) == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    back = pd.concat([pd.read_parquet(days[d]) for d in sorted(days)], ignore_index=True)
    assert len(back) == len(events)
    for d, path in days.items():
        mine = events[events["ts"].dt.date == d].reset_index(drop=True)
        got = pd.read_parquet(path)
        assert list(got["item_id"]) == list(mine["item_id"]) and list(got["ts"]) == list(mine["ts"])
        assert (got["ts"].dt.date == d).all()
    again = split_by_day(_window_file(events.iloc[:4], tmp_path), tmp_path / "days")  # a rerun replaces it
    assert sorted(again) == [date(2026, 3, 2), date(2026, 3, 3)]
    assert not (tmp_path / "days" / "day=2026-03-04").exists()
    assert not list(tmp_path.glob(".days.tmp*"))


def test_split_by_day_in_small_batches_writes_the_same_day_files(tmp_path: Path) -> None:
    """The split reads a batch of rows at a time and writes the days' waiting rows once they are two batches
    together: batches of 1, 2, 3 and 5 rows of a log whose days interleave give each day's rows in the file's
    order, the same tables (schema and field descriptions included) as one batch, in more row groups."""
    import pyarrow as pa

    events = _no_impressions_log()
    source = pa.Table.from_pandas(events, preserve_index=False)
    path = tmp_path / "events.parquet"
    described = source.schema.set(0, source.schema.field(0).with_metadata({"description": "Who acted."}))
    pq.write_table(source.cast(described), path)
    whole = split_by_day(path, tmp_path / "whole")
    for batch_rows in (1, 2, 3, 5):
        days = split_by_day(path, tmp_path / f"by{batch_rows}", batch_rows=batch_rows)
        assert list(days) == list(whole)
        for d in days:
            got, expected = pq.read_table(days[d]), pq.read_table(whole[d])
            assert got.equals(expected) and got.schema.equals(expected.schema, check_metadata=True)
            assert got.schema.field("user_id").metadata == {b"description": b"Who acted."}
        groups = sum(pq.ParquetFile(p).metadata.num_row_groups for p in days.values())
        assert groups > len(days) if batch_rows < 3 else groups >= len(days)


def test_split_by_day_reuses_the_split_of_the_same_file_only(tmp_path: Path) -> None:
    """``reuse``: the folder holding this very file's split is returned as it is (no file rewritten); another
    file, the same path rewritten, a day file gone, or no record of the source, and the rows are cut again."""
    import json
    import os

    events = _no_impressions_log()
    path = _window_file(events, tmp_path)
    folder = tmp_path / "days"
    first = split_by_day(path, folder, reuse=True)
    stamp = tmp_path / "days.source.json"
    assert json.loads(stamp.read_text())["rows"] == len(events)
    inodes = {d: os.stat(p).st_ino for d, p in first.items()}
    again = split_by_day(path, folder, reuse=True)
    assert again == first and {d: os.stat(p).st_ino for d, p in again.items()} == inodes  # the same files
    assert {d: os.stat(p).st_ino for d, p in split_by_day(path, folder).items()} != inodes  # reuse off: cut again
    assert not stamp.exists()  # and nothing claims that split for a later reuse
    first = split_by_day(path, folder, reuse=True)

    other = tmp_path / "other"
    other.mkdir()
    shorter = split_by_day(_window_file(events.iloc[:4], other), folder, reuse=True)  # another file
    assert sorted(shorter) == [date(2026, 3, 2), date(2026, 3, 3)]
    rewritten = split_by_day(_window_file(events, other), folder, reuse=True)  # the same path, rewritten
    assert len(rewritten) == 3

    first_day = rewritten[min(rewritten)]
    first_day.unlink()  # a day file lost since: the record no longer tells the truth
    healed = split_by_day(path, folder, reuse=True)
    assert healed[min(healed)].exists() and sum(pq.ParquetFile(p).metadata.num_rows for p in healed.values()) == len(events)

    stamp.unlink()  # a split whose record never came (killed between the rename and the record): cut again
    before = {d: os.stat(p).st_ino for d, p in healed.items()}
    assert {d: os.stat(p).st_ino for d, p in split_by_day(path, folder, reuse=True).items()} != before
    assert stamp.exists()


def test_exposures_per_request_day_equal_the_window_exposures(tmp_path: Path) -> None:
    """Requests are filled row by row and gathered at the day of their first event, so the synthetic
    impressions and their rewards are those of the whole window, also across midnight."""
    events = _no_impressions_log()
    days = split_by_day(_window_file(events, tmp_path), tmp_path / "days")
    runner = InProcess()
    indexes = runner.map(tables.day_index, [days[d] for d in sorted(days)])
    assert not any(i.has_impressions for i in indexes)
    index = [i.exposures for i in indexes]
    moves = request_moves(dict(zip(sorted(days), index, strict=True)))
    assert set(moves["request_id"]) == {"u1|s:s1", "u3|s:s3", "u4|s:s4"}  # the sessions whose rows cross midnight
    parts = [reward_frames(exposure_events(tables.request_day_events(d, days, moves, COLUMNS, exposures=True)),
                           REWARDS) for d in sorted(days)]
    imps = pd.concat([p[0] for p in parts], ignore_index=True)
    whole, _ = reward_frames(exposure_events(events), REWARDS)
    keys = ["request_id", "user_id", "item_id"]
    assert len(imps) == len(whole) == 7  # u2 without a session: a view on 03-02 and a click on 03-03 are two requests
    shared = [c for c in whole.columns if c in imps.columns]
    pd.testing.assert_frame_equal(_key(imps[shared], keys), _key(whole[shared], keys), check_dtype=False)
    clicked = _key(imps, keys).set_index(keys)["clicked"]
    assert clicked[("u1|s:s1", "u1", "b")]  # clicked 15 min after midnight, in the same session
    assert clicked[("u4|s:s4", "u4", "d")]  # clicked the next day, in the same session
    assert not clicked[("u2|d:2026-03-02", "u2", "a")]  # no session: the next day's click is another request


def test_a_window_with_logged_impressions_is_not_read_as_exposures(tmp_path: Path) -> None:
    events = _no_impressions_log()
    shown = events.iloc[[0]].assign(event_type="impression", request_id="r1", position=0.0, propensity=0.5)
    days = split_by_day(_window_file(pd.concat([events, shown], ignore_index=True), tmp_path), tmp_path / "days")
    indexes = InProcess().map(tables.day_index, [days[d] for d in sorted(days)])
    assert [i.has_impressions for i in indexes] == [True, False, False]
    assert indexes[0].exposures is None and list(indexes[0].logged["request_id"]) == ["r1"]
    assert indexes[1].exposures is not None and len(indexes[1].exposures) > 0  # the days without: both indexes


def test_in_process_runner_maps_in_order_and_shares_as_is() -> None:
    runner = InProcess()
    shared = {"k": [1, 2]}
    assert runner.map(lambda x, offset, shared: (x + offset, shared), [1, 2, 3], offset=10, shared=shared) == \
        [(11, shared), (12, shared), (13, shared)]
    assert runner.share(shared) is shared


def test_a_split_killed_midway_leaves_the_day_files_in_use_whole_and_the_next_split_heals(tmp_path: Path) -> None:
    """SIGKILL while the day files are written: the folder in use keeps the previous split whole; the
    next split removes the leftover temporary folder and replaces the days."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np

    n = 1_500_000
    start = np.datetime64("2026-03-02T00:00:00", "us").astype(np.int64)
    ts = start + np.sort(np.random.default_rng(0).integers(0, 35 * 86_400_000_000, n))
    events = pa.table({"ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                       "user_id": pa.array(np.char.add("u", (np.arange(n) % 9973).astype(str)))})
    path = tmp_path / "events.parquet"
    pq.write_table(events, path)
    folder = tmp_path / "days"
    (tmp_path / "before").mkdir()
    first = split_by_day(_window_file(_no_impressions_log(), tmp_path / "before"), folder)  # the split in use: 3 days
    code = ("import sys; from pathlib import Path; from rankloop.partitions import split_by_day; "
            f"split_by_day(Path({str(path)!r}), Path({str(folder)!r}), batch_rows=1_000)")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2], start_new_session=True)
    tmp = tmp_path / ".days.tmp"
    deadline = time.monotonic() + 60
    while not (tmp.exists() and any(tmp.iterdir())) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the split ended before it could be killed"
    assert tmp.exists()  # the killed split's partial days
    assert sorted(d.name for d in folder.iterdir()) == [f"day={d.isoformat()}" for d in sorted(first)]
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in first.values()) == len(_no_impressions_log())
    healed = split_by_day(path, folder)
    assert not tmp.exists()
    assert len(healed) == 35 and sum(pq.ParquetFile(p).metadata.num_rows for p in healed.values()) == n


def test_arm_context_keys_are_those_of_the_row_by_row_spelling() -> None:
    """arm_context_stats converts each distinct value once: the same keys and sums as row by row."""
    import numpy as np

    from core.config.policy import LinUCBSettings
    from models import linucb

    rng = np.random.default_rng(1)
    n = 5_000
    settings = LinUCBSettings(context_features=("device", "mood", "action_id", "ratio"))
    frame = pd.DataFrame({
        "item_id": pd.Series(rng.choice(["a", "b", "c"], n), dtype="str"),
        "ts": _ts("2026-03-02") + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
        settings.reward: rng.random(n),
        "device": pd.Series(rng.choice(np.array(["web", "app", None], dtype=object), n), dtype="str"),
        "mood": pd.Series(rng.choice(np.array(["calm", 1, 1.0, None, "__unknown__"], dtype=object), n), dtype=object),
        "action_id": pd.array(rng.choice([3, 7, None], n), dtype="Int32"),
        "ratio": np.where(rng.random(n) < 0.2, np.nan, rng.choice([0.5, 1.0], n)),
    })
    got = linucb.arm_context_stats(frame, settings, datetime(2026, 3, 9, tzinfo=UTC)).pairs
    keys = {"item_id": pd.Series(frame["item_id"], dtype=object).astype(str).to_numpy(dtype=object)}
    for f in settings.context_features:
        keys[f] = linucb._as_str(frame[f]).to_numpy(dtype=object)
    work = pd.DataFrame(keys).assign(n=1.0, r=frame[settings.reward].to_numpy(dtype=float))
    expected = work.groupby(list(keys), as_index=False, sort=True)[["n", "r"]].sum()
    assert {"1", "1.0", "__unknown__"} <= set(got["mood"])  # 1 and 1.0 stay apart, as row by row
    pd.testing.assert_frame_equal(got, expected)
