"""The weekly stage by bucket (``executor.feature_bucket_rows``: the Dask flow's label and feature tasks in this
process) writes the split the one-piece build writes, value for value, in the same order and schema, on a
simulated window."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.config.executor import feature_buckets
from core.settings import Settings
from rankloop import distributed, stages
from rankloop.simulator import SimulationConfig
from tests.simulated import stage_inputs

END = datetime(2026, 11, 16, tzinfo=UTC)
CONFIG = SimulationConfig(n_users=200, n_items=60, weeks=5, requests_per_user_week=3.0, end=END, seed=5)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[stages.Validated, stages.Extracted]:
    return stage_inputs(CONFIG, tmp_path_factory.mktemp("keyed_events"))


def _split(tmp_path: Path, inputs, bucket_rows: int) -> dict[str, pa.Table]:
    validated, extracted = inputs
    settings = Settings(home=tmp_path / f"home-{bucket_rows}", executor={"feature_bucket_rows": bucket_rows})
    dataset = distributed.local_build_dataset(settings, validated, extracted, END, tmp_path / f"run-{bucket_rows}")
    return {part: pq.read_table(path) for part, path in dataset.split.paths.items()}


def test_buckets_write_the_one_piece_split(tmp_path: Path, inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    validated, _ = inputs
    bucket_rows = validated.rows_valid // 5
    assert feature_buckets(validated.rows_valid, bucket_rows) >= 5
    built = []
    original = distributed.build_dataset_in_process
    monkeypatch.setattr(distributed, "build_dataset_in_process",
                        lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    whole, keyed = _split(tmp_path, inputs, 0), _split(tmp_path, inputs, bucket_rows)
    assert len(built) == 1 and built[0] is not None  # the bucketed run made its split with the tasks
    assert not (tmp_path / f"run-{bucket_rows}" / "data" / "partitioned").exists()  # their files are gone
    assert sorted(whole) == sorted(keyed) == ["test", "train", "valid"]
    for part in whole:
        assert whole[part].num_rows > 0
        assert whole[part].schema == keyed[part].schema
        differing = [c for c in whole[part].column_names if not _same(whole[part].column(c), keyed[part].column(c))]
        assert differing == [], part
    assert not any((tmp_path / f"run-{bucket_rows}" / "data" / "features").glob(".keyed.*"))


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal values and nulls, NaN equal to NaN (Arrow's ``equals`` holds NaN unequal to itself)."""
    if a.null_count != b.null_count or not pc.all(pc.equal(pc.is_null(a), pc.is_null(b))).as_py():
        return False
    if pa.types.is_floating(a.type):
        return np.array_equal(a.to_numpy(), b.to_numpy(), equal_nan=True)
    return a.equals(b)


def test_feature_buckets() -> None:
    assert feature_buckets(10_047_755, 2_500_000) == 5
    assert feature_buckets(1_001_029, 2_500_000) == 1
    assert feature_buckets(10, 0) == 1 and feature_buckets(0, 100) == 1
