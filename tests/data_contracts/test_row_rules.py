"""Each row rule quarantines exactly the row that breaks it, with the declared reason."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

from data_contracts import ContractSettings, row_rules, validate_interactions
from data_contracts.synthetic import FAULTS, inject_faults

RULES = {r.name: r for r in row_rules(ContractSettings())}


def test_every_rule_has_a_fault() -> None:
    assert set(FAULTS) == set(RULES)


@pytest.mark.parametrize("rule_name", sorted(FAULTS))
def test_one_bad_row_per_rule_is_quarantined_with_its_reason(rule_name, clean, window, settings) -> None:
    bad = {rule_name: FAULTS[rule_name]}
    table, _ = inject_faults(clean, window=window, per_rule=1, seed=3, faults=bad)
    result = validate_interactions(table, window=window, settings=settings, run_ge=False)
    assert result.quarantined.num_rows == 1
    row = result.quarantined.to_pylist()[0]
    expected = RULES[rule_name].reason + {"event_type_known": ":teleport", "source_values_converted": ":value",
                                          "ts_not_in_future": ";ts_outside_window",
                                          "ts_after_floor": ";ts_outside_window"}.get(rule_name, "")
    assert (row["reason"], row["rule"]) == (expected, rule_name)
    assert result.valid.num_rows == clean.num_rows
    assert result.valid.schema.equals(clean.schema)
    assert result.passed


def test_unknown_event_type_is_kept_verbatim_and_flagged(with_rows, window, settings) -> None:
    result = validate_interactions(with_rows({"event_type": "Teleport "}), window=window, settings=settings,
                                   run_ge=False)
    row = result.quarantined.to_pylist()[0]
    assert row["event_type"] == "Teleport "
    assert row["reason"] == "unknown_event_type:Teleport "
    assert result.summary()["reasons"] == {"unknown_event_type:Teleport ": 1}


def test_duplicates_keep_the_first_and_quarantine_the_rest(clean, with_rows, window, settings) -> None:
    first = clean["event_id"][5].as_py()
    table = with_rows({"event_id": first, "position": 1}, {"event_id": first, "position": 2})
    result = validate_interactions(table, window=window, settings=settings, run_ge=False)
    assert result.quarantined["event_id"].to_pylist() == [first, first]
    assert result.quarantined["position"].to_pylist() == [1, 2]
    assert set(result.quarantined["reason"].to_pylist()) == {"duplicate_event_id"}
    kept = result.valid.filter(pa.compute.equal(result.valid["event_id"], first))
    assert kept.num_rows == 1 and kept.to_pylist()[0] == clean.slice(5, 1).to_pylist()[0]
    record = next(e for e in result.expectations if e["name"] == "event_id_unique")
    assert (record["unexpected_count"], record["quarantined_count"]) == (3, 2)


def test_window_includes_start_and_excludes_end(with_rows, window, settings) -> None:
    start, end = window
    us = timedelta(microseconds=1)
    table = with_rows({"ts": start}, {"ts": end - us}, {"ts": end}, {"ts": start - us})
    result = validate_interactions(table, window=window, settings=settings, run_ge=False)
    assert result.quarantined["event_id"].to_pylist() == ["x2", "x3"]
    assert set(result.quarantined["reason"].to_pylist()) == {"ts_outside_window"}
    assert {"x0", "x1"} <= set(result.valid["event_id"].to_pylist())


def test_all_failing_reasons_are_joined_and_the_first_rule_named(with_rows, window, settings) -> None:
    result = validate_interactions(with_rows({"position": -1, "action_id": 27, "user_id": None}),
                                   window=window, settings=settings, run_ge=False)
    row = result.quarantined.to_pylist()[0]
    assert row["reason"] == "null_user_id;negative_position;action_id_out_of_range"
    assert row["rule"] == "user_id_not_null"
    assert result.summary()["reasons"] == {"null_user_id": 1, "negative_position": 1, "action_id_out_of_range": 1}


@pytest.mark.parametrize(
    ("change", "bad"),
    [
        ({"event_type": "skip", "value": 9.0}, False),  # the rating range applies to ratings only
        ({"event_type": "rating", "value": float("nan")}, True),  # NaN is not a rating: non_finite_value
        ({"event_type": "impression", "value": float("inf")}, True),
        ({"mood_delta": float("nan")}, True),
        ({"user_id": ""}, True),
        ({"item_id": " \t"}, True),
        ({"user_id": "u" * 256}, False),  # max_id_length 256 inclusive
        ({"user_id": "u" * 257}, True),
        ({"session_id": "s" * 257}, True),
        ({"event_type": "rating", "value": None}, False),
        ({"event_type": "rating", "value": 5.0}, False),
        ({"event_type": "rating", "value": 0.5}, True),
        ({"event_type": "view", "value": 86_400.0}, False),  # dwell/view: 0-86,400 s inclusive
        ({"event_type": "view", "value": 86_400.5}, True),
        ({"event_type": "dwell", "value": -0.5}, True),
        ({"event_type": "dwell", "value": 0.0}, False),
        ({"event_type": "complete", "value": 100.0}, False),
        ({"event_type": "complete", "value": -0.1}, True),
        ({"propensity": 1.0}, False),
        ({"propensity": 0.0}, True),  # (0, 1]
        ({"propensity": None}, False),
        ({"position": 0}, False),
        ({"action_id": 0}, False),
        ({"action_id": -1}, True),
        ({"trait_neuroticism": 0.0}, False),
        ({"trait_neuroticism": -0.01}, True),
    ],
)
def test_rule_boundaries(change, bad, with_rows, window, settings) -> None:
    result = validate_interactions(with_rows(change), window=window, settings=settings, run_ge=False)
    assert result.quarantined.num_rows == int(bad)


def test_max_dwell_seconds_is_configurable(with_rows, window) -> None:
    settings = ContractSettings(min_rows=10, max_dwell_seconds=3600.5)
    result = validate_interactions(with_rows({"event_type": "dwell", "value": 3601.0}), window=window,
                                   settings=settings, run_ge=False)
    assert result.quarantined["reason"].to_pylist() == ["dwell_out_of_range"]


def test_clean_table_passes_untouched(clean, window, settings) -> None:
    result = validate_interactions(clean, window=window, settings=settings, run_ge=False)
    assert result.valid.equals(clean)
    assert result.quarantined.num_rows == 0
    assert result.quarantined.column_names == [*clean.column_names, "source_errors", "reason", "rule"]
    summary = result.summary()
    assert (summary["rows_in"], summary["rows_valid"], summary["rows_quarantined"]) == (200, 200, 0)
    assert (summary["reasons"], summary["failed_expectations"], summary["passed"]) == ({}, [], True)


def test_missing_optional_columns_become_nulls_and_extra_columns_are_kept(clean, window, settings) -> None:
    table = clean.drop_columns(["mood", "position"]).append_column("tag_text", pa.array(["a"] * clean.num_rows))
    result = validate_interactions(table, window=window, settings=settings, run_ge=False)
    assert result.valid.schema.names == [*clean.schema.names, "tag_text"]  # the mapping's extras ride along
    assert result.valid["position"].null_count == clean.num_rows
    assert result.valid["tag_text"].to_pylist() == ["a"] * clean.num_rows


@pytest.mark.parametrize("bad_rows", [0, 1, 3, 70])  # few bad rows: zero-copy slices; many: a filter
def test_valid_rows_keep_their_order_whichever_way_they_are_cut(bad_rows, clean, window, settings) -> None:
    positions = list(range(0, 2 * bad_rows, 2))
    position = clean["position"].to_pylist()
    for i in positions:
        position[i] = -1
    table = clean.set_column(clean.schema.get_field_index("position"), "position", pa.array(position, pa.int32()))
    result = validate_interactions(table, window=window, settings=settings, run_ge=False)
    kept = [r for i, r in enumerate(clean["event_id"].to_pylist()) if i not in set(positions)]
    assert result.valid["event_id"].to_pylist() == kept
    assert result.quarantined["event_id"].to_pylist() == [clean["event_id"][i].as_py() for i in positions]
