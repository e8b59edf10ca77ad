"""The weekly stage by bucket (``executor.feature_bucket_rows``: the Dask flow's label and feature tasks in this
process) writes the split the one-piece build writes, value for value, in the same order and schema, on a
simulated window."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.config.executor import feature_buckets
from core.settings import Settings
from rankloop import distributed, stages
from rankloop.partitions import split_by_day
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
    by_day, write_days = [], distributed.write_split_from_days
    monkeypatch.setattr(distributed, "write_split_from_days",
                        lambda *a, **k: by_day.append(write_days(*a, **k)) or by_day[-1])
    whole, keyed = _split(tmp_path, inputs, 0), _split(tmp_path, inputs, bucket_rows)
    assert len(built) == 1 and built[0] is not None  # the bucketed run made its split with the tasks
    assert len(by_day) == 1 and by_day[0] is not None  # from the query days, without the window's keys
    assert not (tmp_path / f"run-{bucket_rows}" / "data" / "partitioned").exists()  # their files are gone
    assert sorted(whole) == sorted(keyed) == ["test", "train", "valid"]
    for part in whole:
        assert whole[part].num_rows > 0
        assert whole[part].schema == keyed[part].schema
        differing = [c for c in whole[part].column_names if not _same(whole[part].column(c), keyed[part].column(c))]
        assert differing == [], part
    assert not any((tmp_path / f"run-{bucket_rows}" / "data" / "features").glob(".keyed.*"))
    # The valid rows by day stay for the tables stage, which takes them as they are (the same files).
    days = tmp_path / f"run-{bucket_rows}" / "data" / "days"
    cut = {d: p.stat().st_ino for d, p in split_by_day(validated.events_path, days, reuse=True).items()}
    assert len(cut) == 35 and cut == {d: p.stat().st_ino for d, p in _day_files(days).items()}


def test_small_buckets_cut_the_days_into_short_blocks(tmp_path: Path, inputs,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A bucket of ~1/40 of the window's rows cuts the label cut's blocks to a day or two (``cut_blocks``), not
    ``executor.days_per_task``'s 7: the same split."""
    validated, _ = inputs
    bucket_rows = validated.rows_valid // 40
    blocks, cut = [], distributed.bucket_days
    monkeypatch.setattr(distributed, "bucket_days", lambda days, *a, **k: blocks.append(len(days)) or cut(days, *a, **k))
    whole, keyed = _split(tmp_path, inputs, 0), _split(tmp_path, inputs, bucket_rows)
    assert len(blocks) >= 20 and max(blocks) <= 2 and sum(blocks) == 35
    for part in whole:
        assert whole[part].num_rows > 0 and whole[part].schema == keyed[part].schema
        assert [c for c in whole[part].column_names if not _same(whole[part].column(c), keyed[part].column(c))] == []


def test_days_the_split_cannot_order_get_the_window_keys(tmp_path: Path, inputs,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``models.day_split`` declines the days (a query in two runs of rows), the stage splits with the
    window's key columns in memory, and writes the same split."""
    validated, _ = inputs
    declined = []
    monkeypatch.setattr(distributed, "write_split_from_days", lambda *a, **k: declined.append(a[0]))
    whole, keyed = _split(tmp_path, inputs, 0), _split(tmp_path, inputs, validated.rows_valid // 5)
    assert len(declined) == 1 and len(declined[0]) == 35
    for part in whole:
        assert whole[part].num_rows > 0 and whole[part].schema == keyed[part].schema
        assert [c for c in whole[part].column_names if not _same(whole[part].column(c), keyed[part].column(c))] == []


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal values and nulls, NaN equal to NaN (Arrow's ``equals`` holds NaN unequal to itself)."""
    if a.null_count != b.null_count or not pc.all(pc.equal(pc.is_null(a), pc.is_null(b))).as_py():
        return False
    if pa.types.is_floating(a.type):
        return np.array_equal(a.to_numpy(), b.to_numpy(), equal_nan=True)
    return a.equals(b)


def _day_files(folder: Path) -> dict[date, Path]:
    return {date.fromisoformat(d.name.removeprefix("day=")): next(d.glob("*.parquet")) for d in sorted(folder.glob("day=*"))}


def test_feature_buckets() -> None:
    assert feature_buckets(10_047_755, 2_500_000) == 4 and feature_buckets(10_047_755, 1_000_000) == 10
    assert feature_buckets(1_001_029, 2_500_000) == 1
    # The nearest whole number of buckets: a window just past the size is one piece, 1.5x it two buckets.
    assert feature_buckets(1_001_029, 1_000_000) == 1 and feature_buckets(1_499_999, 1_000_000) == 1
    assert feature_buckets(1_500_000, 1_000_000) == 2 and feature_buckets(2_600_000, 1_000_000) == 3
    assert feature_buckets(10, 0) == 1 and feature_buckets(0, 100) == 1


@pytest.fixture(scope="module")
def no_impressions(inputs, tmp_path_factory: pytest.TempPathFactory) -> tuple[stages.Validated, stages.Extracted]:
    """The same window without its logged impressions (the e-commerce seed's layout): implicit queries."""
    validated, extracted = inputs
    table = pq.read_table(validated.events_path)
    kept = table.filter(pc.not_equal(pc.cast(table["event_type"], pa.string()), "impression"))
    path = tmp_path_factory.mktemp("no_impressions") / "events.parquet"
    pq.write_table(kept, path)
    return dataclasses.replace(validated, events_path=path, rows_in=kept.num_rows, rows_valid=kept.num_rows), extracted


@pytest.mark.parametrize("parts", [5, 40])
def test_a_window_without_impressions_gets_the_one_piece_split(tmp_path: Path, no_impressions, parts: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The tasks build logged slates only: a window without an impression is handed back before they cut or
    label anything (at 8.5M events of the e-commerce layout that was 27 s of labels thrown away), and the stage
    makes the implicit queries one bucket of users at a time (from the window's pool), featurises them by bucket
    and splits them from the buckets' files: the one-piece split, value for value, in the same order and schema.
    At 40 buckets some buckets of items hold no query row."""
    import features.partitioned as partitioned
    from features.implicit import IMPLICIT

    validated, _ = no_impressions
    bucket_rows = validated.rows_valid // parts
    built, cut, made = [], [], []
    original, partitions = distributed.build_dataset_in_process, distributed.feature_partitions
    monkeypatch.setattr(distributed, "build_dataset_in_process",
                        lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    monkeypatch.setattr(distributed, "feature_partitions", lambda *a, **k: cut.append(1) or partitions(*a, **k))
    by_bucket = partitioned.implicit_query_buckets
    monkeypatch.setattr(partitioned, "implicit_query_buckets", lambda *a, **k: made.append(by_bucket(*a, **k)) or made[-1])
    whole = _split(tmp_path, no_impressions, 0)
    import features.build as build

    built_rows, iter_columns = [], build.iter_columns
    monkeypatch.setattr(build, "iter_columns", lambda q, *a, **k: built_rows.append(len(q)) or iter_columns(q, *a, **k))
    keyed = _split(tmp_path, no_impressions, bucket_rows)
    assert built == [None] and cut == []  # the tasks saw no logged slate and declined before any work
    assert len(made) == 1 and made[0].buckets >= parts  # the one-piece run made its queries whole
    assert all(made[0].rows) and made[0].n == sum(whole[p].num_rows for p in whole)
    # every feature (co-occurrence and context included) built a bucket at a time, never over the window's queries
    assert len(built_rows) == 2 * made[0].buckets and max(built_rows) < made[0].n / 2
    assert not (tmp_path / f"run-{bucket_rows}" / "data" / "partitioned").exists()
    assert not (tmp_path / f"run-{bucket_rows}" / "data" / "features").exists()  # the buckets' files are gone
    assert sorted(whole) == sorted(keyed) == ["test", "train", "valid"]
    for part in whole:
        assert whole[part].num_rows > 0 and whole[part].schema == keyed[part].schema
        assert [c for c in whole[part].column_names if not _same(whole[part].column(c), keyed[part].column(c))] == []
    assert IMPLICIT == "implicit_sampled" and "ui_cooccur_max" in whole["train"].column_names


def test_what_a_killed_run_left_is_cleared(tmp_path: Path, inputs) -> None:
    """A run killed inside the tasks leaves their folder half written (a kill skips every cleanup); the next run
    of that folder starts from nothing and writes the split."""
    validated, extracted = inputs
    run = tmp_path / "run"
    stale = run / "data" / "partitioned"
    (stale / "features").mkdir(parents=True)
    (stale / "features" / "2026-10-20.arrow").write_bytes(b"half an Arrow file")
    (stale / "impressions" / "2026-10-20").mkdir(parents=True)
    (stale / "impressions" / "2026-10-20" / ".0001.arrow.x.tmp").write_bytes(b"")
    (stale / "window" / "2026-10-12").mkdir(parents=True)  # a block's counts, half written
    (stale / "window" / "2026-10-12" / "counts.npz").write_bytes(b"")
    (run / "data" / ".days.tmp" / "day=2026-10-12").mkdir(parents=True)  # the cut by day, half written
    (run / "data" / ".days.tmp" / "day=2026-10-12" / "part-0.parquet").write_bytes(b"PAR1")
    settings = Settings(home=tmp_path / "home", executor={"feature_bucket_rows": validated.rows_valid // 5})
    dataset = distributed.local_build_dataset(settings, validated, extracted, END, run)
    assert not stale.exists() and not (run / "data" / ".days.tmp").exists()
    assert dataset.split.sizes()["train_rows"] > 0
    clean = _split(tmp_path, inputs, validated.rows_valid // 5)  # the same settings in a fresh folder
    for part, path in dataset.split.paths.items():
        healed = pq.read_table(path)
        assert healed.schema == clean[part].schema and healed.num_rows == clean[part].num_rows
        assert [c for c in healed.column_names if not _same(healed.column(c), clean[part].column(c))] == []


def test_an_unsplittable_window_by_bucket_is_refused_before_its_features(tmp_path: Path, no_impressions,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A window without slates made by bucket is refused, from its buckets' query days, before any feature is
    computed: the message names the empty parts and the days that hold queries."""
    from datetime import timedelta

    import features.partitioned as partitioned
    from core.errors import TrainingError

    validated, extracted = no_impressions
    built, made = [], []
    monkeypatch.setattr(partitioned, "iter_keyed_columns", lambda *a, **k: built.append(1))
    by_bucket = partitioned.implicit_query_buckets
    monkeypatch.setattr(partitioned, "implicit_query_buckets", lambda *a, **k: made.append(by_bucket(*a, **k)) or made[-1])
    settings = Settings(home=tmp_path / "home", executor={"feature_bucket_rows": validated.rows_valid // 5})
    with pytest.raises(TrainingError, match=r"cannot be split: valid, test part\(s\) empty .* the window has 3[45] "
                                            r"day\(s\) with impressions"):
        distributed.local_build_dataset(settings, validated, extracted, END + timedelta(days=30), tmp_path / "run")
    assert len(made) == 1 and made[0].buckets == 5 and built == []  # the queries by bucket, no feature


def _with_empty_columns(validated: stages.Validated, names: tuple[str, ...], folder: Path) -> stages.Validated:
    """The window with ``names`` holding no value (their types kept): a layout that lacks them."""
    table = pq.read_table(validated.events_path)
    for name in names:
        at = table.schema.get_field_index(name)
        table = table.set_column(at, table.schema.field(at), pa.nulls(table.num_rows, table.schema.field(at).type))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "events.parquet")
    return dataclasses.replace(validated, events_path=folder / "events.parquet")


@pytest.mark.parametrize(("window", "parts"), [("slates", 0), ("no impressions", 0), ("no impressions", 5)])
def test_columns_without_a_value_are_not_read_and_change_nothing(tmp_path: Path, inputs, no_impressions, window: str,
                                                                  parts: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage does not read an optional column whose every value is null (``stages.ABSENT_AS_NULL``): labels,
    queries and features take it absent as they take it null, so the split is the one read with the columns, in
    every value and in its schema (slates without values, positions, policies or context; a log without slates
    that also lacks sessions, by bucket too)."""
    empty = ("value", "position", "propensity", "policy_version", "mood", "time_of_day", "device", "content_type",
             "category", *(("session_id",) if window == "no impressions" else ()))
    source, extracted = inputs if window == "slates" else no_impressions
    validated = _with_empty_columns(source, empty, tmp_path / "events")
    loaded, load = [], stages.Validated.load_events
    monkeypatch.setattr(stages.Validated, "load_events", lambda self, *a, **k: loaded.append(load(self, *a, **k)) or loaded[-1])
    bucket_rows = validated.rows_valid // parts if parts else 0
    skipped = _split(tmp_path / "skipped", (validated, extracted), bucket_rows)
    assert len(loaded) == 1 and not set(empty) & set(loaded[0].columns)  # not read
    assert {"user_id", "item_id", "event_type", "ts"} <= set(loaded[0].columns)
    monkeypatch.setattr(stages, "ABSENT_AS_NULL", ())
    read = _split(tmp_path / "read", (validated, extracted), bucket_rows)
    assert set(empty) <= set(loaded[1].columns)  # read, as null
    for part in read:
        assert read[part].num_rows > 0 and read[part].schema == skipped[part].schema, part
        assert [c for c in read[part].column_names if not _same(read[part].column(c), skipped[part].column(c))] == []
