"""Great Expectations' record agrees with the masks; GE stays quiet (no progress bars)."""

from __future__ import annotations

import logging

import pytest

from data_contracts import ContractSettings, row_rules, validate_interactions
from data_contracts.synthetic import FAULTS, inject_faults, synthetic_interactions

MASKS_ONLY = {r.name for r in row_rules(ContractSettings()) if r.check.expectation_type is None}
SETTINGS = ContractSettings(max_quarantine_fraction=0.02)  # 3 bad rows per rule: ~1.1% of 10k rows


def _seeded(window):
    clean = synthetic_interactions(10_000, window=window, seed=11)
    return inject_faults(clean, window=window, per_rule=3, seed=5)


def test_ge_counts_match_the_masks_on_10k_rows(window, capfd) -> None:
    table, injected = _seeded(window)
    result = validate_interactions(table, window=window, settings=SETTINGS, run_ge=True)
    rows = {e["name"]: e for e in result.expectations if e["engine"] == "great_expectations"}
    assert {"engagement_has_impression", "value_finite", "propensity_finite", "mood_delta_finite"} == MASKS_ONLY
    assert rows.keys().isdisjoint(MASKS_ONLY)  # no GE equivalent: the masks' record
    for name in MASKS_ONLY:
        masks_only = next(e for e in result.expectations if e["name"] == name)
        assert (masks_only["engine"], masks_only["quarantined_count"]) == ("rankloop", 3), name
    for name, count in injected.items():
        if name in MASKS_ONLY:
            continue
        record = rows[name]
        assert record["unexpected_count"] == record["mask_unexpected_count"], name
        # GE counts the kept first copy too; a future row in a past window, or a row before the floor, is
        # outside the window as well
        outside = count + injected["ts_not_in_future"] + injected["ts_after_floor"]
        expected = {"event_id_unique": count + 1, "event_key_unique": 2 * count, "ts_in_window": outside}.get(name, count)
        quarantined = outside if name == "ts_in_window" else count
        assert (record["unexpected_count"], record["quarantined_count"], record["success"]) == (
            expected, quarantined, False), name
    assert all(rows[f"{c}_exists"]["success"] for c in ("event_id", "user_id", "item_id", "event_type", "ts"))
    assert result.quarantined.num_rows == 3 * len(FAULTS)
    captured = capfd.readouterr()
    assert captured.out == ""
    assert "it/s" not in captured.err and "Calculating Metrics" not in captured.err and "%|" not in captured.err


def test_sampled_ge_keeps_exact_counts_from_the_masks(window) -> None:
    table, injected = _seeded(window)
    settings = SETTINGS.model_copy(update={"ge_max_rows": 2_000})
    result = validate_interactions(table, window=window, settings=settings, run_ge=True)
    rows = {e["name"]: e for e in result.expectations if "ge_sample" in e}
    assert set(rows) == set(injected) - MASKS_ONLY
    assert all(r["engine"] == "rankloop" and r["ge_sample"]["rows"] == 2_000 for r in rows.values())
    assert rows["position_non_negative"]["unexpected_count"] == 3
    assert all(r["ge_sample"]["element_count"] <= 2_000 for r in rows.values())


def test_ge_loggers_held_at_warning_and_root_logger_untouched(window, settings, clean) -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    validate_interactions(clean, window=window, settings=settings, run_ge=True)
    assert logging.getLogger("great_expectations").getEffectiveLevel() >= logging.WARNING
    assert (root.level, list(root.handlers)) == before


def test_great_expectations_keeps_no_frame_after_the_contract(window) -> None:
    """GE's context lives on after a run (it keeps the one made last); it does not keep the frame it checked,
    which would stand under every later stage of the weekly run (45 MB at 10M interactions)."""
    import gc
    import weakref

    import pandas as pd

    from data_contracts import ge_suite

    table, _ = _seeded(window)
    kept = []
    original = ge_suite.run_suite

    def run_suite(frame: pd.DataFrame, *args, **kwargs):
        kept.append(weakref.ref(frame))
        return original(frame, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ge_suite, "run_suite", run_suite)
        result = validate_interactions(table, window=window, settings=SETTINGS, run_ge=True)
    assert any(e["engine"] == "great_expectations" for e in result.expectations)
    gc.collect()
    assert len(kept) == 1 and kept[0]() is None
