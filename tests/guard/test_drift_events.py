"""The drift report's events part reads the file a record batch at a time and one bucket of requests at a
time, and gets what the whole window's frames give, to the last bit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config.policy import RewardSettings
from models.drift import categorical_psi, shares
from models.rewards import impression_rewards
from rankloop import drift_events
from rankloop.drift_events import Weeks, event_drift

SINCE = datetime(2026, 3, 9, tzinfo=UTC)
END, DAYS = SINCE + timedelta(days=4), 2
COLUMNS = ["user_id", "item_id", "event_type", "ts", "value", "request_id", "position", "propensity",
           "policy_version", "action_id"]


def _events(requests: int = 40, seed: int = 3) -> pd.DataFrame:
    """Requests every 3.6 hours from 3 days before SINCE, each with 3 impressions, a click and a rating 1-30
    hours later (so some requests cross SINCE and the week boundary), a dwell of a random length, and rows
    without a request; in a shuffled order (the file is not in time order)."""
    rng = np.random.default_rng(seed)
    t = SINCE - timedelta(days=3)
    rows = []
    for r in range(requests):
        start = t + timedelta(hours=3.6 * r * 40 / requests)
        request = f"r{r}"
        for pos in range(3):
            rows.append(dict(user_id=f"u{r % 7}", item_id=f"i{pos + r % 5}", event_type="impression", ts=start,
                             value=None, request_id=request, position=pos, propensity=0.5, policy_version="v1",
                             action_id=r % 27))
        rows.append(dict(user_id=f"u{r % 7}", item_id=f"i{r % 5}", event_type="click",
                         ts=start + timedelta(hours=1 + r % 30), value=None, request_id=request, position=None,
                         propensity=None, policy_version=None, action_id=None))
        rows.append(dict(user_id=f"u{r % 7}", item_id=f"i{1 + r % 5}", event_type="rating",
                         ts=start + timedelta(hours=2 + r % 29), value=float(1 + r % 5), request_id=request,
                         position=None, propensity=None, policy_version=None, action_id=None))
        rows.append(dict(user_id=f"u{r % 7}", item_id=f"i{2 + r % 5}", event_type="dwell",
                         ts=start + timedelta(minutes=5), value=float(rng.lognormal(1.0, 2.5)), request_id=request,
                         position=None, propensity=None, policy_version=None, action_id=None))
    for h in (-50, -2, 5, 30):  # rows without a request, before and after SINCE (one carries an action)
        rows.append(dict(user_id="u9", item_id="i9", event_type="view", ts=SINCE + timedelta(hours=h), value=12.0,
                         request_id=None, position=None, propensity=None, policy_version=None, action_id=3))
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as the valid events file (its times UTC, as the contract writes them); the times go through
    Arrow as UTC wall times (pyarrow's ``from_pandas`` of a zoned column warns under pandas 3)."""
    table = pa.Table.from_pandas(frame.assign(ts=frame["ts"].dt.tz_convert(None)), preserve_index=False)
    at = table.schema.get_field_index("ts")
    table = table.set_column(at, "ts", table.column("ts").cast(pa.timestamp("us", tz="UTC")))
    pq.write_table(table, path, row_group_size=17)
    return path


def _same(got: dict, want: dict) -> bool:
    """The same report to the last bit (NaN, a PSI without a category on one side, equal to itself)."""
    return json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


def _weeks(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    week = Weeks.of(END, DAYS).of_times(frame["ts"])
    return frame[week == 0], frame[week == 1]


def _whole(path: Path, settings: RewardSettings | None = None) -> dict:
    """The report as computed from the whole file's frames (the drift stage before stop 41): each week's rows,
    the slates (each request's first row in the file) and ``impression_rewards`` of the whole window."""
    names = pq.read_schema(path).names
    whole = pq.read_table(path, columns=[c for c in COLUMNS if c in names]).to_pandas()
    ev_ref, ev_cur = _weeks(whole)
    report = {"event_mix": {"reference": shares(ev_ref["event_type"]), "current": shares(ev_cur["event_type"]),
                            "psi": categorical_psi(ev_ref["event_type"], ev_cur["event_type"])}}
    if "request_id" in whole and "action_id" in whole:
        slates = whole[whole["request_id"].notna()].drop_duplicates("request_id")
        act_ref, act_cur = _weeks(slates[slates["action_id"].notna()])
        report["action_mix"] = {"psi": categorical_psi(act_ref["action_id"], act_cur["action_id"])
                                if len(act_cur) else None,
                                "actions_reference": act_ref["action_id"].nunique(),
                                "actions_current": act_cur["action_id"].nunique()}
    else:
        report["action_mix"] = {"psi": None, "actions_reference": 0, "actions_current": 0}
    logged = "request_id" in whole and ((whole["event_type"] == "impression") & whole["request_id"].notna()).any()
    if logged:
        ref, cur = _weeks(impression_rewards(whole, settings or RewardSettings()))
        report["rewards"] = {name: {"reference": float(ref[col].mean()) if len(ref) else None,
                                    "current": float(cur[col].mean()) if len(cur) else None}
                             for name, col in (("click_rate", "clicked"), ("success_rate", "success"),
                                               ("mean_reward", "reward"))}
    else:
        report["rewards"] = {}
    return report


@pytest.mark.parametrize("bucket_rows,batch_rows", [(None, None), (7, 13), (40, 1000), (1, 5)])
def test_the_event_drift_is_the_whole_files_weeks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  bucket_rows: int | None, batch_rows: int | None) -> None:
    """Event mix, action mix and reward rates, from record batches and buckets of a few requests' rows, are
    what the whole file's frames give, to the last bit; the buckets' files are gone afterwards."""
    seen = []
    real = drift_events._bucket
    monkeypatch.setattr(drift_events, "_bucket", lambda frame, *a: seen.append(len(frame)) or real(frame, *a))
    path = _write(_events(), tmp_path / "events.parquet")
    kwargs = {k: v for k, v in (("bucket_rows", bucket_rows), ("batch_rows", batch_rows)) if v is not None}
    got = event_drift(path, END, DAYS, RewardSettings(), **kwargs)
    assert _same(got, _whole(path))
    assert got["action_mix"]["actions_current"] and got["rewards"]["mean_reward"]["current"] > 0
    assert len(seen) == 1 if bucket_rows is None else len(seen) > 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.parquet"]  # no bucket folder left


def test_the_reward_means_keep_the_whole_frames_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mean reward is summed in ``impression_rewards``' order (time, then row; ties in time across requests
    and buckets), so it is the whole frame's to the last bit; the same values in another order would not be."""
    events = _events(requests=1500, seed=5)
    tied = (events["event_type"] == "impression") & events["request_id"].isin([f"r{r}" for r in range(800, 900)])
    events.loc[tied, "ts"] = events.loc[tied, "ts"].min()  # ties in time across requests (and buckets)
    # dwell times over 16 orders of magnitude, uncapped: sums that change with the order of their terms
    dwell = events["event_type"] == "dwell"
    events.loc[dwell, "value"] = np.random.default_rng(7).lognormal(0.0, 8.0, int(dwell.sum()))
    settings = RewardSettings(dwell_per_second=1.0, dwell_cap_seconds=1e30)
    path = _write(events, tmp_path / "events.parquet")
    want = _whole(path, settings)["rewards"]["mean_reward"]
    for bucket_rows in (57, 997, 100_000):
        assert event_drift(path, END, DAYS, settings, bucket_rows=bucket_rows,
                           batch_rows=640)["rewards"]["mean_reward"] == want
    # the check can fail: the test week's rewards summed in another order give another last bit
    _, cur = _weeks(impression_rewards(pq.read_table(path).to_pandas(), settings))
    others = {float(cur["reward"].sample(frac=1.0, random_state=k).mean()) for k in range(8)}
    assert others - {want["current"]}
    assert cur["ts"].duplicated().any()


def test_requests_crossing_the_weeks_start_count_in_full(tmp_path: Path) -> None:
    """A request shown before the week before the test week and clicked inside it: its impression is outside
    both weeks, but its click is in the event mix; a request shown inside with older rows of its own keeps
    them for its reward."""
    events = _events()
    path = _write(events, tmp_path / "events.parquet")
    crossing = events[events["request_id"] == "r18"]
    assert crossing["ts"].min() < SINCE <= crossing["ts"].max()
    got = event_drift(path, END, DAYS, RewardSettings(), bucket_rows=5, batch_rows=9)
    assert _same(got, _whole(path))
    # a request shown inside the weeks whose rating sits before its impression in time and in an early batch
    late = events[events["request_id"] == "r30"].index
    events.loc[late[events.loc[late, "event_type"] == "rating"], "ts"] = SINCE - timedelta(days=2)
    path = _write(events.loc[[*late, *events.index.difference(late)]].reset_index(drop=True),
                  tmp_path / "moved.parquet")
    assert _same(event_drift(path, END, DAYS, RewardSettings(), bucket_rows=5, batch_rows=9), _whole(path))


def test_numeric_request_ids(tmp_path: Path) -> None:
    events = _events()
    events["request_id"] = events["request_id"].str[1:].astype("Int64")
    path = _write(events, tmp_path / "events.parquet")
    assert pq.read_schema(path).field("request_id").type == pa.int64()
    got = event_drift(path, END, DAYS, RewardSettings(), bucket_rows=6, batch_rows=11)
    assert _same(got, _whole(path)) and got["rewards"]["click_rate"]["current"] > 0


def test_a_window_without_requests(tmp_path: Path) -> None:
    """No request column: the event mix only (no slate, no reward); nothing is spilled."""
    events = _events()
    path = _write(events.drop(columns=["request_id"]), tmp_path / "events.parquet")
    got = event_drift(path, END, DAYS, RewardSettings())
    assert _same(got, _whole(path))
    assert got["rewards"] == {} and got["action_mix"] == {"psi": None, "actions_reference": 0, "actions_current": 0}
    assert got["event_mix"]["current"]["impression"] > 0


def test_requests_without_impressions(tmp_path: Path) -> None:
    """The e-commerce seed's layout: requests, but no impression logged: slates, and no reward rates."""
    events = _events()
    events = events[events["event_type"] != "impression"]
    path = _write(events, tmp_path / "events.parquet")
    got = event_drift(path, END, DAYS, RewardSettings(), bucket_rows=9)
    assert _same(got, _whole(path)) and got["rewards"] == {}
    assert "impression" not in got["event_mix"]["current"]


def test_no_action_column_and_no_recent_request(tmp_path: Path) -> None:
    """Without ``action_id`` there is no action mix; a window whose requests all ended before the two weeks
    has reward rates of None (the rates exist, no impression falls in a week)."""
    events = _events().drop(columns=["action_id"])
    path = _write(events, tmp_path / "events.parquet")
    got = event_drift(path, END, DAYS, RewardSettings(), bucket_rows=9)
    assert _same(got, _whole(path)) and got["action_mix"]["psi"] is None
    old = events[pd.to_datetime(events["ts"], utc=True) < SINCE - timedelta(days=2)]
    path = _write(old, tmp_path / "old.parquet")
    got = event_drift(path, END, DAYS, RewardSettings())
    assert _same(got, _whole(path))
    assert got["rewards"]["mean_reward"] == {"reference": None, "current": None}


def test_each_bucket_holds_a_share_of_the_weeks_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory: the rewards are computed one bucket of requests at a time, each about ``bucket_rows`` rows (the
    requests' hashes spread them), together the two weeks' requests' rows and no other."""
    seen = []
    real = drift_events._bucket
    monkeypatch.setattr(drift_events, "_bucket", lambda frame, *a: seen.append(frame) or real(frame, *a))
    events = _events(requests=400)
    path = _write(events, tmp_path / "events.parquet")
    event_drift(path, END, DAYS, RewardSettings(), bucket_rows=100, batch_rows=50)
    spilled = pd.concat(seen)
    in_weeks = Weeks.of(END, DAYS).of_times(events["ts"]) >= 0
    recent = set(events.loc[in_weeks & events["request_id"].notna(), "request_id"])
    assert set(spilled["request_id"]) == recent
    assert len(spilled) == events["request_id"].isin(recent).sum()
    assert len(seen) == -(-int((in_weeks & events["request_id"].notna()).sum()) // 100)
    assert max(map(len, seen)) < 2.5 * len(spilled) / len(seen)


def test_the_week_means_put_ties_in_time_back_in_row_order() -> None:
    """Rows of equal time from two buckets are summed in row order (as the whole frame sums them): here
    1e16 + 1 - 1e16 + 1 is 1.0 in row order, 2.0 in the buckets' order."""
    t = pd.Timestamp(SINCE + timedelta(hours=1))

    def part(rows: list[int], rewards: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"ts": [t] * len(rows), "_row": rows, "clicked": False, "success": True,
                             "reward": rewards})

    rates = drift_events._rates([part([0, 2], [1e16, -1e16]), part([1, 3], [1.0, 1.0])], None)
    assert rates["mean_reward"] == {"reference": 0.25, "current": None}
    assert rates["click_rate"]["reference"] == 0.0 and rates["success_rate"]["reference"] == 1.0
