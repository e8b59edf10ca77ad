"""The issue's catalogue of bad inputs: one case per defect, each caught with its reason code, nothing lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core.schema import INTERACTION_SCHEMA
from data_contracts import ContractSettings, check_interactions
from data_contracts.synthetic import synthetic_interactions

NOW = datetime(2026, 3, 1, tzinfo=UTC)  # after the test window: nothing clean is "in the future"


def _check(table: pa.Table, window, settings, **kwargs):
    result = check_interactions(table, window=window, settings=settings, run_ge=False, now=NOW, **kwargs)
    s = result.summary()
    assert s["rows_in"] == table.num_rows == s["rows_valid"] + s["rows_quarantined"]  # nothing lost
    return result


def _only(result, reason: str, event_ids: list[str]) -> None:
    assert result.quarantined["event_id"].to_pylist() == event_ids
    assert set(result.quarantined["reason"].to_pylist()) == {reason}
    assert result.summary()["reasons"] == {reason: len(event_ids)}


def test_a_clean_batch_passes_with_zero_quarantined(clean, window, settings) -> None:
    result = _check(clean, window, settings)
    assert result.quarantined.num_rows == 0 and result.gate_passed and result.passed
    assert result.valid.equals(clean)


def test_duplicate_event_id_keeps_the_first(clean, with_rows, window, settings) -> None:
    first = clean["event_id"][3].as_py()
    _only(_check(with_rows({"event_id": first}), window, settings), "duplicate_event_id", [first])


def test_duplicate_by_user_item_type_ts_under_new_event_ids(clean, window, settings) -> None:
    retry = clean.slice(10, 2).to_pylist()
    for i, row in enumerate(retry):
        row["event_id"] = f"retry-{i}"  # a client retry: same event, new id
    table = pa.concat_tables([clean, pa.Table.from_pylist(retry, schema=INTERACTION_SCHEMA)])
    result = _check(table, window, settings)
    _only(result, "duplicate_event", ["retry-0", "retry-1"])
    kept = set(result.valid["event_id"].to_pylist())
    assert {clean["event_id"][10].as_py(), clean["event_id"][11].as_py()} <= kept


@pytest.mark.parametrize("event_type", ["click", "save", "purchase", "cart_add"])
def test_engagement_with_no_impression_in_session_or_request(event_type, with_rows, window, settings) -> None:
    table = with_rows({"event_type": event_type, "value": None, "session_id": "s-none", "request_id": "r-none",
                       "item_id": "i-never-shown"})
    _only(_check(table, window, settings), "no_impression", ["x0"])


def _exposure_log(window, gaps_days: dict[str, float]) -> pa.Table:
    """u1 views item i-<name> once; then purchases it ``gap`` days later in another session."""
    base = {c: None for c in INTERACTION_SCHEMA.names}
    t0 = window[0] + timedelta(days=1)
    rows = [{**base, "event_id": f"view-{k}", "user_id": "u1", "item_id": f"i-{k}", "event_type": "view",
             "value": 5.0, "ts": t0, "session_id": "monday"} for k in gaps_days]
    rows += [{**base, "event_id": f"buy-{k}", "user_id": "u1", "item_id": f"i-{k}", "event_type": "purchase",
              "ts": t0 + timedelta(days=gap), "session_id": f"checkout-{k}"} for k, gap in gaps_days.items()]
    return pa.Table.from_pylist(rows, schema=INTERACTION_SCHEMA)


def test_a_purchase_in_a_later_session_follows_a_view_within_the_lookback(window) -> None:
    table = _exposure_log(window, {"same-day": 0.01, "three-days": 3.0, "seven-days": 6.99, "eight-days": 8.0,
                                   "before-the-view": -0.5})
    settings = ContractSettings(min_rows=1, max_quarantine_fraction=1.0)
    _only(_check(table, window, settings), "no_impression", ["buy-eight-days", "buy-before-the-view"])
    longer = ContractSettings(min_rows=1, max_quarantine_fraction=1.0, exposure_lookback_days=10)
    _only(_check(table, window, longer), "no_impression", ["buy-before-the-view"])


def test_an_exposure_logged_seconds_after_the_engagement_still_counts(window) -> None:
    table = _exposure_log(window, {"skewed": -30 / 86_400, "late": -300 / 86_400})
    settings = ContractSettings(min_rows=1, max_quarantine_fraction=1.0)  # clock skew 60 s by default
    _only(_check(table, window, settings), "no_impression", ["buy-late"])


def test_prior_exposures_from_before_the_window_count(window) -> None:
    base = {c: None for c in INTERACTION_SCHEMA.names}
    buy = {**base, "event_id": "buy", "user_id": "u1", "item_id": "i1", "event_type": "purchase",
           "ts": window[0] + timedelta(hours=2), "session_id": "s2"}
    seen = {**base, "event_id": "seen", "user_id": "u1", "item_id": "i2", "event_type": "view",
            "ts": window[0] + timedelta(hours=1), "session_id": "s1"}
    table = pa.Table.from_pylist([buy, seen], schema=INTERACTION_SCHEMA)
    settings = ContractSettings(min_rows=1, max_quarantine_fraction=1.0)
    _only(_check(table, window, settings), "no_impression", ["buy"])
    prior = pa.table({"user_id": ["u1"], "item_id": ["i1"], "ts": [window[0] - timedelta(days=2)]})
    assert _check(table, window, settings, prior_exposures=prior).quarantined.num_rows == 0


def test_click_matched_by_request_when_the_session_differs(clean, window, settings) -> None:
    shown = clean.filter(pc.equal(clean["event_type"], "impression")).slice(0, 1).to_pylist()[0]
    click = {**shown, "event_id": "c1", "event_type": "click", "session_id": "other", "propensity": None,
             "ts": shown["ts"] + timedelta(seconds=5)}
    table = pa.concat_tables([clean, pa.Table.from_pylist([click], schema=INTERACTION_SCHEMA)])
    assert _check(table, window, settings).quarantined.num_rows == 0


def test_view_only_source_a_view_is_the_exposure(window, settings) -> None:
    base = {c: None for c in INTERACTION_SCHEMA.names}
    ts = window[0] + timedelta(days=1)
    rows = [{**base, "event_id": f"v{i}", "user_id": "u1", "item_id": f"i{i}", "event_type": "view", "value": 30.0,
             "ts": ts + timedelta(minutes=i), "session_id": "s1"} for i in range(20)]
    rows += [{**base, "event_id": "c-ok", "user_id": "u1", "item_id": "i3", "event_type": "click",
              "ts": ts + timedelta(hours=1), "session_id": "s1"},
             {**base, "event_id": "c-bad", "user_id": "u1", "item_id": "i99", "event_type": "click",
              "ts": ts + timedelta(hours=1), "session_id": "s1"},
             # neither session nor request: an exposure of (user, item) in the lookback before it suffices
             {**base, "event_id": "c-nokeys", "user_id": "u1", "item_id": "i4", "event_type": "purchase",
              "ts": ts + timedelta(hours=2)}]
    table = pa.Table.from_pylist(rows, schema=INTERACTION_SCHEMA)
    _only(_check(table, window, ContractSettings(min_rows=1, max_quarantine_fraction=0.5)), "no_impression",
          ["c-bad"])


def test_negative_dwell(with_rows, window, settings) -> None:
    _only(_check(with_rows({"event_type": "dwell", "value": -12.0}), window, settings), "dwell_out_of_range", ["x0"])


def test_dwell_above_a_day(with_rows, window, settings) -> None:
    table = with_rows({"event_type": "dwell", "value": 86_400.0}, {"event_type": "dwell", "value": 86_401.0})
    _only(_check(table, window, settings), "dwell_out_of_range", ["x1"])


def test_ratings_of_0_and_7(with_rows, window, settings) -> None:
    table = with_rows({"event_type": "rating", "value": 0.0}, {"event_type": "rating", "value": 7.0},
                      {"event_type": "rating", "value": 1.0})
    _only(_check(table, window, settings), "rating_out_of_range", ["x0", "x1"])


def test_timestamp_in_the_future_is_its_own_reason(clean, window, settings) -> None:
    # A window that reaches past "now" (e.g. an ad hoc check of this week): a future row is inside the
    # window, so ts_in_future is its only reason.
    now = window[1] - timedelta(days=2)
    base = clean.slice(1, 1).to_pylist()[0]
    future = {**base, "event_id": "f1", "ts": now + timedelta(hours=1)}
    table = pa.concat_tables([clean.filter(pc.less_equal(clean["ts"], pa.scalar(now, clean["ts"].type))),
                              pa.Table.from_pylist([future], schema=INTERACTION_SCHEMA)])
    result = check_interactions(table, window=window, settings=settings, run_ge=True, now=now)
    _only(result, "ts_in_future", ["f1"])
    record = next(e for e in result.expectations if e["name"] == "ts_not_in_future")
    assert (record["engine"], record["unexpected_count"]) == ("great_expectations", 1)  # GE agrees


def test_future_timestamp_in_a_past_window_names_both_reasons(with_rows, window, settings) -> None:
    result = _check(with_rows({"ts": NOW + timedelta(days=3)}), window, settings)
    row = result.quarantined.to_pylist()[0]
    assert (row["reason"], row["rule"]) == ("ts_in_future;ts_outside_window", "ts_not_in_future")


def test_renamed_event_type(clean, window, settings) -> None:
    # A frontend release renames click -> tap: every renamed row is quarantined under its value, and
    # above 1% the gate fails naming the rule.
    renamed = pc.if_else(pc.equal(clean["event_type"], "click"), "tap", clean["event_type"])
    table = clean.set_column(clean.schema.get_field_index("event_type"), "event_type", renamed)
    taps = pc.sum(pc.equal(renamed, "tap")).as_py()
    result = _check(table, window, ContractSettings(min_rows=10))
    assert result.summary()["reasons"] == {"unknown_event_type:tap": taps}
    assert not result.gate_passed and [r["name"] for r in result.failures] == ["max_quarantine_fraction"]
    assert "event_type_known" in str(result.violation(ContractSettings(min_rows=10)))


def _daily(window, per_day: int, seed: int = 1) -> pa.Table:
    """Synthetic rows spread evenly enough that every day holds about ``per_day`` rows."""
    days = (window[1] - window[0]).days
    return synthetic_interactions(per_day * days, window=window, seed=seed)


def test_half_volume_day_inside_the_window(window) -> None:
    settings = ContractSettings(day_volume_min_rows=100)
    table = _daily(window, 300)
    day = datetime(2026, 1, 20, tzinfo=UTC)
    ts = table["ts"]
    on_day = pc.and_(pc.greater_equal(ts, pa.scalar(day, ts.type)),
                     pc.less(ts, pa.scalar(day + timedelta(days=1), ts.type))).to_numpy(zero_copy_only=False)
    drop = on_day & (pa.array(range(table.num_rows)).to_numpy() % 2 == 0)  # half of that day's rows
    halved = table.filter(pa.array(~drop))
    assert _check(table, window, settings).gate_passed
    result = _check(halved, window, settings)
    assert not result.gate_passed and [r["name"] for r in result.failures] == ["day_volume_in_window"]
    record = result.failures[0]
    assert record["days"] == ["2026-01-20"] and record["observed_value"] < 0.6
    assert "2026-01-20" in str(result.violation(settings)) and "below 60% of the median day" in record["message"]
    # the outage also lost impressions: their clicks are quarantined, nothing else is
    assert set(result.summary()["reasons"]) <= {"no_impression"}


def test_volume_change_against_the_previous_run(window) -> None:
    settings = ContractSettings(day_volume_min_rows=10**9)
    previous = _check(_daily(window, 200, seed=2), window, settings).profile
    later = (window[0] + timedelta(days=7), window[1] + timedelta(days=7))
    now_table = _daily(later, 80, seed=3)
    result = _check(now_table, later, settings, previous=previous)
    failure = {r["name"]: r for r in result.failures}["volume_change_vs_previous"]
    assert failure["observed_value"] == pytest.approx(-0.6, abs=0.05) and failure["allowed"] == 0.5
    assert failure["previous"]["window"] == [window[0].isoformat(), window[1].isoformat()]
    assert "allowed ±50%" in failure["message"] and "previous window [2026-01-05" in failure["message"]
    assert _check(_daily(later, 190, seed=4), later, settings, previous=previous).gate_passed


def test_event_mix_shift_against_the_previous_run(window) -> None:
    settings = ContractSettings(day_volume_min_rows=10**9)
    table = _daily(window, 100)
    previous = _check(table, window, settings).profile
    impressions = pc.equal(table["event_type"], "impression").to_numpy(zero_copy_only=False)
    keep = ~impressions | (pa.array(range(table.num_rows)).to_numpy() % 3 == 0)  # 2/3 of impressions vanish
    later = (window[0] + timedelta(days=7), window[1] + timedelta(days=7))
    shifted = table.filter(pa.array(keep))
    shifted = shifted.set_column(shifted.schema.get_field_index("ts"), "ts",
                                 pc.add(shifted["ts"], pa.scalar(timedelta(days=7))))
    shifted = shifted.filter(pc.invert(pc.is_in(shifted["event_type"], pa.array(["click", "save", "purchase"]))))
    result = _check(shifted, later, settings, previous=previous)
    names = [r["name"] for r in result.failures]
    assert "event_mix_shift_vs_previous" in names
    record = next(r for r in result.failures if r["name"] == "event_mix_shift_vs_previous")
    assert record["observed_value"] > 0.1 and "impression" in record["message"]
