"""`rankloop validate`: exit 0 when the batch passes, 1 when it fails; --json carries the counts either way."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from data_contracts.synthetic import FAULTS, inject_faults, synthetic_interactions

# The source pushes the window down, so out-of-window (and null-ts) faults never reach the contract
# through a source, and
# source_errors is what extraction writes (a Parquet source's own column of that name is not mapped).
SOURCE_FAULTS = {k: v for k, v in FAULTS.items()
                 if k not in ("ts_not_null", "ts_in_window", "ts_not_in_future", "ts_after_floor",
                              "source_values_converted")}


def _invoke(path, window, home, monkeypatch, *extra: str):
    from cli.main import app

    monkeypatch.setenv("RANKLOOP_HOME", str(home))
    monkeypatch.setenv("RANKLOOP_CONTRACTS__MIN_ROWS", "10")
    args = ["validate", "--source", str(path), "--mapping", "rankloop", "--start", window[0].date().isoformat(),
            "--end", window[1].date().isoformat(), *extra]
    return CliRunner().invoke(app, args)


def test_a_passing_batch_exits_0_with_counts(window, tmp_path, monkeypatch) -> None:
    faults = {k: FAULTS[k] for k in ("position_non_negative", "rating_in_range")}
    table, _ = inject_faults(synthetic_interactions(5_000, window=window, seed=2), window=window, faults=faults)
    pq.write_table(table, tmp_path / "events.parquet")  # 2 bad rows: under 1%
    result = _invoke(tmp_path / "events.parquet", window, tmp_path / "home", monkeypatch, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["passed"] is True
    assert (payload["rows"], payload["clean_rows"], payload["quarantined_rows"]) == (5_002, 5_000, 2)
    assert payload["reasons"] == {"negative_position": 1, "rating_out_of_range": 1}
    assert payload["report_path"].endswith(".md")


def test_a_failing_batch_exits_1_and_still_prints_its_counts(window, tmp_path, monkeypatch) -> None:
    table, _ = inject_faults(synthetic_interactions(2_000, window=window, seed=2), window=window, per_rule=2,
                             faults=SOURCE_FAULTS)
    pq.write_table(table, tmp_path / "events.parquet")
    result = _invoke(tmp_path / "events.parquet", window, tmp_path / "home", monkeypatch, "--json")
    assert result.exit_code == 1, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["passed"] is False and payload["rows"] == table.num_rows
    assert payload["clean_rows"] + payload["quarantined_rows"] == table.num_rows
    assert payload["reasons"]["no_impression"] == 2 and payload["reasons"]["duplicate_event"] == 2
    assert any(f.startswith("max_quarantine_fraction:") for f in payload["failures"])
    plain = _invoke(tmp_path / "events.parquet", window, tmp_path / "home", monkeypatch)
    assert plain.exit_code == 1 and "FAILED" in plain.output and "no_impression" in plain.output
