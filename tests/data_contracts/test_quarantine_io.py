"""write_quarantine: Parquet plus a JSON summary, atomic, None when nothing is quarantined."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from data_contracts import validate_interactions, write_quarantine


def test_quarantined_rows_round_trip_with_summary(with_rows, window, settings, tmp_path) -> None:
    result = validate_interactions(with_rows({"position": -1}, {"event_type": "warp"}), window=window,
                                   settings=settings, run_ge=False)
    path = write_quarantine(result, tmp_path / "q")
    assert path is not None
    assert path.name == f"interactions-20260105T000000Z_20260209T000000Z-{result.suite_version}.parquet"
    assert pq.read_table(path).equals(result.quarantined)
    summary = json.loads(path.with_suffix(".json").read_text())
    assert summary["rows_quarantined"] == 2 and summary["rows_in"] == 202
    assert summary["window"] == [w.isoformat() for w in window]
    assert summary["reasons"] == {"negative_position": 1, "unknown_event_type:warp": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, path.with_suffix(".json").name])


def test_nothing_quarantined_writes_nothing(clean, window, settings, tmp_path) -> None:
    result = validate_interactions(clean, window=window, settings=settings, run_ge=False)
    assert write_quarantine(result, tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_the_previous_file(with_rows, window, settings, tmp_path) -> None:
    first = validate_interactions(with_rows({"position": -1}), window=window, settings=settings, run_ge=False)
    second = validate_interactions(with_rows({"position": -1}, {"position": -2}), window=window,
                                   settings=settings, run_ge=False)
    write_quarantine(first, tmp_path)
    path = write_quarantine(second, tmp_path)
    assert pq.read_table(path).num_rows == 2
    assert len(list(tmp_path.iterdir())) == 2


def test_wrong_result_type(tmp_path) -> None:
    with pytest.raises(TypeError, match="ContractResult"):
        write_quarantine({"quarantined": None}, tmp_path)
