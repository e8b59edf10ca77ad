"""Atomic writes: the old file or the whole new one, never a partial file, no temp left behind."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.atomic import atomic_write, write_json, write_parquet, write_text


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "pointer.json"
    write_json(target, {"version": 1})

    def half_then_die(tmp: Path) -> None:
        tmp.write_text('{"version": 2, "trunc')
        raise KeyboardInterrupt  # a kill arriving mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_die)
    assert target.read_text() == '{\n  "version": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pointer.json"]


def test_writes_create_the_folder_and_round_trip(tmp_path: Path) -> None:
    table = pa.table({"a": [1, 2, 3]})
    path = write_parquet(table, tmp_path / "deep" / "t.parquet", compression="lz4")
    assert pq.read_table(path).equals(table)
    assert write_text(tmp_path / "x" / "n.md", "é\n").read_text(encoding="utf-8") == "é\n"
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["t.parquet"]
