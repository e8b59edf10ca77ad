"""The contract checked from a Parquet file batch by batch gives what it gives on the table in memory.

``check_interactions_file`` runs the rules that look across rows (duplicates, exposures before
engagements) once over the key columns and everything else per record batch; these tests put bad
rows, duplicates and engagements on both sides of batch boundaries and compare every output."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.errors import ContractViolation, Reason
from data_contracts import ContractSettings, check_interactions, check_interactions_file, row_rules
from data_contracts.synthetic import FAULTS, inject_faults


def _shuffled(table: pa.Table, seed: int = 5) -> pa.Table:
    return table.take(pa.array(np.random.default_rng(seed).permutation(table.num_rows)))


def _with_duplicates(table: pa.Table) -> pa.Table:
    """Copies of rows 3 and 150 at the end (other event ids, same key), and of row 10's event id."""
    copies = table.take(pa.array([3, 150, 10])).to_pylist()
    copies[0]["event_id"], copies[1]["event_id"] = "copy-a", "copy-b"
    return pa.concat_tables([table, pa.Table.from_pylist(copies, schema=table.schema)])


def _same(file_result, memory_result) -> None:
    assert file_result.rows_valid == memory_result.valid.num_rows
    assert file_result.quarantined.schema.equals(memory_result.quarantined.schema)
    pd.testing.assert_frame_equal(file_result.quarantined.to_pandas(), memory_result.quarantined.to_pandas())
    assert file_result.expectations == memory_result.expectations
    assert file_result.summary() == memory_result.summary()
    assert dataclasses.replace(file_result.profile, created_at="") == dataclasses.replace(memory_result.profile,
                                                                                          created_at="")
    assert (file_result.gate_passed, file_result.passed) == (memory_result.gate_passed, memory_result.passed)


@pytest.mark.parametrize("batch_rows", [37, 100_000])
def test_file_contract_equals_the_in_memory_contract(tmp_path: Path, clean, window, batch_rows: int) -> None:
    settings = ContractSettings(min_rows=10, max_quarantine_fraction=0.9)
    table, injected = inject_faults(clean, window=window, per_rule=2, seed=11)
    table = _shuffled(_with_duplicates(table))  # the bad rows and duplicates spread over the batches
    path = tmp_path / "snapshot.parquet"
    pq.write_table(table, path, row_group_size=53)
    now = window[1] + timedelta(hours=1)
    memory = check_interactions(table, window=window, settings=settings, run_ge=False, now=now)
    result = check_interactions_file(path, window=window, settings=settings, valid_path=tmp_path / "valid.parquet",
                                     run_ge=False, now=now, batch_rows=batch_rows)
    assert memory.quarantined.num_rows >= sum(injected.values()) + 3  # every fault and the three copies
    _same(result, memory)
    assert pq.read_table(result.valid_path).equals(memory.valid)  # the same rows in the same order
    assert result.valid.num_rows == 0 and result.valid.schema.equals(memory.valid.schema)
    assert not list(tmp_path.glob(".valid.parquet.*"))  # no temporary file left


def test_file_contract_runs_great_expectations_on_the_same_sample(tmp_path: Path, clean, window) -> None:
    settings = ContractSettings(min_rows=10, max_quarantine_fraction=0.9, ge_max_rows=60)
    table, _ = inject_faults(clean, window=window, per_rule=1, seed=2)
    table = _shuffled(table)
    path = tmp_path / "snapshot.parquet"
    pq.write_table(table, path)
    now = window[1] + timedelta(hours=1)
    memory = check_interactions(table, window=window, settings=settings, now=now)
    result = check_interactions_file(path, window=window, settings=settings, valid_path=tmp_path / "valid.parquet",
                                     now=now, batch_rows=41)
    _same(result, memory)
    sampled = [e["ge_sample"]["rows"] for e in result.expectations if "ge_sample" in e]
    assert sampled and set(sampled) == {60}


def test_a_folder_of_day_files_reads_as_one_snapshot(tmp_path: Path, clean, window) -> None:
    settings = ContractSettings(min_rows=10, max_quarantine_fraction=0.9)
    table, _ = inject_faults(clean, window=window, per_rule=1, seed=4)
    folder = tmp_path / "parts"
    folder.mkdir()
    halves = (table.slice(0, 120), table.slice(120))
    for i, part in enumerate(halves):
        pq.write_table(part, folder / f"2026-01-0{i + 5}.parquet")
    now = window[1] + timedelta(hours=1)
    memory = check_interactions(table, window=window, settings=settings, run_ge=False, now=now)
    result = check_interactions_file(folder, window=window, settings=settings, valid_path=tmp_path / "valid.parquet",
                                     run_ge=False, now=now, batch_rows=50)
    _same(result, memory)
    assert pq.read_table(result.valid_path).equals(memory.valid)


def test_a_file_without_optional_columns_and_with_extras(tmp_path: Path, clean, window) -> None:
    """A source without sessions and requests, carrying a column of its own: filled with nulls, kept."""
    settings = ContractSettings(min_rows=10, max_quarantine_fraction=0.9)
    table = clean.drop_columns(["session_id", "request_id"]).append_column("tag_text", pa.array(["t"] * clean.num_rows))
    path = tmp_path / "snapshot.parquet"
    pq.write_table(table, path)
    now = window[1] + timedelta(hours=1)
    memory = check_interactions(table, window=window, settings=settings, run_ge=False, now=now)
    result = check_interactions_file(path, window=window, settings=settings, valid_path=tmp_path / "valid.parquet",
                                     run_ge=False, now=now, batch_rows=64)
    _same(result, memory)
    valid = pq.read_table(result.valid_path)
    assert valid.equals(memory.valid) and valid["tag_text"].to_pylist() == ["t"] * valid.num_rows


def test_a_file_missing_a_required_column_is_refused_before_writing(tmp_path: Path, clean, window) -> None:
    path = tmp_path / "snapshot.parquet"
    pq.write_table(clean.drop_columns(["user_id"]), path)
    with pytest.raises(ContractViolation, match="missing required column") as info:
        check_interactions_file(path, window=window, settings=ContractSettings(), valid_path=tmp_path / "v.parquet",
                                run_ge=False)
    assert info.value.reason is Reason.CONTRACT
    assert not (tmp_path / "v.parquet").exists()


def test_an_empty_file_is_an_empty_extract(tmp_path: Path, clean, window) -> None:
    path = tmp_path / "snapshot.parquet"
    pq.write_table(clean.slice(0, 0), path)
    with pytest.raises(ContractViolation, match="empty") as info:
        check_interactions_file(path, window=window, settings=ContractSettings(), valid_path=tmp_path / "v.parquet",
                                run_ge=False)
    assert info.value.reason is Reason.EMPTY
    assert not (tmp_path / "v.parquet").exists()


def test_exposure_rule_in_user_buckets_flags_the_same_rows(monkeypatch, clean, window) -> None:
    """HasExposure joins bucket by bucket of users on large tables: the mask is that of one join."""
    from data_contracts import checks
    from data_contracts.rules import NOW, WINDOW_END, WINDOW_START

    settings = ContractSettings()
    rule = next(r for r in row_rules(settings) if r.name == "engagement_has_impression")
    table, _ = inject_faults(clean, window=window, per_rule=4, seed=8,
                             faults={"engagement_has_impression": FAULTS["engagement_has_impression"]})
    # engagements that only a lookback link explains: their session and request are new
    rows = table.to_pylist()
    for i, row in enumerate(rows[:60]):
        if row["event_type"] in settings.engagement_event_types:
            rows[i] = {**row, "session_id": f"fresh-{i}", "request_id": f"fresh-{i}"}
    table = _shuffled(pa.Table.from_pylist(rows, schema=table.schema))
    params = {WINDOW_START: window[0], WINDOW_END: window[1], NOW: window[1]}
    # half the impressions happened before the window: only the prior exposures explain their engagements
    shown = np.flatnonzero(checks.Batch(table, params).event_type_in(("impression",)))[::2]
    prior = table.take(pa.array(shown))
    table = table.filter(pa.array(~np.isin(np.arange(table.num_rows), shown)))
    whole = rule.mask(checks.Batch(table, params, prior))
    assert (rule.mask(checks.Batch(table, params)) & ~whole).any()  # the prior exposures matter here
    monkeypatch.setattr(checks, "BUCKET_ROWS", 7)
    bucketed = rule.mask(checks.Batch(table, params, prior))
    engaged = checks.Batch(table, params).event_type_in(settings.engagement_event_types)
    assert whole.sum() >= 4 and (engaged & ~whole).sum() > 10  # some flagged, many engagements explained
    np.testing.assert_array_equal(bucketed, whole)


def test_the_valid_file_has_the_row_groups_of_a_whole_table_write(tmp_path: Path, monkeypatch, clean, window) -> None:
    from data_contracts import validate

    monkeypatch.setattr(validate, "_ROW_GROUP_ROWS", 64)
    path = tmp_path / "snapshot.parquet"
    pq.write_table(clean, path)
    result = check_interactions_file(path, window=window, settings=ContractSettings(min_rows=10),
                                     valid_path=tmp_path / "valid.parquet", run_ge=False, batch_rows=23)
    meta = pq.ParquetFile(result.valid_path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [64, 64, 64, 8]
    assert pq.read_table(result.valid_path).num_rows == clean.num_rows == 200


def _with_cross_user_duplicates(table: pa.Table) -> pa.Table:
    """Row 20's event id again on another user's row, and a repeated event key with a missing user."""
    rows = table.take(pa.array([30, 40, 40])).to_pylist()
    rows[0]["event_id"] = table.column("event_id")[20].as_py()
    assert rows[0]["user_id"] != table.column("user_id")[20].as_py()
    rows[1]["user_id"] = rows[2]["user_id"] = None
    rows[1]["event_id"], rows[2]["event_id"] = "no-user-a", "no-user-b"
    return pa.concat_tables([table, pa.Table.from_pylist(rows, schema=table.schema)])


@pytest.mark.parametrize(("bucket_rows", "weak_hash"), [(7, False), (60, False), (7, True), (10**9, True)])
def test_rules_across_rows_in_hashed_buckets_equal_the_in_memory_contract(
    tmp_path: Path, monkeypatch, clean, window, bucket_rows: int, weak_hash: bool,
) -> None:
    """Users hashed into buckets (7 rows: ~35 buckets) and ids compared through their hashes: the masks,
    records and quarantine of the whole table's rules. A weak hash (a value's length) makes distinct ids
    and users collide: candidates that are not repeats, and buckets shared by many users."""
    from data_contracts import across, checks

    monkeypatch.setattr(checks, "BUCKET_ROWS", bucket_rows)
    if weak_hash:
        monkeypatch.setattr(across, "_hash", lambda values: pc.fill_null(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False)
                            .astype(np.uint64))
    settings = ContractSettings(min_rows=10, max_quarantine_fraction=0.9)
    table, _ = inject_faults(clean, window=window, per_rule=2, seed=3)
    table = _shuffled(_with_cross_user_duplicates(_with_duplicates(table)), seed=9)
    path = tmp_path / "snapshot.parquet"
    pq.write_table(table, path, row_group_size=41)
    now = window[1] + timedelta(hours=1)
    memory = check_interactions(table, window=window, settings=settings, run_ge=False, now=now)
    result = check_interactions_file(path, window=window, settings=settings, valid_path=tmp_path / "valid.parquet",
                                     run_ge=False, now=now, batch_rows=29)
    reasons = result.reason_counts()
    assert reasons["duplicate_event_id"] >= 2 and reasons["duplicate_event"] >= 2 and reasons["no_impression"] >= 1
    _same(result, memory)
    assert pq.read_table(result.valid_path).equals(memory.valid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.parquet", "valid.parquet"]  # no spill left
