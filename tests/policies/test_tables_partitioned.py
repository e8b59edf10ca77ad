"""The Thompson and LinUCB tables refit from per-request-day aggregates equal the local refit on the
same events (the Dask executor's tables, docs/scale-out.md); a dropped partition is caught."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from core.config.policy import BanditSettings, LinUCBSettings, RewardSettings
from features.partitioned import event_days
from models import linucb, thompson
from models.rewards import request_index, request_moves, reward_frames
from rankloop.simulator import SimulationConfig, simulate
from rankloop.tables import request_day_events
from tests.buffers import held_bytes

END = datetime(2026, 3, 16, tzinfo=UTC)
REWARDS = RewardSettings()
COLUMNS = ["user_id", "item_id", "event_type", "value", "ts", "request_id", "position", "propensity", "session_id",
           "policy_version", "action_id", "device", "content_type", "category", "mood", "time_of_day", "mood_delta",
           "trait_openness", "trait_conscientiousness", "trait_extraversion", "trait_agreeableness", "trait_neuroticism"]


def _crossing_request(events: pd.DataFrame) -> pd.DataFrame:
    """A slate shown from 23:58 into the next day, clicked and rated two days later."""
    base = events.iloc[0].to_dict()
    day = pd.Timestamp("2026-03-03 23:58", tz="UTC")
    rows = []
    for k, item in enumerate(("x1", "x2", "x3")):
        rows.append(base | {"event_id": f"cross-imp-{k}", "item_id": item, "event_type": "impression", "value": None,
                            "ts": day + pd.Timedelta(minutes=k * 2), "request_id": "cross", "position": k})
    rows.append(base | {"event_id": "cross-click", "item_id": "x3", "event_type": "click", "value": None,
                        "ts": day + pd.Timedelta(days=2), "request_id": "cross", "position": 2})
    rows.append(base | {"event_id": "cross-rate", "item_id": "x2", "event_type": "rating", "value": 5.0,
                        "ts": day + pd.Timedelta(days=2, minutes=1), "request_id": "cross", "position": 2})
    return pd.concat([events, pd.DataFrame(rows).astype(events.dtypes.to_dict())], ignore_index=True)


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    config = SimulationConfig(n_users=300, n_items=80, weeks=2, requests_per_user_week=3.0, end=END, seed=4)
    frame = pa.concat_tables(list(simulate(config))).to_pandas()
    return _crossing_request(frame)[[c for c in COLUMNS if c in frame.columns]]


@pytest.fixture(scope="module")
def day_files(events: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[date, Path]:
    folder = tmp_path_factory.mktemp("valid-days")
    days = event_days(events["ts"])
    out = {}
    for day in np.unique(days):
        d = pd.Timestamp(day).date()
        out[d] = folder / f"{d.isoformat()}.parquet"
        events[days == day].reset_index(drop=True).to_parquet(out[d])
    return out


@pytest.fixture(scope="module")
def partitions(day_files: dict[date, Path]) -> dict[date, tuple[pd.DataFrame, pd.DataFrame]]:
    """reward_frames per request day, as rankloop.tables.table_partition computes them."""
    index = {d: request_index(pd.read_parquet(p)) for d, p in day_files.items()}
    moves = request_moves(index)
    return {d: reward_frames(request_day_events(d, day_files, moves, COLUMNS), REWARDS) for d in day_files}


def _key(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.sort_values(by, kind="stable").reset_index(drop=True)


def test_request_days_reproduce_the_window_rewards(events: pd.DataFrame, partitions: dict) -> None:
    imps, slates = reward_frames(events, REWARDS)
    part_imps = pd.concat([p[0] for p in partitions.values()], ignore_index=True)
    part_slates = pd.concat([p[1] for p in partitions.values()], ignore_index=True)
    assert len(part_imps) == len(imps) and len(part_slates) == len(slates)
    keys = ["request_id", "user_id", "item_id"]
    pd.testing.assert_frame_equal(_key(part_imps, keys), _key(imps, keys), check_dtype=False)
    pd.testing.assert_frame_equal(_key(part_slates, ["request_id", "user_id"]), _key(slates, ["request_id", "user_id"]),
                                  check_dtype=False)
    crossing = part_imps[part_imps["request_id"] == "cross"].set_index("item_id")
    assert crossing.loc["x3", "clicked"] and crossing.loc["x2", "reward"] == 10.0 - 1.0  # rated 5, no click: responses two days later count
    # the crossing slate lives in one partition only: the day of its first impression
    homes = [d for d, (i, _) in partitions.items() if (i["request_id"] == "cross").any()]
    assert homes == [date(2026, 3, 3)]


def _previous_bandit(imps: pd.DataFrame, settings: BanditSettings) -> thompson.BetaTables:
    mid = pd.Timestamp(END - timedelta(days=6))
    return thompson.refit(None, imps[pd.to_datetime(imps["ts"], utc=True) < mid], settings, mid.to_pydatetime())


@pytest.mark.parametrize("half_life", [None, 3.0])
@pytest.mark.parametrize("with_champion", [False, True])
def test_thompson_from_partitions_equals_the_local_refit(events: pd.DataFrame, partitions: dict,
                                                          half_life: float | None, with_champion: bool) -> None:
    settings = BanditSettings(half_life_days=half_life)
    imps = reward_frames(events, REWARDS)[0]
    previous = _previous_bandit(imps, settings) if with_champion else None
    since = previous.data_end if previous else None
    local = thompson.refit(previous, imps, settings, END)
    counts = thompson.combine_counts([thompson.beta_counts(p[0], settings, END, since) for p in partitions.values()])
    combined = thompson.refit_from_counts(previous, counts, settings, END)
    for name in ("items", "user_items"):
        a, b = getattr(combined, name), getattr(local, name)
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), rtol=1e-12, atol=1e-12)
    assert combined.data_end == local.data_end and combined.fitted_at == local.fitted_at
    np.testing.assert_allclose(combined.mean(["x3", *local.items["item_id"][:5]]), local.mean(["x3", *local.items["item_id"][:5]]))


def test_thompson_misses_a_dropped_partition(events: pd.DataFrame, partitions: dict) -> None:
    settings = BanditSettings()
    local = thompson.refit(None, reward_frames(events, REWARDS)[0], settings, END)
    parts = [thompson.beta_counts(p[0], settings, END) for p in partitions.values()]
    dropped = thompson.refit_from_counts(None, thompson.combine_counts(parts[:3] + parts[4:]), settings, END)
    assert dropped.items["successes"].sum() + dropped.items["failures"].sum() < \
        local.items["successes"].sum() + local.items["failures"].sum()
    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(dropped.items, local.items)


@pytest.mark.parametrize("reward", ["success", "reward"])
@pytest.mark.parametrize("with_champion", [False, True])
def test_linucb_from_partitions_equals_the_local_refit(events: pd.DataFrame, partitions: dict, reward: str,
                                                        with_champion: bool) -> None:
    settings = LinUCBSettings(reward=reward)
    imps = reward_frames(events, REWARDS)[0]
    previous = None
    if with_champion:
        mid = pd.Timestamp(END - timedelta(days=6))
        early = imps[pd.to_datetime(imps["ts"], utc=True) < mid]
        previous = linucb.refit(None, early[early["device"] != "tablet"], settings, mid.to_pydatetime())
    since = previous.data_end if previous else None
    local = linucb.refit(previous, imps, settings, END)
    stats = linucb.combine_stats([linucb.arm_context_stats(p[0], settings, END, since) for p in partitions.values()])
    combined = linucb.refit_from_stats(previous, stats, settings, END)
    assert combined.arms == local.arms and combined.encoding == local.encoding
    np.testing.assert_array_equal(combined.a, local.a)  # counts: exact
    np.testing.assert_allclose(combined.b, local.b, rtol=1e-12, atol=1e-9)
    assert combined.data_end == local.data_end
    context = {"device": "mobile", "time_of_day": "evening", "content_type": "music"}
    np.testing.assert_allclose(combined.scores(context, list(local.arms)), local.scores(context, list(local.arms)))


def test_linucb_misses_a_dropped_partition(events: pd.DataFrame, partitions: dict) -> None:
    settings = LinUCBSettings()
    local = linucb.refit(None, reward_frames(events, REWARDS)[0], settings, END)
    parts = [linucb.arm_context_stats(p[0], settings, END) for p in partitions.values()]
    dropped = linucb.refit_from_stats(None, linucb.combine_stats(parts[1:]), settings, END)
    assert dropped.a.shape != local.a.shape or not np.array_equal(dropped.a, local.a)


def test_partition_statistics_refuse_bad_input(partitions: dict) -> None:
    imps = next(iter(partitions.values()))[0]
    with pytest.raises(ValueError, match="timezone-aware"):
        thompson.beta_counts(imps, BanditSettings(), END.replace(tzinfo=None))
    with pytest.raises(ValueError, match="lack column"):
        linucb.arm_context_stats(imps.drop(columns=["success"]), LinUCBSettings(), END)
    stats = linucb.arm_context_stats(imps, LinUCBSettings(), END)
    with pytest.raises(ValueError, match="different context features"):
        linucb.combine_stats([stats, replace(stats, features=("device",))])
    with pytest.raises(ValueError, match="at least one"):
        thompson.combine_counts([])


# --- what the judges read: summed per request day, never the window's trials -----------------------
def _window_item_model(pre: pd.DataFrame) -> pd.Series:
    """The DR reward model as it was computed from the window's frame of trials before the test week."""
    grouped = pre.groupby("item_id")["success"].agg(["sum", "count"])
    prior = float(pre["success"].mean()) if len(pre) else 0.0
    return (grouped["sum"] + 10 * prior) / (grouped["count"] + 10)


def test_trial_summaries_of_request_days_add_up_to_the_window(events: pd.DataFrame, partitions: dict) -> None:
    from core.settings import Settings
    from rankloop.tables import TOP, combine_trials, summarise_trials

    settings = Settings()
    imps = reward_frames(events, REWARDS)[0]
    window = summarise_trials(imps, settings, END)
    days = [summarise_trials(p[0], settings, END) for p in partitions.values()]
    combined = combine_trials(days)
    pd.testing.assert_frame_equal(combined.items, window.items)
    # logged impressions on one day are enough for the trials to count as logged
    assert combine_trials([replace(s, logged=False) if i else s for i, s in enumerate(days)]).logged
    assert not combine_trials([replace(s, logged=False) for s in days]).logged
    assert (combined.trials, combined.successes, combined.logged) == (window.trials, window.successes, True)
    assert window.trials == len(imps) and window.successes == int(imps["success"].sum())
    assert combined.reward_sum == pytest.approx(float(imps["reward"].sum()), rel=1e-12)
    # the DR reward model and the arms, from the counts, exactly as from the frame
    ts = pd.to_datetime(imps["ts"], utc=True)
    test_start = pd.Timestamp(settings.ranker.test_start(END))
    pd.testing.assert_series_equal(combined.item_model(), _window_item_model(imps[ts < test_start]),
                                   check_names=False)
    assert combined.item_ids() == sorted(imps["item_id"].unique())
    # the test week's top-slot trials: every one, in ts order
    expected = imps[(ts >= test_start) & (imps["position"] == TOP)]
    assert len(combined.test) == len(expected) > 0 and (combined.test["position"] == TOP).all()
    assert combined.test["ts"].is_monotonic_increasing
    keys = ["ts", "item_id", "propensity"]
    pd.testing.assert_frame_equal(_key(combined.test, keys), _key(expected[list(combined.test.columns)], keys),
                                  check_dtype=False)


@pytest.mark.parametrize("kind", ["bandit", "linucb"])
def test_judging_from_request_days_equals_judging_the_window(events: pd.DataFrame, partitions: dict, kind: str,
                                                             tmp_path: Path) -> None:
    """What the tables stage judges (day summaries, refits from day statistics: for the bandit, the
    stage's own refits from parked day files, the challenger without user x item rows) is what judging
    the window's frame gives: the same OPE figures and metrics."""
    from core.settings import Settings
    from rankloop import tables

    settings = Settings(ope={"min_ess": 1})  # a small window: judged all the same
    imps = reward_frames(events, REWARDS)[0]
    test_start = pd.Timestamp(settings.ranker.test_start(END))
    window = getattr(tables, f"judge_{kind}")(imps, None, None, settings, END)
    days = [p[0] for p in partitions.values()]
    pre = [d[pd.to_datetime(d["ts"], utc=True) < test_start] for d in days]
    if kind == "bandit":
        def fit(frames: list[pd.DataFrame]) -> thompson.BetaTables:
            which = "pre" if frames is pre else "all"
            parked = [tables._park(thompson.beta_counts(f, settings.bandit, END), tmp_path / f"{which}-{i}.parquet")
                      for i, f in enumerate(frames)]
            # parked: the rows on disk only (an empty view of them would keep every day's rows in memory)
            assert all(len(p.counts.user_items) == 0 and held_bytes(p.counts.user_items) < 1_000 for p in parked)
            return tables.refit_bandit(None, parked, which, settings.bandit, END)
    else:
        fit = lambda frames: linucb.refit_from_stats(  # noqa: E731
            None, linucb.combine_stats([linucb.arm_context_stats(f, settings.linucb, END) for f in frames]),
            settings.linucb, END)
    trials = tables.combine_trials([tables.summarise_trials(d, settings, END) for d in days])
    fitted = fit(pre), fit(days)
    by_day = getattr(tables, f"judge_{kind}_fitted")(trials, fitted, None, None, settings)
    if kind == "bandit":  # the challenger without user x item rows, the final table with them
        assert len(fitted[0].user_items) == 0 and len(fitted[1].user_items) > 0
    assert window.ope.verdict == by_day.ope.verdict == "ok"
    for name, value in window.ope.estimates.items():
        assert by_day.ope.estimates[name] == pytest.approx(value, rel=1e-9)
        np.testing.assert_allclose(by_day.ope.intervals[name], window.ope.intervals[name], rtol=1e-9)
    assert by_day.metrics.keys() == window.metrics.keys()
    for name, value in window.metrics.items():
        assert by_day.metrics[name] == pytest.approx(value, rel=1e-12), name
    assert window.metrics["trials"] == len(imps) and window.metrics["trials_logged"] == 1.0


def test_the_first_thompson_fit_keeps_the_counts_as_grouped(partitions: dict) -> None:
    """With no champion the refit takes the combined counts as they are (one row per key, sorted): the
    same table as adding them to empty tables and grouping again, without the second group-by."""
    settings = BanditSettings()
    counts = thompson.combine_counts([thompson.beta_counts(p[0], settings, END) for p in partitions.values()])
    fitted = thompson.refit_from_counts(None, counts, settings, END)
    empty = thompson.empty_tables(settings, END)
    for name, keys in (("items", ["item_id"]), ("user_items", ["user_id", "item_id"])):
        both = pd.concat([getattr(empty, name), getattr(counts, name)], ignore_index=True)
        expected = both.groupby(keys, as_index=False)[["successes", "failures"]].sum()
        pd.testing.assert_frame_equal(getattr(fitted, name), expected)
    # counts that are not one row per key (built by hand) are still grouped
    doubled = replace(counts, user_items=pd.concat([counts.user_items, counts.user_items.iloc[:5]], ignore_index=True))
    twice = thompson.refit_from_counts(None, doubled, settings, END).user_items
    assert len(twice) == len(fitted.user_items) and not twice.duplicated(["user_id", "item_id"]).any()
    first = fitted.user_items.merge(counts.user_items.iloc[:5][["user_id", "item_id"]])
    again = twice.merge(counts.user_items.iloc[:5][["user_id", "item_id"]])
    np.testing.assert_allclose(again["successes"], 2 * first["successes"])


def test_a_window_whose_days_hold_no_slate_skips_the_q_table(events: pd.DataFrame, tmp_path: Path) -> None:
    """Every request day's slates file empty: the window's slates are empty and the Q table's judge skips
    it; with one day's slates the judge reads those."""
    from types import SimpleNamespace

    from core.settings import Settings
    from rankloop.tables import NO_TRIALS, Skipped, _slates, judge_qtable

    settings = Settings()
    slates = reward_frames(events, RewardSettings())[1]
    paths = []
    for n, rows in enumerate((slates.iloc[:0], slates.iloc[:0], slates)):
        paths.append(tmp_path / f"{n}.slates.parquet")
        rows.to_parquet(paths[-1], index=False)
    empty = _slates([SimpleNamespace(slates_path=p) for p in paths[:2]], settings)
    assert len(empty) == 0
    end = pd.Timestamp(events["ts"].max()).ceil("D").to_pydatetime()
    assert judge_qtable(empty, None, None, settings, end) == Skipped("qtable", NO_TRIALS)
    held = _slates([SimpleNamespace(slates_path=p) for p in paths], settings)
    assert len(held) == len(slates) and held["ts"].is_monotonic_increasing
