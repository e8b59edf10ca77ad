"""Window profiles persist and compare with the previous *window*; the report and the snapshot run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from data_contracts import ContractSettings, previous_profile, source_key, validate_snapshot
from data_contracts.synthetic import inject_faults, synthetic_interactions

NOW = datetime(2026, 11, 1, tzinfo=UTC)
SETTINGS = ContractSettings(min_rows=10, day_volume_min_rows=10**9)


def _run(table: pa.Table, window, tmp_path, **kwargs):
    return validate_snapshot(table, window=window, settings=kwargs.pop("settings", SETTINGS),
                             out_dir=tmp_path / "q" / "digest", profiles_dir=tmp_path / "profiles",
                             source="sqlite:///x.db", mapping="rankloop", snapshot_digest="d" * 64,
                             run_ge=False, now=NOW, **kwargs)


def test_first_run_passes_and_says_so_then_the_next_window_compares(window, tmp_path) -> None:
    first = _run(synthetic_interactions(3_000, window=window, seed=1), window, tmp_path)
    assert first.result.gate_passed and first.profile_path is not None
    messages = [c["message"] for c in first.result.summary()["batch_checks"]]
    assert any("first run for this source and mapping" in m for m in messages)
    stored = json.loads(first.profile_path.read_text())
    assert stored["rows"] == 3_000 and stored["suite_version"] == first.result.suite_version
    assert sum(stored["day_counts"].values()) == 3_000 and sum(stored["event_type_counts"].values()) == 3_000
    later = (window[0] + timedelta(days=7), window[1] + timedelta(days=7))
    second = _run(synthetic_interactions(700, window=later, seed=2), later, tmp_path)
    volume = {c["name"]: c for c in second.result.summary()["batch_checks"]}["volume_change_vs_previous"]
    assert not volume["success"] and volume["previous"]["window"][1] == window[1].isoformat()
    assert second.profile_path is None  # a failed batch never becomes the next run's reference


def test_rerunning_a_window_compares_with_the_previous_window_not_itself(window, tmp_path) -> None:
    _run(synthetic_interactions(3_000, window=window, seed=1), window, tmp_path)
    again = _run(synthetic_interactions(600, window=window, seed=1), window, tmp_path)  # same window, 1/5 rows
    assert again.result.gate_passed  # no earlier window: nothing to compare with
    assert previous_profile(tmp_path / "profiles", source_key("sqlite:///x.db", "rankloop"), window) is None
    later = (window[0] + timedelta(days=7), window[1] + timedelta(days=7))
    found = previous_profile(tmp_path / "profiles", source_key("sqlite:///x.db", "rankloop"), later)
    assert found is not None and found.rows == 600  # the re-run replaced the window's profile
    assert [p.name for p in (tmp_path / "profiles").rglob("*") if p.name.startswith(".")] == []  # no temp left


def test_report_lists_expectations_counts_and_examples(window, tmp_path) -> None:
    table, _ = inject_faults(synthetic_interactions(2_000, window=window, seed=4), window=window, per_rule=1)
    outcome = _run(table, window, tmp_path)
    text = outcome.report_path.read_text()
    assert outcome.report_path.parent == tmp_path / "q" / "digest"
    assert text.startswith("# Data contract `interactions`")
    for needle in ("| `negative_position` | 1 |", "`engagement_has_impression`", "no Great Expectations equivalent",
                   "## Batch checks", "`volume_change_vs_previous`", "### `event_key_unique`: 1 rows",
                   f"{outcome.result.valid.num_rows:,} + {outcome.result.quarantined.num_rows:,} = {table.num_rows:,}"):
        assert needle in text, needle
    assert pq.read_table(outcome.quarantine_path).num_rows == outcome.result.quarantined.num_rows
    summary = json.loads(outcome.report_path.with_suffix(".json").read_text())
    assert summary["rows_in"] == table.num_rows and summary["reasons"]["negative_position"] == 1


def test_a_failed_gate_still_writes_its_report_and_quarantine(window, tmp_path) -> None:
    table, _ = inject_faults(synthetic_interactions(500, window=window, seed=4), window=window, per_rule=3)
    outcome = _run(table, window, tmp_path)  # 66 bad of 566: above 1%
    assert not outcome.result.gate_passed
    assert "FAILED (the run stops before training)" in outcome.report_path.read_text()
    assert "max_quarantine_fraction:" in outcome.report_path.read_text()
    assert outcome.quarantine_path.is_file() and outcome.profile_path is None
