"""Great Expectations' record agrees with the masks; GE stays quiet (no progress bars)."""

from __future__ import annotations

import logging

from data_contracts import ContractSettings, validate_interactions
from data_contracts.synthetic import FAULTS, inject_faults, synthetic_interactions


def _seeded(window):
    clean = synthetic_interactions(10_000, window=window, seed=11)
    return inject_faults(clean, window=window, per_rule=3, seed=5)


def test_ge_counts_match_the_masks_on_10k_rows(window, capfd) -> None:
    table, injected = _seeded(window)
    result = validate_interactions(table, window=window, settings=ContractSettings(), run_ge=True)
    rows = {e["name"]: e for e in result.expectations if e["engine"] == "great_expectations"}
    assert rows.keys().isdisjoint({"engagement_has_impression"})  # no GE equivalent: the masks' record
    masks_only = next(e for e in result.expectations if e["name"] == "engagement_has_impression")
    assert (masks_only["engine"], masks_only["quarantined_count"]) == ("rankloop", 3)
    for name, count in injected.items():
        if name == "engagement_has_impression":
            continue
        record = rows[name]
        assert record["unexpected_count"] == record["mask_unexpected_count"], name
        # GE counts the kept first copy too; a future row in a past window is outside it as well
        expected = {"event_id_unique": count + 1, "event_key_unique": 2 * count,
                    "ts_in_window": count + injected["ts_not_in_future"]}.get(name, count)
        quarantined = count + injected["ts_not_in_future"] if name == "ts_in_window" else count
        assert (record["unexpected_count"], record["quarantined_count"], record["success"]) == (
            expected, quarantined, False), name
    assert all(rows[f"{c}_exists"]["success"] for c in ("event_id", "user_id", "item_id", "event_type", "ts"))
    assert result.quarantined.num_rows == 3 * len(FAULTS)
    captured = capfd.readouterr()
    assert captured.out == ""
    assert "it/s" not in captured.err and "Calculating Metrics" not in captured.err and "%|" not in captured.err


def test_sampled_ge_keeps_exact_counts_from_the_masks(window) -> None:
    table, injected = _seeded(window)
    settings = ContractSettings(ge_max_rows=2_000)
    result = validate_interactions(table, window=window, settings=settings, run_ge=True)
    rows = {e["name"]: e for e in result.expectations if "ge_sample" in e}
    assert set(rows) == set(injected) - {"engagement_has_impression"}
    assert all(r["engine"] == "rankloop" and r["ge_sample"]["rows"] == 2_000 for r in rows.values())
    assert rows["position_non_negative"]["unexpected_count"] == 3
    assert all(r["ge_sample"]["element_count"] <= 2_000 for r in rows.values())


def test_ge_loggers_held_at_warning_and_root_logger_untouched(window, settings, clean) -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    validate_interactions(clean, window=window, settings=settings, run_ge=True)
    assert logging.getLogger("great_expectations").getEffectiveLevel() >= logging.WARNING
    assert (root.level, list(root.handlers)) == before
