"""The local time split written from a window's query days, one day's keys at a time.

:func:`models.training.split_rows` orders the window's impressions by query id (then position) and cuts them
by each query's first impression; it needs the key columns of the whole window in memory: 22.5M rows of text
ids and times, about 2.5 GB, at 30M interactions. When the window comes as files of query days in which each
query is one run of rows of one day, in the order ``features.labels.in_label_order`` gives (a query's rows by
position), the same rows in the same order follow from one entry per query (its id, first row, length and
first time): the query ids are sorted, not the rows. :func:`write_split_from_days` writes that split: the same
files, row for row, with the same schema, as :func:`models.training.split_rows` + :func:`write_split` over the
days' rows concatenated, holding a chunk of rows, a day's keys and an entry per query.

The split needs only the keys: :func:`plan_split` decides it (its order on disk), :meth:`SplitPlan.save_ordered`
lays each feature column out in that order, and :meth:`SplitPlan.write` lays out the keys and writes the parts.
The local stage decides it after the features: decided before them, beside the window's events, it raised the
stage's peak (docs/performance.md, stop 49).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from core.config.ranker import split_starts
from models.training import PARTS, SPLIT_ROW_GROUP_ROWS, SplitFiles, arrow_table, write_split_parts


def _read(path: Path, columns: list[str] | None = None) -> pa.Table:
    """An Arrow IPC file (``.arrow``, memory-mapped, one thread) or a Parquet file."""
    if path.suffix == ".arrow":
        return feather.read_table(path, columns=columns, memory_map=True, use_threads=False)
    return pq.read_table(path, columns=columns)


@dataclass(frozen=True)
class DayKeys:
    """Where the days' key columns were parked uncompressed (read back a chunk at a time through a memory map)."""

    offsets: np.ndarray  # each day's first row in the window, and the window's rows last (int64)
    keys: list[Path]  # each day's key columns, uncompressed
    schema: pa.Schema  # the key columns' Arrow types (the same on every day)

    def take(self, rows: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
        """The key columns of window rows ``rows``, in their order, as the window's concatenated frame gives
        them (before its dtypes: a chunk without missing integers has int dtype where the window has float).
        Each day's file is mapped for its rows only: its pages are not kept."""
        return self.take_table(rows, columns).to_pandas()

    def take_table(self, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """:meth:`take` as the Arrow table it converts."""
        day = np.searchsorted(self.offsets, rows, side="right") - 1
        pieces, where = [], []
        for d in np.unique(day):
            at = np.flatnonzero(day == d)
            with pa.memory_map(str(self.keys[d])) as source:
                table = pa.ipc.open_file(source).read_all()
                if columns is not None:
                    table = table.select(columns)
                pieces.append(table.take(pa.array(rows[at] - self.offsets[d])))
                del table
            where.append(at)
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        if not pieces:
            return schema.empty_table()
        inverse = np.empty(len(rows), dtype=np.int64)
        inverse[np.concatenate(where)] = np.arange(len(rows))
        return pa.concat_tables(pieces).take(pa.array(inverse))


@dataclass(frozen=True)
class DayQueries(DayKeys):
    """The days' keys (:class:`DayKeys`) and one entry per query of the days (days in order, a day's queries in
    row order)."""

    ids: pa.Array  # each query's id
    starts: np.ndarray  # its first row in the window (int64)
    lengths: np.ndarray  # its rows (int64)
    first: np.ndarray  # its first impression's time, as int64 in the time column's unit
    ts_type: pa.TimestampType
    ts_span: tuple[int, int] | None  # the window's earliest and latest time (int64), None without rows
    null_rows: dict[str, int]  # per key column with a missing value: the window row of the first one

    def schema_of(self, rows: np.ndarray) -> pa.Schema:
        """The Arrow schema :func:`models.training.write_split` gives a part with window rows ``rows`` (its
        ``_part_schema`` over the window's frame): the types of its first row in the window's dtypes, and
        object columns' types from all the part's values."""
        nulls = sorted(set(self.null_rows.values()))  # a missing value gives a column the window's dtype
        head = self.take(np.array([*rows[:1], *nulls], dtype=np.int64))
        fields = []
        for name, field_ in zip(head.columns, arrow_table(head.iloc[:len(rows[:1])]).schema, strict=True):
            if head[name].dtype == object:
                field_ = field_.with_type(pa.Array.from_pandas(self.take(rows, [name])[name]).type)
            fields.append(field_)
        return pa.schema(fields)


def save_columns(days: Sequence[Path], names: Sequence[str], folder: Path) -> dict[str, Path]:
    """Each column ``names`` of the days' files, concatenated in the days' order, saved with ``np.save`` to
    ``<folder>/<name>.npy`` (what ``write_split`` reads through a memory map): one column at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = {}
    for name in names:
        saved[name] = folder / f"{name}.npy"
        np.save(saved[name], np.concatenate([_read(Path(p), [name]).column(0).to_numpy() for p in days]))
    return saved


def day_queries(days: Sequence[Path], key_columns: Sequence[str], scratch: Path) -> DayQueries | None:
    """Each query of ``days`` (Arrow IPC or Parquet files, in window order): its id, first row, length and
    first time; the days' ``key_columns`` parked in ``scratch``.

    Returns None when the days do not make the split this way: a query whose rows are not one run of one day
    (an id seen twice), a missing query id or time, a time column that is not a UTC-aware timestamp, key
    columns whose types differ between days, or dictionary-encoded keys."""
    scratch.mkdir(parents=True, exist_ok=True)
    columns = list(key_columns)
    offsets, ids, starts, lengths, first, keys = [0], [], [], [], [], []
    null_rows: dict[str, int] = {}
    schema: pa.Schema | None = None
    span: tuple[int, int] | None = None
    for i, path in enumerate(days):
        table = _read(Path(path), columns).combine_chunks()
        if schema is None:
            schema = table.schema
            ts = schema.field("ts").type
            if not (pa.types.is_timestamp(ts) and ts.tz in ("UTC", "+00:00")) or any(
                    pa.types.is_dictionary(f.type) for f in schema):
                return None
        elif not table.schema.equals(schema):
            return None
        query, time = table.column("query_id").chunk(0) if table.num_rows else None, table.column("ts")
        if table.num_rows and (query.null_count or time.null_count):
            return None
        base = offsets[-1]
        if table.num_rows:
            change = pc.not_equal(query.slice(1), query.slice(0, len(query) - 1)).to_numpy(zero_copy_only=False)
            run = np.flatnonzero(np.r_[True, change])
            ids.append(query.take(pa.array(run)))
            starts.append(base + run)
            lengths.append(np.diff(np.r_[run, len(query)]))
            stamp = time.cast(pa.int64()).to_numpy()
            first.append(np.minimum.reduceat(stamp, run))
            low, high = int(stamp.min()), int(stamp.max())
            span = (low, high) if span is None else (min(span[0], low), max(span[1], high))
            for name in columns:
                column = table.column(name)
                if column.null_count and name not in null_rows:
                    null_rows[name] = base + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        keys.append(scratch / f"keys-{i:05d}.arrow")
        feather.write_feather(table, keys[-1], compression="uncompressed", chunksize=max(1, table.num_rows))
        offsets.append(base + table.num_rows)
        del table
    if schema is None:
        return None
    every = pa.chunked_array(ids, type=schema.field("query_id").type).combine_chunks()
    ordered = every.take(pc.sort_indices(every))
    if len(ordered) > 1 and pc.any(pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))).as_py():
        return None  # a query in two runs: only the window-wide split orders its rows
    empty = np.zeros(0, dtype=np.int64)
    return DayQueries(offsets=np.asarray(offsets, dtype=np.int64), ids=every,
                      starts=np.concatenate(starts) if starts else empty,
                      lengths=np.concatenate(lengths) if lengths else empty,
                      first=np.concatenate(first) if first else empty, ts_type=schema.field("ts").type,
                      ts_span=span, null_rows=null_rows, keys=keys, schema=schema)


def plan_split(days: Sequence[Path], key_columns: Sequence[str], scratch: Path, *, end: datetime, valid_days: int,
               test_days: int) -> SplitPlan | None:
    """The time split of the days' rows decided from their key columns alone (no feature is read): the
    split's order (each part's window rows, the parts one after the other) on disk under ``scratch`` (which the
    caller removes), and each part's key schema. Holds an entry per query and a block of rows.

    ``key_columns`` must include ``query_id``, ``ts`` and ``label``. Returns None when :func:`day_queries` does
    not apply.

    Raises:
        ValueError: a part of the split is empty (``split_rows``' message).
    """
    missing = {"query_id", "ts", "label"} - set(key_columns)
    if missing:
        raise ValueError(f"time_split needs columns {sorted(missing)}; found {list(key_columns)}")
    index = day_queries(days, key_columns, scratch / "keys")
    if index is None:
        return None
    valid_start, test_start = split_starts(end, valid_days=valid_days, test_days=test_days)
    bounds = [pa.scalar(t, type=index.ts_type).cast(pa.int64()).as_py() for t in (valid_start, test_start, end)]
    masks = {"train": index.first < bounds[0], "valid": (index.first >= bounds[0]) & (index.first < bounds[1]),
             "test": (index.first >= bounds[1]) & (index.first < bounds[2])}
    empty = [name for name in PARTS if not masks[name].any()]
    if empty:
        low, high = (pd.Timestamp(v, unit=index.ts_type.unit, tz="UTC") for v in index.ts_span or (None, None))
        raise ValueError(
            f"time split leaves {empty} empty: window ends {end.isoformat()}, test from {test_start.isoformat()}, "
            f"valid from {valid_start.isoformat()}; impressions span {low} .. {high}"
        )
    folder = scratch / "ordered"
    folder.mkdir(parents=True, exist_ok=True)
    order_path = folder / "order.int64"
    by_id = pc.sort_indices(index.ids).to_numpy()
    sizes, queries = {}, {}
    with open(order_path, "wb") as out:  # a part's rows in query-id order, a run per query, written by block
        for name in PARTS:
            chosen = by_id[masks[name][by_id]]
            queries[name], sizes[name] = len(chosen), int(index.lengths[chosen].sum())
            for lo in range(0, len(chosen), _QUERY_BLOCK):
                _query_rows(index.starts, index.lengths, chosen[lo:lo + _QUERY_BLOCK]).tofile(out)
    del by_id, masks
    order = np.memmap(order_path, dtype=np.int64, mode="r") if sum(sizes.values()) else np.zeros(0, np.int64)
    schemas, at = {}, 0
    for name in PARTS:  # a part's first row, and all its rows only for an object column (mapped, not held)
        schemas[name] = index.schema_of(order[at:at + sizes[name]])
        at += sizes[name]
    del order
    return SplitPlan(folder=folder, order=order_path, sizes=sizes, queries=queries, schemas=schemas,
                     window_rows=int(index.offsets[-1]), days=DayKeys(index.offsets, index.keys, index.schema),
                     valid_start=valid_start, test_start=test_start)


def write_split_from_days(days: Sequence[Path], key_columns: Sequence[str], features: Sequence[str] | Mapping[str, Path],
                          directory: Path, scratch: Path, *, end: datetime, valid_days: int, test_days: int,
                          row_group_rows: int = SPLIT_ROW_GROUP_ROWS) -> SplitFiles | None:
    """The time split of the days' rows, as :func:`models.training.split_rows` then ``write_split`` over their
    concatenation write it (the same files): :func:`plan_split`, then each feature column laid out in the split's
    order. ``features``: the names of the days' feature columns, or each feature's values over the days' rows (in
    the days' order) saved with ``np.save``. ``scratch`` is the caller's to remove.

    Returns None, having written nothing in ``directory``, when :func:`day_queries` does not apply.

    Raises:
        ValueError: a part of the split is empty (``split_rows``' message), or ``key_columns`` lack ``query_id``,
            ``ts`` or ``label``.
    """
    plan = plan_split(days, key_columns, scratch, end=end, valid_days=valid_days, test_days=test_days)
    if plan is None:
        return None
    ordered = {}
    for name in features:  # one column in memory at a time (~0.2 GB at 58M float32 rows)
        values = (np.load(features[name]) if isinstance(features, Mapping)
                  else np.concatenate([_read(Path(p), [name]).column(0).to_numpy() for p in days]))
        ordered[name] = plan.save_ordered(name, values)
        del values
    return plan.write(ordered, directory, row_group_rows=row_group_rows)


# Rows of the split's order handled at once while its keys and feature columns are laid out in it: the key
# columns of this many rows are in memory twice (as taken from the days' files, then in order: ~0.14 GB of ids,
# times and labels of implicit queries), and each block reads every day's keys once.
ORDER_BLOCK_ROWS = 1 << 20
_QUERY_BLOCK = 1 << 18  # queries whose rows are written to the order at once


def _query_rows(starts: np.ndarray, lengths: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The window rows of queries ``chosen``, each query's run in turn."""
    length = lengths[chosen]
    within = np.arange(int(length.sum()), dtype=np.int64) - np.repeat(np.cumsum(length) - length, length)
    return np.repeat(starts[chosen], length) + within


def _order_block(path: Path, lo: int, total: int) -> np.ndarray:
    """Rows ``lo`` .. ``lo + ORDER_BLOCK_ROWS`` of the split's order (read, not mapped: its pages are not kept)."""
    count = min(ORDER_BLOCK_ROWS, total - lo)
    return np.fromfile(path, dtype=np.int64, count=count, offset=lo * 8)


@dataclass(frozen=True)
class OrderedKeys:
    """The split's key columns in its order (the parts one after the other), in one Arrow IPC file."""

    path: Path
    rows: int

    def __len__(self) -> int:
        return self.rows

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        """Rows ``rows`` (ascending runs: a row group's) as :meth:`DayQueries.take` gives them."""
        with pa.memory_map(str(self.path)) as source:
            table = pa.ipc.open_file(source).read_all()
            if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):
                return table.slice(int(rows[0]), len(rows)).to_pandas()
            return table.take(pa.array(rows)).to_pandas()


@dataclass(frozen=True)
class SplitPlan:
    """A time split decided from the days' keys alone (:func:`plan_split`): its order waits on disk; each feature
    column is laid out in that order (:meth:`save_ordered`, one column in memory), then the parts are written
    (:meth:`write`).

    A part's rows are in query-id order, spread over the whole window: a row group gathered straight from the
    window's files touched nearly every page of every column, once per group, a cost of the groups times the
    window (at 30M events of a log without slates the write took ~510 of the stage's 1,274 s, 38 s at 10M)."""

    folder: Path
    order: Path  # the window rows of each part in turn, raw int64
    sizes: dict[str, int]  # each part's rows
    queries: dict[str, int]  # each part's queries
    schemas: dict[str, pa.Schema]  # each part's key columns' types (``DayQueries.schema_of``)
    window_rows: int  # the days' rows, which a feature column holds
    days: DayKeys  # the days' key columns, laid out in the split's order when the parts are written
    valid_start: datetime
    test_start: datetime

    @property
    def rows(self) -> int:
        """The split's rows (its parts' together)."""
        return sum(self.sizes.values())

    def save_ordered(self, name: str, values: np.ndarray) -> Path:
        """``values`` (one per row of the days, in their order) written in the split's order to
        ``<folder>/<name>.npy``, a block of rows at a time (``np.load`` reads it back)."""
        if len(values) != self.window_rows:
            raise ValueError(f"feature {name!r} has {len(values)} rows; the days have {self.window_rows}")
        path = self.folder / f"{name}.npy"
        total = self.rows
        with open(path, "wb") as out:  # a .npy written by block: no memory map, whose dirty pages count as resident
            header = {"descr": np.lib.format.dtype_to_descr(values.dtype), "fortran_order": False, "shape": (total,)}
            np.lib.format.write_array_header_1_0(out, header)
            for lo in range(0, total, ORDER_BLOCK_ROWS):
                values[_order_block(self.order, lo, total)].tofile(out)
        return path

    def write(self, features: Mapping[str, Path], directory: Path, *,
              row_group_rows: int = SPLIT_ROW_GROUP_ROWS) -> SplitFiles:
        """The split's parts, from each feature laid out by :meth:`save_ordered`, to ``<directory>/<part>.parquet``.
        The key columns are laid out in the split's order first (a block of rows at a time; not before the
        features: their blocks were ~0.3 GB beside the window's events)."""
        path, total = self.folder / "keys.arrow", self.rows
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.days.schema) as writer:
            for lo in range(0, total, ORDER_BLOCK_ROWS):
                writer.write_table(self.days.take_table(_order_block(self.order, lo, total)))
        keys = OrderedKeys(path, total)
        placed, at = {}, 0
        for part in PARTS:
            placed[part] = np.arange(at, at + self.sizes[part], dtype=np.int64)
            at += self.sizes[part]
        return write_split_parts(placed, self.queries, total, keys.take, self.schemas, features, directory,
                                 valid_start=self.valid_start, test_start=self.test_start,
                                 row_group_rows=row_group_rows)
