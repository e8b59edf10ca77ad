"""The weekly retrain's stages on a Dask cluster, as plain functions (docs/scale-out.md).

``flows/executors.py`` (``DaskStages``) runs the per-day functions as mapped Prefect tasks on the
cluster's workers for the one weekly flow (``flows/weekly.py``); the rest is the local code. What runs where:

* extraction: one ``sources.extract_snapshot`` per block of ``executor.days_per_task`` UTC days
  (immutable, content-addressed, reused; :func:`extract_block`), combined into one manifest whose digest
  is the sha256 of the blocks' digests (:func:`combine_extracts`);
* the contract: once over the whole window (uniqueness and table-level rules need every row), then
  the valid rows are written back per day (:func:`validate_partitioned`);
* labels: per bucket of users over the whole window (a label looks forward, to responses after its
  impression, but never past its user): each block of days' rows cut by hashed user_id
  (:func:`bucket_days`), each bucket labelled alone (:func:`label_bucket`),
  written per query day (:func:`combine_labels`);
* features: per block of ``executor.days_per_task`` query days, from their impressions and
  the events up to them, written per query day (:func:`featurise_days`; ``features.partitioned``);
* the ranker: ``lightgbm.dask.DaskLGBMRanker`` over the train days, grown in rounds until the
  validation curve (per day on the workers, summed) stops improving (:func:`train_ranker_distributed`;
  ``models.dask_ranker``);
* the tables: rewards per request day on the workers (a request belongs to the day of its first
  impression; ``models.rewards.request_moves``), the Thompson and LinUCB sufficient statistics per
  day, combined in the flow's process into exactly the local refit (:func:`fit_tables_distributed`);
  Q-learning replays the combined slates in the flow's process (its updates are sequential);
* registry, gate, drift, replay, promotion and the judging of the tables: the local code
  (``rankloop.stages``, ``rankloop.tables``, ``rankloop.drift``, ``rankloop.checks``), the same tasks.

Large data travels as Parquet files under the run's working folder (which must be on storage every
worker sees); tasks exchange only paths and small results. Nothing here imports Prefect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.atomic import write_arrow, write_json, write_parquet
from core.errors import ConfigError, Reason, TrainingError
from core.memory import release_memory
from core.settings import Settings
from models.day_split import save_columns, write_split_from_days
from models.training import SplitFiles, split_rows, write_split
from rankloop import stages

if TYPE_CHECKING:
    from rankloop.promotion import Candidate

log = logging.getLogger(__name__)


# --- files -------------------------------------------------------------------------------------
def _write_table(table: pa.Table, path: Path) -> Path:
    """``table`` as Parquet, atomically: lz4, as ``core.atomic.write_parquet`` has it for intermediates read back
    within the run (every file written here is one, :data:`INTERMEDIATES`); for a day of 93 feature columns
    lz4 wrote in 0.68x and read in 0.47x zstd's time."""
    return write_parquet(table, path, compression="lz4")


def _write_frame(frame: pd.DataFrame, path: Path) -> Path:
    return _write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def _write_part(data: pd.DataFrame | pa.Table, path: Path) -> Path:
    """A task's output that the next tasks read whole, as an Arrow IPC file (``<path>`` ends ``.arrow``):
    the cut, the labels and the feature parts (``core.atomic.write_arrow``: no Parquet encoding, which was a
    quarter of these tasks' CPU time)."""
    table = pa.Table.from_pandas(data, preserve_index=False) if isinstance(data, pd.DataFrame) else data
    return write_arrow(table, path)


def _write_json(obj: Any, path: Path) -> Path:
    return write_json(path, obj)


def _read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or an Arrow IPC file (``.arrow``: :func:`_write_part`)."""
    if Path(path).suffix == ".arrow":
        import pyarrow.feather as feather

        # One thread: with a memory map, Arrow's threaded read of lz4 buffers took ~10x the CPU of a serial one
        # (0.93 vs 0.09 CPU-s for a day of 93 feature columns, pyarrow 25) for no shorter wall time on 2 CPUs.
        return feather.read_table(path, columns=columns, memory_map=True, use_threads=False)
    return pq.read_table(path, columns=columns)


def _read_frames(paths: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    tables = [_read_table(p, columns=columns) for p in paths]
    return pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()


# --- extraction ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockPart:
    """The snapshot of a block of consecutive UTC days of the window, ``first`` to ``last``."""

    first: date
    last: date
    path: Path
    digest: str
    rows: int
    reused: bool


def day_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at 00:00 UTC: one window per day (the first and last may be partial)."""
    from features.partitioned import day_starts

    return [(max(d, start), min(d + timedelta(days=1), end)) for d in day_starts(start, end)]


def block_windows(start: datetime, end: datetime, days_per_task: int) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at 00:00 UTC into blocks of ``days_per_task`` consecutive days (the blocks of
    :func:`feature_blocks`), each as one window: the first and last may be partial."""
    days = day_windows(start, end)
    return [(block[0][0], block[-1][1]) for block in (days[i:i + days_per_task]
                                                      for i in range(0, len(days), max(1, days_per_task)))]


def extract_block(settings: Settings, block_start: datetime, block_end: datetime) -> BlockPart:
    """Snapshot one block of days of the configured source (``sources.extract_snapshot``, which streams:
    memory of a batch, not of the block; reused when identical). One query, connection and mapping per
    block: per day they cost about as much as the rows at 1M interactions (stop 33: 35 daily snapshots
    6.5 s, the whole window in one 3.0 s, in one process)."""
    import sources

    snap = sources.extract_snapshot(
        settings.source_uri, settings.source.mapping, block_start, block_end, settings.snapshot_dir,
        batch_rows=settings.source.batch_rows, retries=settings.source.connect_retries,
        retry_delay_s=settings.source.retry_delay_s,
    )
    last = (block_end - timedelta(microseconds=1)).astimezone(UTC).date()
    return BlockPart(first=block_start.astimezone(UTC).date(), last=last, path=Path(snap.path), digest=snap.digest, rows=snap.rows,
                     reused=snap.reused)


@dataclass(frozen=True)
class PartitionedExtract:
    """The window's block snapshots combined: ``extracted`` is what the local stages read."""

    extracted: stages.Extracted
    parts: tuple[BlockPart, ...]


def combine_extracts(settings: Settings, parts: list[BlockPart], start: datetime, end: datetime) -> PartitionedExtract:
    """One manifest (and digest) for the block snapshots, plus the catalogue read once.

    Raises:
        ValueError: two blocks share a day.
    """
    import sources

    parts = sorted(parts, key=lambda p: p.first)
    for before, after in zip(parts, parts[1:], strict=False):
        if after.first <= before.last:
            raise ValueError(f"block snapshots overlap: {before.first}..{before.last} and {after.first}..{after.last}")
    source = sources.redact(settings.source_uri)
    ident = {"source": source, "mapping": settings.source.mapping, "start": start.isoformat(), "end": end.isoformat(),
             "partitioning": "day", "parts": [{"first": p.first.isoformat(), "last": p.last.isoformat(),
                                               "digest": p.digest, "rows": p.rows} for p in parts]}
    digest = hashlib.sha256(json.dumps([(d["first"], d["last"], d["digest"]) for d in ident["parts"]]).encode()).hexdigest()
    folder = settings.snapshot_dir / "partitioned" / digest
    manifest = folder / "manifest.json"
    reused = manifest.exists() and all(p.reused for p in parts)
    if not manifest.exists():
        _link_parts(parts, folder / "parts")
        _write_json({**ident, "digest": digest, "rows": sum(p.rows for p in parts),
                     "files": {p.first.isoformat(): str(p.path) for p in parts}}, manifest)
    items, users = sources.read_catalog(settings.source_uri, settings.source.mapping)
    info = {"name": f"{settings.source.mapping}[{start.isoformat()},{end.isoformat()})", "digest": digest,
            "source": source, "path": str(folder),
            "profile": {"rows": sum(p.rows for p in parts), "start": start.isoformat(), "end": end.isoformat(),
                        "partitions": len(parts)}}
    extracted = stages.Extracted(snapshot_path=folder / "parts", digest=digest, rows=sum(p.rows for p in parts), reused=reused,
                                 source=source, items=items, users=users, changed=None, dataset_info=info)
    return PartitionedExtract(extracted=extracted, parts=tuple(parts))


def _link_parts(parts: list[BlockPart], target: Path) -> None:
    """``target/<first day>.parquet`` for every block snapshot (hard links; copies across filesystems), so the
    folder reads as one Parquet dataset (``pq.read_table(target)``). Built aside, then renamed into place."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".parts-", dir=target.parent))
    try:
        for p in parts:
            try:
                os.link(p.path, tmp / f"{p.first.isoformat()}.parquet")
            except OSError:
                shutil.copyfile(p.path, tmp / f"{p.first.isoformat()}.parquet")
        if target.exists():  # another run of the same digest got there first: same content
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- contract ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionedValidated:
    """The local contract stage's ``validated`` (what recording, the gate and the tables read) and its
    valid rows written per day (what the labels and the feature partitions read)."""

    validated: stages.Validated
    valid_paths: dict[date, Path] = field(default_factory=dict)

    def load_events(self, columns: list[str] | tuple[str, ...] | None = None) -> pd.DataFrame:
        """The valid events of every day: all columns, or those of ``columns`` the files have."""
        paths = [self.valid_paths[d] for d in sorted(self.valid_paths)]
        if columns is not None and paths:
            names = set(pq.read_schema(paths[0]).names)
            columns = [c for c in columns if c in names]
        return _read_frames(paths, columns)


def validate_partitioned(settings: Settings, combined: PartitionedExtract, start: datetime, end: datetime,
                         workdir: Path) -> PartitionedValidated:
    """``stages.validate`` over the whole window (uniqueness and table-level rules need every row:
    the same quarantine, report and gate as the local run; it streams the day snapshots), then the
    valid rows cut into day files (``rankloop.partitions.split_by_day``, streamed) under ``<workdir>/valid``."""
    from rankloop.partitions import split_by_day

    validated = stages.validate(settings, combined.extracted, start, end, workdir)
    return PartitionedValidated(validated=validated, valid_paths=split_by_day(validated.events_path, workdir / "valid"))


def check_supported(settings: Settings) -> None:
    """Refuse, before any work, a configuration the Dask trainer would not honour: its model would
    differ from the local run's while its manifest recorded the setting.

    Raises:
        ConfigError: BAD_CONFIG for ``ranker.position_bias`` other than ``none`` or ``labels.implicit.mode``
            ``implicit``.
    """
    if settings.ranker.position_bias != "none":
        raise ConfigError(f"ranker.position_bias={settings.ranker.position_bias} is not supported with "
                          "executor.kind=dask yet (the Dask trainer has no position-bias correction)",
                          reason=Reason.BAD_CONFIG,
                          hint="set RANKLOOP_RANKER__POSITION_BIAS=none, or RANKLOOP_EXECUTOR__KIND=local")
    from features.partitioned import ACROSS_KEYS

    across = sorted(set(_feature_set(settings)) & ACROSS_KEYS)
    if across:
        raise ConfigError(f"feature set {settings.features.feature_set!r} holds {across}, which read other users' "
                          "events and which the Dask features (built per bucket of users and of items) do not build",
                          reason=Reason.BAD_CONFIG,
                          hint="choose another RANKLOOP_FEATURES__FEATURE_SET, or RANKLOOP_EXECUTOR__KIND=local")
    if settings.labels.implicit.mode == "implicit":
        raise ConfigError("labels.implicit.mode=implicit is not supported with executor.kind=dask yet (the Dask "
                          "trainer builds logged-slate queries only)", reason=Reason.BAD_CONFIG,
                          hint="set RANKLOOP_EXECUTOR__KIND=local for implicit queries")


def _feature_set(settings: Settings) -> tuple[str, ...]:
    import features

    return features.get_feature_set(settings.features.feature_set).features


# --- labels and features -------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelPart:
    """The labelled impressions of one bucket of users, per query day."""

    bucket: int
    logged_queries: int  # features.implicit.logged_query_count of the bucket's events
    impressions: int
    paths: dict[date, Path]


@dataclass(frozen=True)
class Labelled:
    """Labelled impressions per query day (one file per bucket of users holding any), the query protocol,
    and the catalogue files the feature partitions read."""

    impression_paths: dict[date, tuple[Path, ...]]
    impressions: int
    items_path: Path | None
    users_path: Path | None
    protocol: dict[str, Any] = field(default_factory=dict)  # features.implicit.QueryProtocol.as_dict()

    def day(self, day: date) -> pd.DataFrame:
        """The labelled impressions of query day ``day``, in ``features.impressions``' order."""
        from features.labels import in_label_order

        return in_label_order(_read_frames(list(self.impression_paths[day])))


def label_columns(valid_paths: dict[date, Path]) -> list[str]:
    """The event columns the labels and the features read, of those the day files have (as the local
    stage reads them, ``stages.build_dataset``: every column put 8 GiB workers past their limit at 10M)."""
    import features
    from features.labels import EVENT_COLUMNS

    names = set(pq.read_schema(valid_paths[min(valid_paths)]).names) if valid_paths else set()
    return [c for c in dict.fromkeys([*EVENT_COLUMNS, *features.event_columns()]) if c in names]


def label_bucket_count(settings: Settings, days: int) -> int:
    """``executor.label_buckets``, or (0) one bucket per ``executor.days_per_task`` days of the window."""
    configured = settings.executor.label_buckets
    return configured or max(1, -(-days // settings.executor.days_per_task))


def user_buckets(user_ids: pd.Series, buckets: int) -> np.ndarray:
    """The bucket (0..buckets-1) of each user id: a hash of the id's value, the same in every process and day
    (``features.partitioned.key_buckets``, which the item buckets use too)."""
    from features.partitioned import key_buckets

    return key_buckets(user_ids, buckets)


@dataclass(frozen=True)
class BlockCut:
    """A block of valid days cut for the labels and features: its rows per bucket of users (the label and
    feature columns), per bucket of items (the feature columns), and its days' parts of the window-wide counts
    (``features.window``); one file each per block, the days in their order."""

    days: tuple[date, ...]
    users: dict[int, Path]
    items: dict[int, Path]
    window: Path


def bucket_days(days: list[date], valid_paths: dict[date, Path], buckets: int, columns: list[str],
                workdir: Path, *, item_buckets: int = 0, settings: Settings | None = None) -> BlockCut:
    """The valid rows of the block ``days`` (``columns`` only) cut by user into
    ``<workdir>/labels-in/<bucket>/<first day>.arrow`` and (``item_buckets``) by item into
    ``<workdir>/items-in/<bucket>/<first day>.arrow`` (the features' event columns; rows in their order;
    buckets without a row get no file), and the days' window parts in ``<workdir>/window/<first day>/``.
    One task per block: a day's cut is too small a task (at 1M rows 35 per-day tasks cost more than the labels
    themselves, stop 32's bench), and a file per (day, bucket) was 1,000 small files per run."""
    import features
    from features.partitioned import key_buckets
    from features.window import day_parts, save_parts

    days = sorted(days)
    first = days[0].isoformat()
    by_user: dict[int, list[pa.Table]] = {}
    by_item: dict[int, list[pa.Table]] = {}
    parts = []
    for day in days:
        table = pq.read_table(valid_paths[day], columns=columns)
        for b, rows in _cut_by(table, user_buckets(table.column("user_id").to_pandas(), buckets)):
            by_user.setdefault(b, []).append(rows)
        if item_buckets:
            kept = table.select([c for c in features.event_columns() if c in table.column_names])
            for b, rows in _cut_by(kept, key_buckets(kept.column("item_id").to_pandas(), item_buckets)):
                by_item.setdefault(b, []).append(rows)
        frame = table.select([c for c in ("event_type", "ts", "position") if c in table.column_names]).to_pandas()
        parts += day_parts(frame, (settings or Settings()).features)
        del table, frame
    users = {b: _write_part(pa.concat_tables(t), workdir / "labels-in" / f"{b:04d}" / f"{first}.arrow")
             for b, t in sorted(by_user.items())}
    del by_user
    items = {b: _write_part(pa.concat_tables(t), workdir / "items-in" / f"{b:04d}" / f"{first}.arrow")
             for b, t in sorted(by_item.items())}
    del by_item
    window = save_parts(parts, workdir / "window" / first)
    release_memory(collect=False)  # the block's pages; its tables hold no cycles (a full collect: ~50 ms)
    return BlockCut(days=tuple(days), users=users, items=items, window=window)


def _cut_by(table: pa.Table, bucket: np.ndarray) -> list[tuple[int, pa.Table]]:
    """``table``'s rows of each bucket (ascending, rows in their order): one stable sort by bucket and one take
    (none when the rows are already grouped), then a slice per bucket (a filter, or a pandas group, per bucket
    went over the whole table once per bucket)."""
    if len(bucket) > 1 and (bucket[1:] < bucket[:-1]).any():
        small = np.int16 if int(bucket.max()) < 2**15 else np.int64  # int16: numpy's stable sort is a radix sort
        order = np.argsort(bucket.astype(small), kind="stable")
        table = table.take(pa.array(order))
    counts = np.bincount(bucket, minlength=1) if len(bucket) else np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    return [(int(b), table.slice(int(starts[b]), int(counts[b]))) for b in np.flatnonzero(counts)]


def label_bucket(settings: Settings, bucket: int, paths: list[Path], workdir: Path) -> LabelPart:
    """Graded labels of one bucket of users over the whole window, written per query day under
    ``<workdir>/impressions/<day>/<bucket>.arrow``.

    A label looks forward (a response up to 24 h after its impression, maybe the next day), so labels
    are not cut by day; but every label is a function of one user's events (an impression is a
    (user, item, request) key, a response without a request joins the same user and item's slate,
    the fallback queries name the user), so a bucket of users labelled alone gives exactly their rows of
    the whole window's labels: a task holds its users' rows, not the window's. A request id shared by
    two users' slates stays one query only if both start on the same day (request ids are per user in
    every layout we map)."""
    import features
    from features.implicit import logged_query_count
    from features.partitioned import split_by_query_day

    events = _read_frames(sorted(paths, key=lambda p: p.name))  # <first day>.arrow: the window's order
    logged = logged_query_count(events)
    imps = features.impressions(events, settings.labels)
    del events
    written = {day: _write_part(frame, workdir / "impressions" / day.isoformat() / f"{bucket:04d}.arrow")
               for day, frame in split_by_query_day(imps).items()}
    part = LabelPart(bucket=bucket, logged_queries=logged, impressions=len(imps), paths=written)
    del imps
    release_memory()
    return part


def combine_labels(settings: Settings, parts: list[LabelPart], extracted: stages.Extracted, workdir: Path,
                   refuse_implicit: bool = True) -> Labelled:
    """The buckets' labels as one :class:`Labelled`: the query protocol from their summed slate counts
    (buckets share no query), the catalogue written for the feature tasks (which read the buckets' inputs
    again: :func:`combine_features` removes them).

    Raises:
        ConfigError: BAD_CONFIG when the window's queries need the implicit protocol, which the Dask
            trainer does not build.
    """
    from features.implicit import LOGGED, protocol_for

    protocol = protocol_for(sum(p.logged_queries for p in parts), settings.labels.implicit)
    if protocol.name != LOGGED and refuse_implicit:
        raise ConfigError(f"this window's queries need the implicit protocol ({protocol.reason}), which the Dask "
                          "trainer does not build yet (it trains on logged slates only)", reason=Reason.BAD_CONFIG,
                          hint="run this source with RANKLOOP_EXECUTOR__KIND=local (docs/learning.md)")
    days: dict[date, list[Path]] = {}
    for part in sorted(parts, key=lambda p: p.bucket):
        for day, path in part.paths.items():
            days.setdefault(day, []).append(path)
    items = _write_table(extracted.items, workdir / "catalog" / "items.parquet") if extracted.items is not None else None
    users = _write_table(extracted.users, workdir / "catalog" / "users.parquet") if extracted.users is not None else None
    return Labelled(impression_paths={d: tuple(days[d]) for d in sorted(days)}, impressions=sum(p.impressions for p in parts),
                    items_path=items, users_path=users, protocol=protocol.as_dict())


def label_partitions(settings: Settings, valid_paths: dict[date, Path], extracted: stages.Extracted,
                     workdir: Path) -> Labelled:
    """The Dask labels' tasks one after the other in this process (what the flow maps on the cluster:
    :func:`bucket_days` per block of :func:`cut_blocks`, :func:`label_bucket` per
    bucket, :func:`combine_labels`)."""
    return _label_cuts(settings, valid_paths, extracted, workdir)[0]


def _label_cuts(settings: Settings, valid_paths: dict[date, Path], extracted: stages.Extracted,
                workdir: Path, item_buckets: int = 0, buckets: int | None = None,
                refuse_implicit: bool = True) -> tuple[Labelled, list[BlockCut]]:
    columns = label_columns(valid_paths)
    buckets = buckets or label_bucket_count(settings, len(valid_paths))
    blocks = cut_blocks(valid_paths, settings.executor.days_per_task, settings.executor.feature_bucket_rows)
    cuts = [bucket_days(block, valid_paths, buckets, columns, workdir, item_buckets=item_buckets, settings=settings)
            for block in blocks]
    by_bucket = bucket_inputs(cuts)
    parts = [label_bucket(settings, b, paths, workdir) for b, paths in sorted(by_bucket.items())]
    return combine_labels(settings, parts, extracted, workdir, refuse_implicit=refuse_implicit), cuts


def feature_partitions(settings: Settings, valid_paths: dict[date, Path], extracted: stages.Extracted,
                       workdir: Path, *, buckets: int | None = None, days_per_block: int | None = None,
                       label_order: bool = False) -> tuple[Labelled, list[FeaturePart]]:
    """The Dask labels' and features' tasks one after the other in this process (what the flow maps on the
    cluster): the labels as :func:`label_partitions`, then :func:`featurise_users` per bucket of users,
    :func:`featurise_items` per bucket of items, :func:`combine_features` per block of query days.

    ``buckets`` (default :func:`label_bucket_count`) and ``days_per_block`` (default ``executor.days_per_task``)
    size the pieces; ``label_order`` writes each day in ``features.impressions``' order. A window whose queries
    need the implicit protocol gets its labels and no feature part (``labelled.protocol`` says which)."""
    from features.implicit import LOGGED

    buckets = buckets or label_bucket_count(settings, len(valid_paths))
    labelled, cuts = _label_cuts(settings, valid_paths, extracted, workdir, item_buckets=buckets, buckets=buckets,
                                 refuse_implicit=not label_order)
    if labelled.protocol.get("name") != LOGGED:
        discard_feature_inputs(workdir)
        return labelled, []
    windows = [c.window for c in cuts]
    blocks = feature_blocks(list(labelled.impression_paths), days_per_block or settings.executor.days_per_task)
    users = [featurise_users(settings, b, paths, labelled, windows, buckets, blocks, workdir)
             for b, paths in sorted(bucket_inputs(cuts).items())]
    items = [featurise_items(settings, b, paths, [u.items[b] for u in users if b in u.items], labelled, windows,
                             blocks, workdir) for b, paths in sorted(item_inputs(cuts).items())]
    parts = [p for block in blocks
             for p in combine_features(settings, block, labelled, users, items, workdir, label_order=label_order)]
    discard_feature_inputs(workdir)
    return labelled, parts


def local_build_dataset(settings: Settings, validated: stages.Validated, extracted: stages.Extracted, end: datetime,
                        workdir: Path) -> stages.Dataset:
    """The local run's labels + features stage: past ``executor.feature_bucket_rows`` events, the Dask flow's
    tasks in this process (:func:`build_dataset_in_process`), where they build the window; else
    ``stages.build_dataset`` (the whole window at once, its features by bucket when that setting asks). The
    same split either way."""
    from core.config.executor import feature_buckets

    buckets = feature_buckets(validated.rows_valid, settings.executor.feature_bucket_rows)
    if buckets > 1:
        built = build_dataset_in_process(settings, validated, extracted, end, workdir, buckets)
        if built is not None:
            return built
    return stages.build_dataset(settings, validated, extracted, end, workdir)


def build_dataset_in_process(settings: Settings, validated: stages.Validated, extracted: stages.Extracted,
                             end: datetime, workdir: Path, buckets: int) -> stages.Dataset | None:
    """The local labels + features stage as the Dask flow's tasks, one after the other in this process: the
    valid rows cut by day, labelled and featurised per bucket of users (items), joined per query day, then the
    local time split (``models.day_split.write_split_from_days``) over the days' files. A step holds a
    bucket's or a day's rows, never the window's; the split's rows, order and values are those of
    ``stages.build_dataset``'s whole-window build (``features.impressions``' order, kept per day).

    Returns None, having written nothing it keeps, for a window this build does not make: queries that need
    the implicit protocol, or a feature set with features read across users (co-occurrence), which the
    whole-window build makes."""
    import shutil

    import features
    from features.implicit import LOGGED, protocol_for
    from features.partitioned import ACROSS_KEYS
    from rankloop.partitions import split_by_day

    if settings.labels.implicit.mode == "implicit" or set(_feature_set(settings)) & ACROSS_KEYS:
        return None
    if protocol_for(0, settings.labels.implicit).name != LOGGED and not _has_impressions(validated.events_path):
        return None  # no slate logged: the implicit protocol, decided without cutting and labelling the window
    base = workdir / "data" / "partitioned"
    shutil.rmtree(base, ignore_errors=True)  # what a killed run left
    try:
        # The valid rows by day where the tables stage cuts them (it reuses them: rankloop.partitions.split_by_day).
        valid_paths = split_by_day(validated.events_path, workdir / "data" / "days", reuse=True)
        labelled, parts = feature_partitions(settings, valid_paths, extracted, base, buckets=buckets,
                                             days_per_block=1, label_order=True)
        if labelled.protocol.get("name") != LOGGED:
            return None
        fset = features.get_feature_set(settings.features.feature_set)
        parts = sorted((p for p in parts if p.rows), key=lambda p: p.day)
        days = pd.Series(pd.to_datetime([p.day for p in parts]).tz_localize("UTC"))
        stages.check_split_coverage(days, end=end, valid_days=settings.ranker.valid_days,
                                    test_days=settings.ranker.test_days)
        with pa.memory_map(str(parts[0].path)) as source:
            names = set(pa.ipc.open_file(source).schema.names)
        key_columns = [c for c in stages.SPLIT_KEY_COLUMNS if c in names]
        # The days in order are the window's label order: its queries' entries, not its keys, are sorted.
        split = write_split_from_days([p.path for p in parts], key_columns, fset.features, workdir / "data" / "split",
                                      base / "columns", end=end, valid_days=settings.ranker.valid_days,
                                      test_days=settings.ranker.test_days)
        if split is None:  # a query in two runs of rows (or keys the days cannot order): the window's keys
            split = _window_split(parts, key_columns, fset.features, workdir / "data" / "split",
                                  base / "columns", end=end, valid_days=settings.ranker.valid_days,
                                  test_days=settings.ranker.test_days)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return stages.Dataset(split=split, feature_set=fset.name, feature_set_hash=fset.hash, features=tuple(fset.features),
                          impressions=labelled.impressions, protocol=labelled.protocol)


def _has_impressions(events_path: Path) -> bool:
    """Whether the valid events hold an impression (their event types read alone, a row group at a time)."""
    from core.schema import EventType

    source = pq.ParquetFile(events_path)
    for group in range(source.num_row_groups):
        types = source.read_row_group(group, columns=["event_type"]).column(0)
        if pc.any(pc.equal(types.cast(pa.string()), EventType.IMPRESSION.value)).as_py():
            return True
    return False


def _window_split(parts: list[FeaturePart], key_columns: list[str], names: tuple[str, ...] | list[str],
                  directory: Path, scratch: Path, *, end: datetime, valid_days: int, test_days: int) -> SplitFiles:
    """The local time split of the days' rows with the window's key columns in memory (``split_rows``), for
    days whose queries ``models.day_split`` cannot order."""
    keys = _read_frames([p.path for p in parts], key_columns)
    rows, valid_start, test_start = split_rows(keys, end=end, valid_days=valid_days, test_days=test_days)
    saved = save_columns([p.path for p in parts], names, scratch)
    return write_split(rows, keys, saved, directory, valid_start=valid_start, test_start=test_start)


def bucket_inputs(days: list[BlockCut]) -> dict[int, list[Path]]:
    """The block files of each bucket of users (from every :func:`bucket_days`)."""
    out: dict[int, list[Path]] = {}
    for day in days:
        for bucket, path in day.users.items():
            out.setdefault(bucket, []).append(path)
    return out


def item_inputs(days: list[BlockCut]) -> dict[int, list[Path]]:
    """The block files of each bucket of items (from every :func:`bucket_days`)."""
    out: dict[int, list[Path]] = {}
    for day in days:
        for bucket, path in day.items.items():
            out.setdefault(bucket, []).append(path)
    return out


@dataclass(frozen=True)
class FeaturePart:
    """One query day's labelled feature rows (queries contiguous) and its query sizes."""

    day: date
    path: Path
    rows: int
    groups: np.ndarray


@dataclass(frozen=True)
class UserPart:
    """One bucket of users' labelled impressions with their user-keyed and context features, per query day,
    and their query columns per bucket of items (what :func:`featurise_items` reads)."""

    bucket: int
    blocks: dict[date, Path]  # first query day of a block -> the block's rows
    items: dict[int, Path]


@dataclass(frozen=True)
class ItemPart:
    """One bucket of items' item-keyed features (by impression row), per block of query days."""

    bucket: int
    blocks: dict[date, Path]  # first query day of a block -> the block's rows


CARRIED_KEYS = ("propensity",)  # what the local time split keeps of an impression besides features.partitioned.ID_COLUMNS
_ROW = "_row"  # an impression's id across the feature tasks: its user bucket << 40 | its row in that bucket
_DAY = "_day"  # its query day (days since 1970-01-01)


def _by_block(frame: pd.DataFrame, blocks: list[list[date]], folder: Path, name: str) -> dict[date, Path]:
    """``frame``'s rows written per block of query days (``_DAY``) to ``<folder>/<first day>/<name>``, each
    block's rows in their order: the frame made an Arrow table once and cut by block (:func:`_cut_by`; a pandas
    group and its conversion per block cost ~3x as much)."""
    epoch = date(1970, 1, 1)
    of_day = {(d - epoch).days: i for i, block in enumerate(blocks) for d in block}
    days = frame[_DAY].to_numpy(dtype=np.int64)
    if len(days) == 0:
        return {}
    low = int(days.min())
    lookup = np.full(int(days.max()) - low + 1, -1, dtype=np.int64)
    for day, index in of_day.items():
        if 0 <= day - low < len(lookup):
            lookup[day - low] = index
    block = lookup[days - low]
    if (block < 0).any():
        raise RuntimeError(f"{int((block < 0).sum())} rows of query days outside the blocks {blocks[0][0]}..")
    return {blocks[b][0]: _write_part(rows, folder / blocks[b][0].isoformat() / name)
            for b, rows in _cut_by(pa.Table.from_pandas(frame, preserve_index=False), block)}


def _feature_names(settings: Settings) -> dict[str | None, tuple[str, ...]]:
    """The set's features by the key whose buckets build them (``features.partitioned.key_groups``; the Dask
    labels build logged slates only, whose set is ``features.feature_set``)."""
    import features
    from features.partitioned import key_groups

    return key_groups(features.get_feature_set(settings.features.feature_set).features)


def _catalog(labelled: Labelled) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    items = pd.read_parquet(labelled.items_path) if labelled.items_path else None
    users = pd.read_parquet(labelled.users_path) if labelled.users_path else None
    return items, users


def _window_counts(settings: Settings, windows: list[Path]) -> Any:
    from features.window import WindowCounts

    return WindowCounts.from_files(windows, settings.features)


def _keyed_columns(settings: Settings, queries: pd.DataFrame, events: pd.DataFrame, names: tuple[str, ...],
                   items: pd.DataFrame | None, users: pd.DataFrame | None, windows: list[Path]) -> dict[str, np.ndarray]:
    """``names`` for ``queries`` from one bucket's ``events``, given the window-wide aggregates from the day parts."""
    import features
    from features.build import iter_columns, keys_read
    from features.window import window_given

    events = events[[c for c in features.event_columns(users) if c in events.columns]]
    given = window_given(_window_counts(settings, windows), queries, events,
                         keys_read(queries, events, names, items=items, users=users, settings=settings.features))
    queries = queries[[c for c in features.QUERY_COLUMNS if c in queries.columns]]
    return dict(iter_columns(queries, events, names, items=items, users=users, settings=settings.features,
                             given=given))


def featurise_users(settings: Settings, bucket: int, paths: list[Path], labelled: Labelled, windows: list[Path],
                    item_buckets: int, blocks: list[list[date]], workdir: Path) -> UserPart:
    """The user-keyed (user, user-item, user-category) and context features of one bucket of users' impressions,
    from that bucket's events of the window alone (:func:`bucket_days`' ``labels-in`` files) and the window's
    day parts (``features.window``): every such feature reads only its user's events besides those window-wide
    counts (``features.partitioned``). Written per query day under ``<workdir>/user-features/<day>/``, with
    the impressions' query columns cut by item for :func:`featurise_items`. A task holds its users' rows of the
    window, once: no task re-reads the window's history."""
    import features
    from features.partitioned import ID_COLUMNS, key_buckets, query_days

    names = _feature_names(settings)
    mine = f"{bucket:04d}.arrow"
    imps = _read_frames([p for day in sorted(labelled.impression_paths) for p in labelled.impression_paths[day]
                         if p.name == mine])
    if len(imps) == 0:
        return UserPart(bucket=bucket, blocks={}, items={})
    items, users = _catalog(labelled)
    events = _read_frames(sorted(paths, key=lambda p: p.name))  # <first day>.arrow: the window's order
    built = _keyed_columns(settings, imps, events, (*names.get("user_id", ()), *names.get(None, ())), items, users,
                           windows)
    del events
    imps[_ROW] = (np.int64(bucket) << np.int64(40)) + np.arange(len(imps), dtype=np.int64)
    imps[_DAY] = query_days(imps).astype("datetime64[D]").astype(np.int64)
    kept = [*ID_COLUMNS, *(c for c in CARRIED_KEYS if c in imps.columns), _ROW, _DAY]
    frame = pd.concat([imps[kept], pd.DataFrame(built, index=imps.index, copy=False)], axis=1)
    del built
    written = _by_block(frame, blocks, workdir / "user-features", mine)
    del frame
    queries = imps[[c for c in (*features.QUERY_COLUMNS, _ROW, _DAY) if c in imps.columns]]
    by_item = key_buckets(queries["item_id"], item_buckets)
    out_items = {}
    for b in np.unique(by_item):
        out_items[int(b)] = _write_part(queries[by_item == b], workdir / "items-q" / f"{int(b):04d}" / mine)
    del imps, queries
    release_memory(collect=False)  # its frames hold no cycles (a full collect: ~50 ms)
    return UserPart(bucket=bucket, blocks=written, items=out_items)


def featurise_items(settings: Settings, bucket: int, paths: list[Path], queries: list[Path], labelled: Labelled,
                    windows: list[Path], blocks: list[list[date]], workdir: Path) -> ItemPart:
    """The item-keyed features of one bucket of items' impressions (from every bucket of users:
    :func:`featurise_users`' ``items-q`` files), from that bucket's events of the window alone and the window's
    day parts; written per query day under ``<workdir>/item-features/<day>/`` by impression row."""
    names = _feature_names(settings).get("item_id", ())
    frame = _read_frames(sorted(queries))
    if len(frame) == 0 or not names:
        return ItemPart(bucket=bucket, blocks={})
    items, users = _catalog(labelled)
    events = _read_frames(sorted(paths, key=lambda p: p.name))
    built = _keyed_columns(settings, frame, events, names, items, users, windows)
    del events
    out = pd.concat([frame[[_ROW, _DAY]], pd.DataFrame(built, index=frame.index, copy=False)], axis=1)
    del built, frame
    written = _by_block(out, blocks, workdir / "item-features", f"{bucket:04d}.arrow")
    del out
    release_memory(collect=False)
    return ItemPart(bucket=bucket, blocks=written)


def combine_features(settings: Settings, days: list[date], labelled: Labelled, users: list[UserPart],
                     items: list[ItemPart], workdir: Path, label_order: bool = False) -> list[FeaturePart]:
    """Each query day's rows: the buckets of users' part (labels, user-keyed and context features) joined with
    the buckets of items' part on the impression row, in the set's column order, queries contiguous; written
    to ``<workdir>/features/<day>.arrow``.

    Raises:
        RuntimeError: a day's impressions and item features do not hold the same rows (a task's output lost).
    """
    import features
    from features.labels import in_label_order
    from features.partitioned import ID_COLUMNS, contiguous
    from models.training import group_sizes

    order = list(features.get_feature_set(settings.features.feature_set).features)
    has_items = bool(_feature_names(settings).get("item_id"))
    days = sorted(days)
    left_all = _read_frames([u.blocks[days[0]] for u in users if days[0] in u.blocks])
    right_all = _read_frames([i.blocks[days[0]] for i in items if days[0] in i.blocks])
    out = []
    for day in days:
        code = (day - date(1970, 1, 1)).days
        left = left_all[left_all[_DAY] == code] if len(left_all) else left_all
        right = right_all[right_all[_DAY] == code] if len(right_all) else right_all
        if len(left):
            left = left.sort_values(_ROW, kind="stable").reset_index(drop=True)
            if len(right):
                right = right.sort_values(_ROW, kind="stable").reset_index(drop=True)
            if has_items and not np.array_equal(left[_ROW].to_numpy(), right[_ROW].to_numpy()):
                raise RuntimeError(f"the features of {day}: {len(left)} impressions but item features for "
                                   f"{len(right)} rows, not the same ones")
            if has_items:
                left = pd.concat([left, right.drop(columns=[_ROW, _DAY])], axis=1)
            if label_order:  # the local split's input order (features.impressions'), with the split's keys
                left = in_label_order(left[[*ID_COLUMNS, *(c for c in CARRIED_KEYS if c in left.columns), *order]])
            else:
                left = contiguous(left[[*ID_COLUMNS, *order]])
        path = _write_part(left, workdir / "features" / f"{day.isoformat()}.arrow")
        out.append(FeaturePart(day=day, path=path, rows=len(left), groups=group_sizes(left) if len(left) else
                               np.zeros(0, dtype=np.int64)))
        del left, right
    del left_all, right_all
    release_memory(collect=False)
    return out


# The feature tasks' inputs and outputs before the days are combined (removed by the time split).
FEATURE_INPUTS = ("labels-in", "items-in", "items-q", "user-features", "item-features", "window")


def discard_feature_inputs(workdir: Path) -> None:
    """Remove what the feature tasks read and wrote before :func:`combine_features` (once every day is combined)."""
    import shutil

    for name in FEATURE_INPUTS:
        shutil.rmtree(workdir / name, ignore_errors=True)


def feature_blocks(days: list[date], days_per_task: int) -> list[list[date]]:
    """``days`` (sorted) cut into runs of at most ``days_per_task`` consecutive query days, one task each."""
    days = sorted(days)
    return [days[i:i + days_per_task] for i in range(0, len(days), days_per_task)]


def cut_blocks(valid_paths: dict[date, Path], days_per_task: int, max_rows: int = 0) -> list[list[date]]:
    """The valid days cut into the label cut's blocks (:func:`bucket_days`, one task each): runs of at most
    ``days_per_task`` days (:func:`feature_blocks`), and of at most ``max_rows`` valid rows when that is set
    (``executor.feature_bucket_rows``; a day holding more is a block alone). The cut holds its block's rows
    twice over (by user and by item): a denser window gets shorter blocks, not bigger ones (7 days of a 30M
    window are 6M rows). The blocks do not change the results."""
    runs = feature_blocks(list(valid_paths), days_per_task)
    if max_rows <= 0:
        return runs
    out = []
    for run in runs:
        block, rows = [], 0
        for day in run:
            n = pq.read_metadata(valid_paths[day]).num_rows
            if block and rows + n > max_rows:
                out.append(block)
                block, rows = [], 0
            block.append(day)
            rows += n
        out.append(block)
    return out


@dataclass(frozen=True)
class PartitionedSplit:
    """Train/valid/test by query day: train and valid as day files, the test week as one file (``paths["test"]``,
    queries contiguous), read when a stage needs it: until stop 33 the test week was held loaded in the flow's
    process from the split to the end of the run (the Dask driver's peak at 10M, during drift)."""

    train: tuple[FeaturePart, ...]
    valid: tuple[FeaturePart, ...]
    valid_start: datetime
    test_start: datetime
    paths: dict[str, Path]  # "test": the test week
    test_rows: int
    test_queries: int

    def read(self, part: str, columns: list[str] | None = None, rows: np.ndarray | None = None, *,
             categorical: Sequence[str] = ()) -> pd.DataFrame:
        """``columns`` of one part ("train", "valid" or "test"), queries contiguous; the rows where the boolean
        mask ``rows`` is True; ``categorical`` ones as categoricals (masked and converted after the read: a
        day's files hold a few days of rows)."""
        if part == "test":
            frame = _read_frames([self.paths["test"]], list(columns) if columns is not None else None)
        elif part in ("train", "valid"):
            frame = _read_frames([p.path for p in getattr(self, part)], list(columns) if columns is not None else None)
        else:
            raise ValueError(f"part must be 'train', 'valid' or 'test', got {part!r}")
        if rows is not None:
            if len(rows) != len(frame):
                raise ValueError(f"row mask has {len(rows)} values; split part {part!r} has {len(frame)} rows")
            frame = frame[rows].reset_index(drop=True)
        for name in categorical:
            frame[name] = frame[name].astype("category")
        return frame

    def read_matrix(self, part: str, columns: list[str], rows: np.ndarray | None = None
                    ) -> tuple[pd.DataFrame, dict[str, str]]:
        """``models.training.read_matrix`` of the test week's file (the part the test-week scoring reads)."""
        from models.training import read_matrix

        if part not in self.paths:
            raise ValueError(f"only the test week is one file here; {part!r} is read by day")
        return read_matrix(self.paths[part], columns, rows)

    def iter_matrix(self, part: str, columns: list[str], rows: np.ndarray | None = None) -> Iterator[pd.DataFrame]:
        """``models.training.iter_matrix`` of the test week's file: its matrix a batch of rows at a time."""
        from models.training import iter_matrix

        if part not in self.paths:
            raise ValueError(f"only the test week is one file here; {part!r} is read by day")
        return iter_matrix(self.paths[part], columns, rows)

    def sizes(self) -> dict[str, int]:
        """As ``models.training.Split.sizes`` (a query lives in one partition)."""
        out = {}
        for name, parts in (("train", self.train), ("valid", self.valid)):
            out[f"{name}_rows"] = sum(p.rows for p in parts)
            out[f"{name}_queries"] = sum(len(p.groups) for p in parts)
        out["test_rows"], out["test_queries"] = self.test_rows, self.test_queries
        return out


def partitioned_dataset(settings: Settings, parts: list[FeaturePart], labelled: Labelled, end: datetime,
                        workdir: Path) -> stages.Dataset:
    """The local ``Dataset`` over day partitions (the same time split: a query goes by its first impression)."""
    import features
    from features.partitioned import contiguous

    discard_feature_inputs(workdir)  # every day is combined
    fset = features.get_feature_set(settings.features.feature_set)
    valid_start, test_start = settings.ranker.split_starts(end)
    parts = sorted((p for p in parts if p.rows), key=lambda p: p.day)
    train = tuple(p for p in parts if p.day < valid_start.date())
    valid = tuple(p for p in parts if valid_start.date() <= p.day < test_start.date())
    test_parts = [p for p in parts if test_start.date() <= p.day < end.date()]
    empty = [n for n, ps in (("train", train), ("valid", valid), ("test", test_parts)) if not ps]
    if empty:
        raise ValueError(f"time split leaves {empty} empty: window ends {end.isoformat()}, test from "
                         f"{test_start.isoformat()}, valid from {valid_start.isoformat()}")
    test = contiguous(_read_frames([p.path for p in test_parts]))
    test_path = _write_frame(test, workdir / "features" / "test-week" / "test.parquet")
    split = PartitionedSplit(train=train, valid=valid, valid_start=valid_start, test_start=test_start,
                             paths={"test": test_path}, test_rows=len(test), test_queries=int(test["query_id"].nunique()))
    del test
    return stages.Dataset(split=split, feature_set=fset.name, feature_set_hash=fset.hash, features=tuple(fset.features),
                          impressions=labelled.impressions, protocol=labelled.protocol)


# --- cleaning up ---------------------------------------------------------------------------------
# What a Dask run writes under its working folder besides what the local run writes there: the valid
# rows, labelled impressions and features per day, the catalogue, the tables' per-day rewards and slates.
INTERMEDIATES = ("valid", "impressions", "catalog", "features", "tables/days", *FEATURE_INPUTS)


def discard_intermediates(workdir: Path) -> None:
    """Remove a completed Dask run's intermediate data, as ``stages.discard_intermediates`` does for the
    local run: the run folder then holds what the local run's holds (the model and the tables). The
    snapshots (``<home>/snapshots``) and the quarantine stay; a failed run keeps everything for inspection."""
    import shutil

    stages.discard_intermediates(workdir)
    for name in INTERMEDIATES:
        shutil.rmtree(workdir / name, ignore_errors=True)
    tables = workdir / "tables"
    if tables.is_dir() and not any(tables.iterdir()):
        tables.rmdir()


# --- the ranker ----------------------------------------------------------------------------------
def _query_hashes(path: Path, seed: int) -> np.ndarray:
    from models.dask_ranker import query_hashes

    return query_hashes(_read_table(path, ["query_id"]).to_pandas(), seed)


def _train_partition(path: Path, read: list[str], threshold: Any, seed: int) -> pd.DataFrame:
    from models.dask_ranker import keep_capped

    # ``read`` names every column the partition needs: capping needs query_id even though training
    # then selects only the features. (Read through dask.dataframe.from_map, an argument named
    # ``columns`` received the training's projection and query_id was lost: tests/models/test_dask_training.py.)
    return keep_capped(_read_table(path, read).to_pandas(), threshold, seed)


def _train_groups(path: Path, threshold: Any, seed: int) -> np.ndarray:
    from models.training import group_sizes

    return group_sizes(_train_partition(path, ["query_id"], threshold, seed))


def _valid_queries(path: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded hashes of a valid day's queries with a relevant item (what ``max_valid_queries`` ranks) and each
    one's rows, in the same order."""
    from models.dask_ranker import query_hashes
    from models.training import with_positive_label

    relevant = with_positive_label(_read_table(path, ["query_id", "label"]).to_pandas())
    return query_hashes(relevant, seed), np.bincount(pd.factorize(relevant["query_id"])[0])


def _valid_curve(path: Path, booster_text: str, columns: list[str], start: int = 0, threshold: Any = None,
                 seed: int = 0) -> tuple[dict[int, np.ndarray], int]:
    from models.dask_ranker import keep_capped, partition_curve
    from models.training import with_positive_label

    rows = keep_capped(with_positive_label(_read_table(path, columns).to_pandas()), threshold, seed)
    return partition_curve(booster_text, rows, columns[2:], start=start)


def ready_workers(client: Any, timeout_s: float = 300.0, poll_s: float = 2.0) -> list[str]:
    """The cluster's workers once none is paused, each having first handed its freed memory back.

    The training pins each train day to a worker (:func:`models.dask_ranker.placement`), and Dask
    starts no task on a worker paused over its memory threshold: one paused worker would stall the
    training for good (stop 31, 10M: a worker idle at 7.4 GB of 8 GiB). So every worker releases what
    it can (``core.memory.release_memory``), and a worker still paused after ``timeout_s`` ends the run
    naming it and its memory.

    Raises:
        TrainingError: TRAINING when a worker stays paused.
    """
    client.run(release_memory)
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.scheduler_info(n_workers=-1)["workers"]
        paused = {address: w for address, w in info.items() if w.get("status") == "paused"}
        if not paused:
            return list(info)
        if time.monotonic() >= deadline:
            held = ", ".join(f"{a} ({w.get('metrics', {}).get('memory', 0) / 2**30:.1f} of "
                             f"{(w.get('memory_limit') or 0) / 2**30:.1f} GiB)" for a, w in sorted(paused.items()))
            raise TrainingError(f"Dask worker(s) {held} stayed paused over their memory threshold for {timeout_s:.0f} s; "
                                "the training pins a share of the train days to every worker and cannot start",
                                reason=Reason.TRAINING,
                                hint="give the workers more memory (RANKLOOP_EXECUTOR__MEMORY_LIMIT) or fewer days per "
                                     "feature task (RANKLOOP_EXECUTOR__DAYS_PER_TASK), or run locally")
        log.warning("waiting for paused Dask worker(s) %s to go back under their memory threshold", sorted(paused))
        time.sleep(poll_s)


def train_ranker_distributed(settings: Settings, dataset: stages.Dataset, workdir: Path, client: Any) -> stages.TrainedRanker:
    """``stages.train_ranker`` on the cluster: DaskLGBMRanker over the train days, the validation
    curve per valid day, then the test week scored by the same code (``stages.score_test_week``)."""
    from models.dask_ranker import (
        cap_threshold,
        choose_iteration,
        extend_curves,
        fit_distributed,
        next_round,
        placement,
        stopped,
    )

    split: PartitionedSplit = dataset.split
    cols = list(dataset.features)
    seed, cap = settings.ranker.seed, settings.ranker.max_train_queries
    paths = [p.path for p in split.train]
    threshold = cap_threshold(client.gather(client.map(_query_hashes, paths, seed=seed, pure=False)), cap) if cap else None
    groups = client.gather(client.map(_train_groups, paths, threshold=threshold, seed=seed, pure=False))
    used = int(sum(g.sum() for g in groups))
    available = sum(p.rows for p in split.train)
    if used < available:
        log.info("training on %d of %d rows (max_train_queries=%d)", used, available, cap)
    columns = ["query_id", "label", *cols]
    # Each train day is read on the worker placement() gives it (round robin over the sorted workers),
    # so the model is the same on every run with the same number of workers (models.dask_ranker).
    workers = placement(ready_workers(client), len(paths))
    frames = [client.submit(_train_partition, p, read=columns, threshold=threshold, seed=seed, workers=[w],
                            allow_other_workers=False, pure=False) for p, w in zip(paths, workers, strict=True)]
    # Early stopping by hand (lightgbm.dask has none): trees in rounds, each round continuing the booster so
    # far and growing the fewest trees after which training could end (next_round), until the validation
    # curve (the whole valid set's, from the workers) has gone early_stopping_rounds trees without
    # improving, or n_estimators are grown.
    ranker_settings = settings.ranker
    booster, curves, fits = None, [], 0
    valid_paths = [p.path for p in split.valid]
    # The validation queries early stopping reads: those with a relevant item, at most max_valid_queries of them
    # by the same seeded hash as the local run (models.training.training_matrices), so the same queries.
    valid_cap = ranker_settings.max_valid_queries
    queries = client.gather(client.map(_valid_queries, valid_paths, seed=seed, pure=False))
    valid_threshold = cap_threshold([h for h, _ in queries], valid_cap) if valid_cap else None
    valid_available = int(sum(rows.sum() for _, rows in queries))
    valid_used = (int(sum(rows[hashes <= valid_threshold].sum() for hashes, rows in queries))
                  if valid_threshold is not None else valid_available)
    if valid_used < valid_available:
        log.info("early-stopping on %d of %d validation rows (max_valid_queries=%d)", valid_used, valid_available,
                 valid_cap)
    while True:
        done = booster.current_iteration() if booster is not None else 0
        booster = fit_distributed(client, frames, workers, groups, cols, ranker_settings,
                                  rounds=next_round(curves, done, ranker_settings), init_model=booster)
        fits += 1
        text = client.scatter(booster.model_to_string(), broadcast=True)
        curves = extend_curves(curves, client.gather(client.map(_valid_curve, valid_paths, booster_text=text,
                                                                columns=columns, start=done, threshold=valid_threshold,
                                                                seed=seed, pure=False)))
        if booster.current_iteration() >= ranker_settings.n_estimators or stopped(curves, ranker_settings):
            break
    del frames
    fit = choose_iteration(booster, curves, ranker_settings)
    ranker = fit.ranker()
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = ranker.save(workdir / "model.txt")
    params = ranker.get_params() | {"max_train_queries": cap, "train_rows_used": used, "train_rows_available": available,
                                    "max_valid_queries": valid_cap, "valid_rows_used": valid_used,
                                    "valid_rows_available": valid_available,
                                    "trainer": "lightgbm.dask.DaskLGBMRanker", "trees_trained": booster.current_iteration(),
                                    "fit_rounds": fits}
    return stages.score_test_week(dataset, model_path, best_iteration=fit.best_iteration,
                                  evals_result=fit.evals_result, params=params)


# --- the tables ----------------------------------------------------------------------------------
def fit_tables_distributed(settings: Settings, ctx: stages.RunContext, validated: PartitionedValidated,
                           parent_run_id: str | None, client: Any) -> list[Candidate]:
    """The tables stage (:func:`rankloop.tables.fit_tables_by_day`, as the local run calls it) with its
    request days on the cluster; refits combined, judged, recorded and gated in this process."""
    from rankloop.partitions import OnDask
    from rankloop.tables import fit_tables_by_day

    return fit_tables_by_day(settings, validated.valid_paths, OnDask(client), end=ctx.end, workdir=ctx.workdir,
                             actor=ctx.actor, window=(ctx.start, ctx.end), parent_run_id=parent_run_id)
