"""Fatal contract breaches raise ContractViolation naming the column/rule, the counts and offenders."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from core.errors import ContractViolation, Reason
from data_contracts import ContractSettings, validate_interactions


def test_missing_required_columns_are_all_named(clean, window, settings) -> None:
    with pytest.raises(ContractViolation) as info:
        validate_interactions(clean.drop_columns(["user_id", "ts"]), window=window, settings=settings)
    err = info.value
    assert err.reason is Reason.CONTRACT
    assert err.details["missing_columns"] == ["user_id", "ts"]
    assert "missing required column(s) ['user_id', 'ts']" in str(err)
    assert "expected columns ['event_id', 'user_id'" in str(err) and "found ['event_id', 'item_id'" in str(err)


def test_wrong_column_type_is_named_with_expected_and_found(clean, window, settings) -> None:
    table = clean.set_column(clean.schema.get_field_index("position"), "position",
                             clean["position"].cast(pa.int64()))
    with pytest.raises(ContractViolation) as info:
        validate_interactions(table, window=window, settings=settings)
    assert info.value.details["wrong_types"] == {"position": ("int32", "int64")}
    assert "position" in str(info.value) and "expected int32, found int64" in str(info.value)


def test_empty_extract_is_reason_empty(clean, window, settings) -> None:
    with pytest.raises(ContractViolation) as info:
        validate_interactions(clean.slice(0, 0), window=window, settings=settings)
    assert info.value.reason is Reason.EMPTY
    assert "empty (0 rows)" in str(info.value)


def test_quarantine_fraction_above_max_names_rule_counts_and_event_ids(with_rows, window) -> None:
    table = with_rows(*({"position": -1} for _ in range(30)))  # 30 of 230 = 13%
    settings = ContractSettings(min_rows=10, max_quarantine_fraction=0.1, example_rows=3)
    with pytest.raises(ContractViolation) as info:
        validate_interactions(table, window=window, settings=settings, run_ge=False)
    err, message = info.value, str(info.value)
    assert err.reason is Reason.CONTRACT
    assert "max_quarantine_fraction: 30 of 230 rows quarantined (13.0%), allowed at most 10.0%" in message
    assert "position_non_negative: 30 rows, e.g. event_id ['x0', 'x1', 'x2']" in message
    assert err.details["counts"]["rows_quarantined"] == 30
    assert "max_quarantine_fraction" in err.details["failed_expectations"]
    assert "position_non_negative" in err.details["failed_expectations"]
    examples = err.details["quarantined_by_rule"]["position_non_negative"]["examples"]
    assert [e["event_id"] for e in examples] == ["x0", "x1", "x2"]


def test_too_few_valid_rows(clean, window) -> None:
    settings = ContractSettings(min_rows=500)
    with pytest.raises(ContractViolation) as info:
        validate_interactions(clean, window=window, settings=settings, run_ge=False)
    assert "min_rows_after_quarantine: 200 valid rows remain of 200, need at least 500" in str(info.value)
    assert info.value.details["counts"]["rows_valid"] == 200


def test_no_exposures_fails_without_raising(clean, window, settings) -> None:
    no_exposure = clean.filter(pa.compute.is_in(clean["event_type"], pa.array(["dwell", "rating"])))
    result = validate_interactions(no_exposure, window=window, settings=settings, run_ge=False)
    assert not result.passed and result.gate_passed  # non-fatal: the gate still passes
    assert "has_exposures" in result.summary()["failed_expectations"]


@pytest.mark.parametrize(
    ("table", "window", "error"),
    [
        ("not a table", None, TypeError),
        (None, (datetime(2026, 1, 1), datetime(2026, 1, 2)), TypeError),  # naive
        (None, "2026-01-01", TypeError),
    ],
)
def test_invalid_arguments(table, window, error, clean, settings) -> None:
    with pytest.raises(error):
        validate_interactions(clean if table is None else table, window=window, settings=settings)


def test_window_start_after_end_is_a_value_error(clean, window, settings) -> None:
    with pytest.raises(ValueError, match="start must be before end"):
        validate_interactions(clean, window=(window[1], window[0]), settings=settings)
