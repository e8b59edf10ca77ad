"""The drift report reads the window's recent rows only, and gets what the whole window gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config.policy import RewardSettings
from models.rewards import impression_rewards
from rankloop.drift import _recent_events

SINCE = datetime(2026, 3, 9, tzinfo=UTC)
COLUMNS = ["user_id", "item_id", "event_type", "ts", "value", "request_id", "position", "propensity",
           "policy_version", "action_id"]


def _events() -> pd.DataFrame:
    t = SINCE - timedelta(days=3)
    rows = []
    for r in range(40):  # requests every 3.6 hours around SINCE; the responses come 1-30 hours later
        start = t + timedelta(hours=3.6 * r)
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
    for h in (-50, -2, 5, 30):  # rows without a request, before and after SINCE
        rows.append(dict(user_id="u9", item_id="i9", event_type="view", ts=SINCE + timedelta(hours=h), value=12.0,
                         request_id=None, position=None, propensity=None, policy_version=None, action_id=3))
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)  # file order is not ts order


def _recent(frame: pd.DataFrame, column: str = "ts") -> pd.DataFrame:
    return frame[pd.to_datetime(frame[column], utc=True) >= SINCE].reset_index(drop=True)


def test_recent_rows_give_the_whole_windows_rewards_mix_and_slates(tmp_path: Path) -> None:
    events = _events()
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), path, row_group_size=17)
    whole = pq.read_table(path, columns=COLUMNS).to_pandas()
    sub, window = _recent_events(path, SINCE, COLUMNS)
    assert window == {"has_requests": True, "has_impressions": True}
    assert 0 < len(sub) < len(whole)  # older rows were left out
    pd.testing.assert_frame_equal(_recent(sub), _recent(whole))  # every recent row, in file order
    settings = RewardSettings()
    pd.testing.assert_frame_equal(_recent(impression_rewards(sub, settings)),
                                  _recent(impression_rewards(whole, settings)))
    # a request that started before SINCE and got its click after it: its reward is counted in full
    crossing = whole[(whole["request_id"] == "r18")]
    assert crossing["ts"].min() < SINCE <= crossing["ts"].max()
    pd.testing.assert_frame_equal(_recent(sub.drop_duplicates("request_id")),
                                  _recent(whole.drop_duplicates("request_id")))


def test_a_window_without_requests_says_so(tmp_path: Path) -> None:
    events = _events()
    events = events[events["request_id"].isna()].drop(columns=["request_id"])
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), path)
    sub, window = _recent_events(path, SINCE, COLUMNS)
    assert window == {"has_requests": False, "has_impressions": False}
    whole = pq.read_table(path).to_pandas()
    recent = pd.to_datetime(whole["ts"], utc=True) >= SINCE
    expected = whole[recent | (np.arange(len(whole)) == 0)]  # the recent rows and the first without a request
    assert "request_id" not in sub.columns and len(sub) == len(expected) == 2 + int(not recent.iloc[0])
    assert sub["ts"].tolist() == expected["ts"].tolist()


@pytest.mark.parametrize("bucket_rows", [None, 7, 40])
def test_the_event_drift_is_the_whole_files_weeks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  bucket_rows: int | None) -> None:
    """The report's event mix, action mix and reward rates, from the recent rows with only the columns each
    reads, are what the whole file's frames give (the way the report was computed before), to the last bit:
    also with the rewards computed over buckets of a few requests' rows (``bucket_rows`` per bucket)."""
    from models.drift import categorical_psi, shares
    from rankloop import drift
    from rankloop.drift import _event_drift, _weeks

    if bucket_rows is not None:
        monkeypatch.setattr(drift, "_REWARD_BUCKET_ROWS", bucket_rows)
        calls = []
        real = drift._rewards_by_request_bucket
        monkeypatch.setattr(drift, "_rewards_by_request_bucket", lambda *a: calls.append(1) or real(*a))
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(_events(), preserve_index=False), path, row_group_size=17)
    end, days, settings = SINCE + timedelta(days=4), 2, RewardSettings()
    got = _event_drift(path, SINCE, end, days, settings)

    whole = pq.read_table(path, columns=COLUMNS).to_pandas()
    ev_ref, ev_cur = _weeks(whole, end, days)
    slates = whole.drop_duplicates("request_id")
    act_ref, act_cur = _weeks(slates[slates["action_id"].notna()], end, days)
    ref, cur = _weeks(impression_rewards(whole, settings), end, days)
    assert got["event_mix"] == {"reference": shares(ev_ref["event_type"]), "current": shares(ev_cur["event_type"]),
                                "psi": categorical_psi(ev_ref["event_type"], ev_cur["event_type"])}
    assert got["action_mix"] == {"psi": categorical_psi(act_ref["action_id"], act_cur["action_id"]),
                                 "actions_reference": act_ref["action_id"].nunique(),
                                 "actions_current": act_cur["action_id"].nunique()}
    assert got["rewards"] == {name: {"reference": float(ref[col].mean()), "current": float(cur[col].mean())}
                              for name, col in (("click_rate", "clicked"), ("success_rate", "success"),
                                                ("mean_reward", "reward"))}
    assert len(ev_ref) and len(ev_cur) and len(act_cur) and got["rewards"]["mean_reward"]["current"] > 0
    if bucket_rows is not None:
        assert calls == [1]


@pytest.mark.parametrize("coded", [True, False])
def test_rewards_by_bucket_of_requests_are_the_whole_frames_in_its_order(tmp_path: Path, monkeypatch, coded) -> None:
    """Bucketed by request (ids as codes or text), the rewards are ``impression_rewards``' rows: the same
    times, values and order (by time, then row; ties in time included)."""
    from rankloop import drift

    events = _events()
    tied = (events["event_type"] == "impression") & events["request_id"].isin([f"r{r}" for r in range(12)])
    events.loc[tied, "ts"] = events.loc[tied, "ts"].min()  # ties in time across requests (and buckets)
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), path, row_group_size=17)
    frame, _ = _recent_events(path, SINCE - timedelta(days=30), COLUMNS,
                              coded=("user_id", "item_id", "request_id") if coded else ())
    settings = RewardSettings()
    want = impression_rewards(frame, settings, carry=())[["ts", "reward", "clicked", "success"]]
    for rows in (3, 11, 10_000):
        monkeypatch.setattr(drift, "_REWARD_BUCKET_ROWS", rows)
        pd.testing.assert_frame_equal(drift._rewards_by_request_bucket(frame, settings), want, check_exact=True)
    assert want["clicked"].any() and want["ts"].duplicated().any() and len(want) > 50


def test_coded_ids_are_the_same_rows_and_rewards(tmp_path: Path) -> None:
    """Ids read as codes (what the drift's events part does): the same values, and the same rewards."""
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(_events(), preserve_index=False), path, row_group_size=17)
    coded = ("user_id", "item_id", "request_id")
    text, _ = _recent_events(path, SINCE, COLUMNS)
    codes, _ = _recent_events(path, SINCE, COLUMNS, coded=coded)
    assert all(isinstance(codes[c].dtype, pd.CategoricalDtype) for c in coded)
    pd.testing.assert_frame_equal(codes.assign(**{c: codes[c].astype(text[c].dtype) for c in coded}), text)
    settings = RewardSettings()
    want, got = impression_rewards(text, settings), impression_rewards(codes, settings)
    pd.testing.assert_frame_equal(got.assign(**{c: got[c].astype(want[c].dtype) for c in coded}), want)
    assert want["clicked"].any() and len(want) > 5


def test_rewards_carrying_nothing_are_the_same_rewards() -> None:
    """``carry=()`` (the drift reads only the rewards): the same rows, keys, times and rewards."""
    events, settings = _events(), RewardSettings()
    full = impression_rewards(events, settings)
    lean = impression_rewards(events, settings, carry=())
    assert list(lean.columns) == ["request_id", "user_id", "item_id", "ts", "reward", "clicked", "success"]
    pd.testing.assert_frame_equal(lean, full[list(lean.columns)])
    assert {"position", "session_id", "policy_version"} <= set(full.columns) and full["clicked"].any()
