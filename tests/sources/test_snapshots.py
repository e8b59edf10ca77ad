"""Snapshot reuse, change detection, atomicity, index and the CLI."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from sources import extract_snapshot, load_snapshot, read_index, snapshot_dataset_info, write_table

from .conftest import END, START, canonical_rows


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    write_table(uri, "interactions", canonical_rows(), indexes=[("ts",)])
    return uri


def test_unchanged_data_is_reused_changed_data_is_new(tmp_path: Path, sqlite_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    snaps = tmp_path / "snaps"
    first = extract_snapshot(sqlite_uri, "rankloop", START, END, snaps, batch_rows=50)
    with caplog.at_level(logging.INFO, logger="sources"):
        again = extract_snapshot(sqlite_uri, "rankloop", START, END, snaps, batch_rows=33)
    assert (first.reused, again.reused) == (False, True)
    assert again.digest == first.digest and again.path == first.path
    assert any("reused" in r.getMessage() for r in caplog.records)
    write_table(sqlite_uri, "interactions", canonical_rows().slice(0, 300), mode="replace")
    changed = extract_snapshot(sqlite_uri, "rankloop", START, END, snaps)
    assert not changed.reused and changed.digest != first.digest
    assert changed.previous == {"digest": first.digest, "rows_before": 200, "rows_after": 100, "changed": True}
    assert first.path.is_file()  # the old snapshot is immutable and kept
    key = next(iter(read_index(snaps)))
    assert read_index(snaps)[key]["digest"] == changed.digest and "src.db" in key


def test_manifest_records_window_mapping_and_checksum(tmp_path: Path, sqlite_uri: str) -> None:
    snap = extract_snapshot(sqlite_uri, "rankloop", START, END, tmp_path / "snaps")
    manifest = json.loads((snap.path.parent / "manifest.json").read_text())
    assert manifest["rows"] == 200 and manifest["mapping"] == "rankloop" and len(manifest["mapping_hash"]) == 64
    assert manifest["start"] == START.isoformat() and manifest["digest"] == snap.digest
    assert manifest["min_ts"] == START.isoformat()
    info = snapshot_dataset_info(snap)
    assert info["digest"] == snap.digest and info["profile"]["rows"] == 200 and "ts" in info["schema"]


def test_leftover_temp_dir_is_ignored_and_cleaned(tmp_path: Path, sqlite_uri: str) -> None:
    snaps = tmp_path / "snaps"
    stale = snaps / ".tmp-999999999-abc"
    stale.mkdir(parents=True)
    (stale / "data.parquet").write_bytes(b"half written")
    snap = extract_snapshot(sqlite_uri, "rankloop", START, END, snaps)
    assert not stale.exists()
    assert load_snapshot(snap.digest[:10], snaps).num_rows == 200
    assert [p.name for p in snaps.iterdir() if p.name.startswith(".tmp")] == []


def test_failed_extraction_leaves_no_snapshot(tmp_path: Path) -> None:
    from core.errors import SourceError

    uri = f"sqlite:///{tmp_path / 'src.db'}"
    write_table(uri, "interactions", pa.table({"event_id": ["a"]}))
    with pytest.raises(SourceError):
        extract_snapshot(uri, "rankloop", START, END, tmp_path / "snaps")
    assert [p.name for p in (tmp_path / "snaps").iterdir()] == []


def test_cli_extract_json(tmp_path: Path, sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app

    monkeypatch.setenv("RANKLOOP_HOME", str(tmp_path / "home"))
    day = START.date()  # the CLI's windows are whole UTC days: rows every 3 minutes from T0, 480 on its day
    args = ["extract", "--source", sqlite_uri, "--start", day.isoformat(), "--end", (day + timedelta(days=1)).isoformat(),
            "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["rows"] == 480 and payload["reused"] is False and Path(payload["path"]).is_file()
    again = json.loads(CliRunner().invoke(app, args).output.strip().splitlines()[-1])
    assert again["reused"] is True and again["digest"] == payload["digest"]


def test_cli_extract_fails_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app

    monkeypatch.setenv("RANKLOOP_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["extract", "--source", f"sqlite:///{tmp_path / 'none.db'}",
                                      "--start", "2025-01-01", "--end", "2025-01-02"])
    assert result.exit_code == 3  # not_found (core.errors.EXIT_CODES)
    assert result.output.startswith("error (not_found): ") and len(result.output.strip().splitlines()) == 1
    assert "none.db" in result.output


def test_empty_window_gives_an_empty_canonical_snapshot(tmp_path: Path, sqlite_uri: str) -> None:
    from datetime import UTC, datetime

    from core.schema import SNAPSHOT_SCHEMA

    snap = extract_snapshot(sqlite_uri, "rankloop", datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC),
                            tmp_path / "snaps")
    table = load_snapshot(snap.path)
    assert snap.rows == 0 and table.num_rows == 0 and table.schema.equals(SNAPSHOT_SCHEMA)
    assert snap.min_ts is None and snap.max_ts is None


def _index_many(snapshot_dir: str, worker: int, count: int) -> None:
    from sources.snapshot import _update_index

    for i in range(count):
        ident = {"source": f"sqlite:///w{worker}.db", "mapping": "rankloop", "mapping_hash": "0" * 64,
                 "start": f"2026-01-{1 + i % 28:02d}", "end": f"w{worker}-{i}"}
        _update_index(Path(snapshot_dir), ident, {"digest": f"{worker:02d}{i:04d}", "rows": i, "digest_format": 2})


def test_concurrent_extracts_lose_no_index_entry(tmp_path: Path) -> None:
    """Processes updating the snapshot index at once (a backfill beside the weekly run) keep every entry."""
    import multiprocessing

    workers, count = 4, 40
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_index_many, args=(str(tmp_path), w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    index = read_index(tmp_path)
    assert len(index) == workers * count
    assert {entry["digest"] for entry in index.values()} == {f"{w:02d}{i:04d}" for w in range(workers) for i in range(count)}


def test_prior_exposures_come_from_the_earlier_windows_snapshots(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from sources import prior_exposures, redact

    uri = f"sqlite:///{tmp_path / 'src.db'}"
    day = timedelta(days=1)
    t0 = datetime(2026, 10, 19, tzinfo=UTC)
    rows = canonical_rows().slice(0, 4).to_pylist()
    for row, (kind, at) in zip(rows, [("view", t0 + day), ("click", t0 + 2 * day), ("impression", t0 + 6 * day),
                                      ("view", t0 + 8 * day)], strict=True):
        row.update(event_type=kind, ts=at)
    write_table(uri, "interactions", pa.Table.from_pylist(rows, schema=canonical_rows().schema))
    snaps = tmp_path / "snaps"
    extract_snapshot(uri, "rankloop", t0, t0 + 7 * day, snaps)  # last week's window, already taken
    week = t0 + 7 * day
    prior = prior_exposures(snaps, redact(uri), "rankloop", week, timedelta(days=3))
    assert prior.column_names == ["user_id", "item_id", "ts"]
    assert prior.column("ts").to_pylist() == [t0 + 6 * day]  # the impression in the 3 days before; not the click
    assert prior_exposures(snaps, redact(uri), "entertainment", week, timedelta(days=3)) is None
    assert prior_exposures(snaps, redact(uri), "rankloop", t0, timedelta(days=3)) is None
