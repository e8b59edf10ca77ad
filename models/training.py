"""Time-based splitting of an impression frame into LambdaRank train/valid/test sets."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import atomic_write, write_parquet
from core.config.ranker import split_starts
from core.memory import release_memory
from core.parquet import arrow_table, open_for_streaming

PARTS = ("train", "valid", "test")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Impressions (features + ``label`` + ``query_id``), each part sorted so queries are contiguous."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    valid_start: datetime
    test_start: datetime

    def sizes(self) -> dict[str, int]:
        return {
            f"{name}_{what}": n
            for name, part in (("train", self.train), ("valid", self.valid), ("test", self.test))
            for what, n in (("rows", len(part)), ("queries", part["query_id"].nunique()))
        }


def time_split(frame: pd.DataFrame, *, end: datetime, valid_days: int, test_days: int) -> Split:
    """Split by the query's time: test = the last ``test_days`` before ``end``, valid the days before.

    A query (slate) is assigned by its earliest impression, so a slate never straddles two parts.

    Raises:
        ValueError: a required column is missing or a part is empty.
    """
    rows, valid_start, test_start = split_rows(frame, end=end, valid_days=valid_days, test_days=test_days)
    parts = {k: frame.take(r).reset_index(drop=True) for k, r in rows.items()}
    return Split(**parts, valid_start=valid_start, test_start=test_start)


def split_rows(frame: pd.DataFrame, *, end: datetime, valid_days: int,
               test_days: int) -> tuple[dict[str, np.ndarray], datetime, datetime]:
    """The rows of each part of :func:`time_split`, in its order (queries contiguous), without copying the frame.

    ``frame`` needs ``query_id``, ``ts`` and ``label`` (``position`` orders a query's rows when present).

    Returns:
        ({"train"|"valid"|"test": row positions}, valid_start, test_start).

    Raises:
        ValueError: a required column is missing or a part is empty.
    """
    missing = {"query_id", "ts", "label"} - set(frame.columns)
    if missing:
        raise ValueError(f"time_split needs columns {sorted(missing)}; found {list(frame.columns)}")
    valid_start, test_start = split_starts(end, valid_days=valid_days, test_days=test_days)
    # Each row's query's first time, through the queries' codes (a groupby's transform held ~0.5 GB more at
    # 19.3M rows); a row without a query id or a time is in no part.
    query, _ = pd.factorize(frame["query_id"], sort=True)
    us = _utc_us(frame["ts"])
    unknown = np.iinfo(np.int64).max
    first = np.full(int(query.max(initial=-1)) + 2, unknown, dtype=np.int64)  # the last slot: no query id
    np.minimum.at(first, query, np.where(np.isnat(us), unknown, us.view(np.int64)))
    first[-1] = unknown
    query_us = first[query]
    del first, us
    bounds = [_utc_us(pd.Series([t])).view(np.int64)[0] for t in (valid_start, test_start, end)]
    masks = {
        "train": query_us < bounds[0],
        "valid": (query_us >= bounds[0]) & (query_us < bounds[1]),
        "test": (query_us >= bounds[1]) & (query_us < bounds[2]),
    }
    del query_us
    empty = [name for name, mask in masks.items() if not mask.any()]
    if empty:
        raise ValueError(
            f"time split leaves {empty} empty: window ends {end.isoformat()}, test from {test_start.isoformat()}, "
            f"valid from {valid_start.isoformat()}; impressions span {frame['ts'].min()} .. {frame['ts'].max()}"
        )
    order = _contiguous_order(frame, query)
    return {k: order[mask[order]] for k, mask in masks.items()}, valid_start, test_start


def _utc_us(ts: pd.Series) -> np.ndarray:
    """Times (tz-aware, any unit) as UTC ``datetime64[us]``; missing as NaT."""
    return pd.to_datetime(ts, utc=True).dt.tz_localize(None).to_numpy().astype("datetime64[us]")


def spill(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` to a Parquet file (atomic, lz4) that :func:`unspill` reads back with the same dtypes,
    values and column order (a stage parks what it needs again later out of memory)."""
    return write_parquet(arrow_table(frame), path, compression="lz4")


def unspill(path: Path) -> pd.DataFrame:
    """The frame :func:`spill` wrote."""
    return pq.read_table(path).to_pandas(self_destruct=True, split_blocks=True)


@dataclass(frozen=True)
class SplitFiles:
    """A time split kept as one Parquet file per part (what the weekly stages hand each other).

    Each file holds the columns of :class:`Split`'s frames in the same row order; read a part,
    or only some of its columns, when it is needed.
    """

    paths: dict[str, Path]
    valid_start: datetime
    test_start: datetime
    counts: dict[str, int] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Rows and queries per part, as :meth:`Split.sizes`."""
        return dict(self.counts)

    def read(self, part: str, columns: list[str] | None = None, rows: np.ndarray | None = None, *,
             categorical: Sequence[str] = ()) -> pd.DataFrame:
        """One part (``train``, ``valid`` or ``test``) as a DataFrame: optionally only ``columns``, and
        only the rows where the boolean mask ``rows`` (one per row of the part) is True, filtered
        batch by batch while reading (the unfiltered part is never in memory). ``categorical``: columns read
        as categoricals from the file's dictionary pages (the key columns are written with them): a query id
        is then a 4-byte code, not its text (~38 bytes a row of an implicit query)."""
        if part not in self.paths:
            raise ValueError(f"no split part {part!r}; parts are {sorted(self.paths)}")
        dictionary = list(categorical) or None
        if rows is None:  # Arrow's buffers freed as pandas takes each column: never both whole in memory
            return pq.read_table(self.paths[part], columns=columns, read_dictionary=dictionary).to_pandas(
                self_destruct=True, split_blocks=True)
        file = open_for_streaming(self.paths[part], read_dictionary=dictionary)
        if len(rows) != file.metadata.num_rows:
            raise ValueError(f"row mask has {len(rows)} values; split part {part!r} has {file.metadata.num_rows} rows")
        batches, lo = [], 0
        for batch in file.iter_batches(batch_size=262_144, columns=columns):
            batches.append(batch.filter(pa.array(rows[lo:lo + batch.num_rows])))
            lo += batch.num_rows
        if not batches:  # an empty part
            return pq.read_table(self.paths[part], columns=columns, read_dictionary=dictionary).to_pandas()
        table = pa.Table.from_batches(batches)
        del batches  # the table holds the only reference: its buffers go as pandas takes them
        frame = table.to_pandas(self_destruct=True, split_blocks=True)
        del table
        release_memory(collect=False)  # the unfiltered batches' pages
        return frame

    def read_matrix(self, part: str, columns: list[str], rows: np.ndarray | None = None
                    ) -> tuple[pd.DataFrame, dict[str, str]]:
        """:func:`read_matrix` of one part (``train``, ``valid`` or ``test``)."""
        if part not in self.paths:
            raise ValueError(f"no split part {part!r}; parts are {sorted(self.paths)}")
        return read_matrix(self.paths[part], columns, rows)

    def iter_matrix(self, part: str, columns: list[str], rows: np.ndarray | None = None) -> Iterator[pd.DataFrame]:
        """:func:`iter_matrix` of one part: its matrix a batch at a time."""
        if part not in self.paths:
            raise ValueError(f"no split part {part!r}; parts are {sorted(self.paths)}")
        return iter_matrix(self.paths[part], columns, rows)


@runtime_checkable
class SplitParts(Protocol):
    """What the weekly stages read of a time split however it is stored: :class:`SplitFiles` (the local
    run: one file per part) or ``rankloop.distributed.PartitionedSplit`` (Dask: files per query day)."""

    paths: dict[str, Path]
    valid_start: datetime
    test_start: datetime

    def sizes(self) -> dict[str, int]:
        """Rows and queries per part."""
        ...

    def read(self, part: str, columns: list[str] | None = None, rows: np.ndarray | None = None, *,
             categorical: Sequence[str] = ()) -> pd.DataFrame:
        """``columns`` of one part, queries contiguous; only the rows where the boolean mask ``rows`` is True;
        ``categorical`` ones as categoricals."""
        ...

    def read_matrix(self, part: str, columns: list[str], rows: np.ndarray | None = None
                    ) -> tuple[pd.DataFrame, dict[str, str]]:
        """``columns`` of one part as the matrix LightGBM reads (:func:`read_matrix`)."""
        ...

    def iter_matrix(self, part: str, columns: list[str], rows: np.ndarray | None = None) -> Iterator[pd.DataFrame]:
        """The same matrix a batch of rows at a time (:func:`iter_matrix`)."""
        ...


def relevant(split: SplitParts, part: str, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of ``split``'s ``part`` whose query has a relevant item (label > 0; NDCG is undefined for
    the rest, as :func:`with_positive_label`): ``columns`` of them, and their mask over the part's rows
    (for ``read_matrix``)."""
    keys = split.read(part, list(dict.fromkeys(["query_id", "label", *columns])), categorical=["query_id"])
    mask = positive_query_rows(keys)
    return keys.loc[mask, list(columns)].reset_index(drop=True), mask


def read_matrix(path: Path, columns: list[str], rows: np.ndarray | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """``columns`` of a split part's file as what LightGBM reads, without a frame of them first: one float
    matrix filled batch by batch (float32 when every column converts exactly, else float64: the rule of
    ``models.ranker``, which then uses the matrix as it is), wrapped in a DataFrame that shares its
    memory; and the dtype each column has when read as a frame (what a model's signature records).
    ``rows``: a boolean mask over the file's rows, applied batch by batch."""
    file, dtype, n = _matrix_file(path, columns, rows)
    matrix = np.empty((n, len(columns)), dtype=dtype, order="F")
    nulls = dict.fromkeys(columns, False)
    kept = 0
    for batch in _matrix_batches(file, columns, rows, dtype, nulls):
        matrix[kept:kept + len(batch)] = batch
        kept += len(batch)
    # The read's decoded pages back to the OS: Arrow's pool (mimalloc) and glibc keep freed pages, which
    # held ~0.6 GB beside a 1M-row matrix at 10M interactions, under LightGBM's fit.
    release_memory(collect=False)
    types = {name: file.schema_arrow.field(name).type for name in columns}
    dtypes = {name: _pandas_dtype(types[name], nulls[name]) for name in columns}
    return pd.DataFrame(matrix, columns=list(columns), copy=False), dtypes


def iter_matrix(path: Path, columns: list[str], rows: np.ndarray | None = None) -> Iterator[pd.DataFrame]:
    """:func:`read_matrix`'s matrix a row group at a time (its kept rows; the same values and dtype, decided
    once for the whole file), each a DataFrame sharing its batch's memory: for scoring a part whose
    matrix need never be whole (a split part's row groups are ``SPLIT_ROW_GROUP_ROWS`` rows)."""
    file, dtype, _ = _matrix_file(path, columns, rows)
    for batch in _matrix_batches(file, columns, rows, dtype):
        yield pd.DataFrame(batch, columns=list(columns), copy=False)


def predict_in_batches(predict: Callable[[pd.DataFrame], Any], batches: Iterable[pd.DataFrame],
                       keep: Sequence[str] = ()) -> tuple[np.ndarray, pd.DataFrame]:
    """``predict`` of each batch of rows (:meth:`SplitParts.iter_matrix`), the scores in row order as float64
    (a row's score does not depend on the rows beside it), and the ``keep`` columns of every row."""
    scores, kept = [], []
    for X in batches:
        scores.append(np.asarray(predict(X), dtype=np.float64))
        if keep:
            kept.append(X[list(keep)].copy())
    frame = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=list(keep))
    return (np.concatenate(scores) if scores else np.empty(0, dtype=np.float64)), frame


def _matrix_file(path: Path, columns: list[str], rows: np.ndarray | None) -> tuple[pq.ParquetFile, type, int]:
    """The opened file, the matrix dtype of ``columns`` (float32 when all are exact in it) and the rows kept."""
    file = open_for_streaming(path)
    if rows is not None and len(rows) != file.metadata.num_rows:
        raise ValueError(f"row mask has {len(rows)} values; {path.name} has {file.metadata.num_rows} rows")
    exact = all(_exact_in_float32(file, name, file.schema_arrow.field(name).type) for name in columns)
    n = file.metadata.num_rows if rows is None else int(np.count_nonzero(rows))
    return file, np.float32 if exact else np.float64, n


# Columns of a row group decoded per read by :func:`_matrix_batches`.
_MATRIX_COLUMNS_PER_READ = 8


def _matrix_batches(file: pq.ParquetFile, columns: list[str], rows: np.ndarray | None, dtype: type,
                    nulls: dict[str, bool] | None = None) -> Iterator[np.ndarray]:
    """The kept rows of each row group of ``columns`` as a column-major ``dtype`` matrix (ints and bools
    as floats, nulls as NaN), the group decoded ``_MATRIX_COLUMNS_PER_READ`` columns at a time
    (``read_row_group``); records in ``nulls`` which columns had a null. A row group without a kept row
    yields nothing.

    Not ``iter_batches``: reading the 10M run's capped train matrix (1M x 87 float32, 373 MB) through
    it left 1,055 MB resident (peak 1,216) where reading it this way leaves 719 (peak 744), in 40% less
    time: the decoded batches of every column, freed, stay with the allocator."""
    seen = 0
    for g in range(file.metadata.num_row_groups):
        size = file.metadata.row_group(g).num_rows
        keep = None if rows is None else rows[seen:seen + size]
        seen += size
        count = size if keep is None else int(np.count_nonzero(keep))
        if count == 0:
            continue
        mask = None if keep is None or count == size else pa.array(keep)
        matrix = np.empty((count, len(columns)), dtype=dtype, order="F")
        for lo in range(0, len(columns), _MATRIX_COLUMNS_PER_READ):
            names = columns[lo:lo + _MATRIX_COLUMNS_PER_READ]
            table = file.read_row_group(g, columns=list(dict.fromkeys(names)))
            if mask is not None:
                table = table.filter(mask)
            for j, name in enumerate(names, start=lo):
                column = table.column(name)
                if nulls is not None:
                    nulls[name] |= column.null_count > 0
                if not pa.types.is_floating(column.type):  # ints and bools, nulls as NaN
                    column = column.cast(pa.float64())
                matrix[:, j] = column.to_numpy()
            table = column = None
        yield matrix


class MatrixRows:
    """The kept rows of a split part's file as LightGBM reads a dataset in batches (a ``lightgbm.Sequence``,
    registered as one by ``models.ranker``: this module does not import LightGBM, ~80 MB in every process):
    :func:`read_matrix`'s values, a ``batch_size`` rows at a time, row-major, read a row group at a time:
    never the whole matrix.
    The validation Dataset is built from it against the training Dataset's bins (the same bins the
    whole matrix gives), so the week's validation rows are never a float matrix in memory.

    ``columns`` and ``schema`` (a zero-row frame with the dtypes the columns have when read as a frame)
    are what ``models.ranker.Ranker.fit`` checks; ``select`` reorders the columns."""

    batch_size = 65_536  # rows per batch LightGBM asks for

    def __init__(self, path: Path, columns: list[str], rows: np.ndarray | None = None):
        self.path, self.rows, self.columns = Path(path), rows, list(columns)
        file, self.dtype, self._n = _matrix_file(self.path, self.columns, rows)
        # by position: a name given twice stays twice, for fit's duplicate-name check
        self.schema = pd.DataFrame({i: pd.Series([], dtype=_pandas_dtype(file.schema_arrow.field(name).type, False))
                                    for i, name in enumerate(self.columns)}).set_axis(self.columns, axis=1)
        self._reset()

    def select(self, columns: list[str]) -> MatrixRows:
        """The same rows with ``columns`` in that order."""
        return MatrixRows(self.path, columns, self.rows)

    def __len__(self) -> int:
        return self._n

    def _reset(self) -> None:
        self._batches: Iterator[np.ndarray] | None = None
        self._buffer = np.empty((0, len(self.columns)), dtype=self.dtype)
        self._at = 0  # the row the buffer starts at

    def __getitem__(self, idx: int | slice) -> np.ndarray:
        if isinstance(idx, slice):
            start, stop, step = idx.indices(self._n)
            if step != 1:
                raise IndexError("MatrixRows reads contiguous slices only")
            return self._rows(start, max(start, stop))
        if not -self._n <= idx < self._n:
            raise IndexError(f"row {idx} of {self._n}")
        idx %= self._n
        # One row is what LightGBM's sampling for the bins reads: as float64, the type it requires there (the
        # matrix path widens each sampled float32 to a double too). Slices keep the matrix dtype.
        return self._rows(idx, idx + 1)[0].astype(np.float64)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as one C-ordered matrix. Read forward from the last read (how LightGBM reads
        a Sequence: slice after slice); a read before it starts the file again."""
        if self._batches is None or start < self._at:
            self._reset()
            self._batches = _matrix_batches(open_for_streaming(self.path), self.columns, self.rows, self.dtype)
        pieces = []
        while True:
            end = self._at + len(self._buffer)
            if start < end and stop > self._at:
                pieces.append(self._buffer[max(0, start - self._at):stop - self._at])
            if end >= stop:
                break
            following = next(self._batches, None)
            if following is None:
                break
            self._at, self._buffer = end, following
        if not pieces:
            return np.empty((0, len(self.columns)), dtype=self.dtype)
        return np.ascontiguousarray(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))


def _exact_in_float32(file: pq.ParquetFile, name: str, kind: pa.DataType) -> bool:
    """Whether every value of column ``name`` is a float32: float32s, bools, ints of 16 bits or fewer, and
    wider ints whose row groups' statistics bound them within +-2**24 (no statistics: not known, no)."""
    if pa.types.is_boolean(kind) or pa.types.is_float32(kind) or pa.types.is_float16(kind):
        return True
    if not pa.types.is_integer(kind):
        return False
    if kind.bit_width <= 16:
        return True
    leaf = [file.metadata.schema.column(k).path for k in range(file.metadata.num_columns)].index(name)
    for g in range(file.metadata.num_row_groups):
        group = file.metadata.row_group(g)
        stats = group.column(leaf).statistics
        if stats is not None and stats.null_count == group.num_rows:
            continue  # all null: no value to bound
        if stats is None or not stats.has_min_max:
            return False
        if stats.min < -FLOAT32_INT_LIMIT or stats.max > FLOAT32_INT_LIMIT:
            return False
    return True


FLOAT32_INT_LIMIT = 2**24  # every integer of magnitude <= 2**24 is a float32


def matrix_dtypes(path: Path, columns: list[str], rows: np.ndarray | None = None) -> dict[str, str]:
    """The dtype each of ``columns`` has when the kept ``rows`` of ``path`` are read as a frame: what
    :func:`read_matrix` returns beside its matrix, without reading the matrix. Only an integer or boolean
    column whose row group's statistics count nulls is read, that group's one column (its dtype depends on
    whether a kept row is null)."""
    file = open_for_streaming(path)
    if rows is not None and len(rows) != file.metadata.num_rows:
        raise ValueError(f"row mask has {len(rows)} values; {Path(path).name} has {file.metadata.num_rows} rows")
    leaves = [file.metadata.schema.column(k).path for k in range(file.metadata.num_columns)]
    out = {}
    for name in columns:
        kind = file.schema_arrow.field(name).type
        had_nulls = False
        if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            seen = 0
            for g in range(file.metadata.num_row_groups):
                group = file.metadata.row_group(g)
                keep = None if rows is None else rows[seen:seen + group.num_rows]
                seen += group.num_rows
                stats = group.column(leaves.index(name)).statistics
                if (stats is not None and stats.null_count == 0) or (keep is not None and not keep.any()):
                    continue
                column = file.read_row_group(g, columns=[name]).column(name)
                if keep is not None:
                    column = column.filter(pa.array(keep))
                if column.null_count > 0:
                    had_nulls = True
                    break
        out[name] = _pandas_dtype(kind, had_nulls)
    return out


def _pandas_dtype(kind: pa.DataType, had_nulls: bool) -> str:
    """The dtype pandas gives an Arrow column of ``kind`` (integers with nulls become float64, booleans object)."""
    if had_nulls and pa.types.is_integer(kind):
        return "float64"
    if had_nulls and pa.types.is_boolean(kind):
        return "object"
    return str(np.dtype(kind.to_pandas_dtype()))


# Rows per Parquet row group of a split part: the unit a part's matrix is read in (:func:`iter_matrix`,
# :class:`MatrixRows`), 45 MB as float32 at 87 features. (It was pyarrow's default, 1M rows.)
SPLIT_ROW_GROUP_ROWS = 128 * 1024


def write_split(rows: dict[str, np.ndarray], keys: pd.DataFrame, features: Mapping[str, np.ndarray | Path],
                directory: Path, *, valid_start: datetime, test_start: datetime,
                row_group_rows: int = SPLIT_ROW_GROUP_ROWS) -> SplitFiles:
    """Write each part's rows of ``keys`` and ``features`` to ``<directory>/<part>.parquet``.

    A part goes out one row group at a time: only that group's rows of every column are in
    memory (a feature saved with ``np.save`` is read through a memory map, group by group), so
    the write never holds the feature matrix, whatever the window's size.

    Args:
        rows: row positions of each part, in order (:func:`split_rows`).
        keys: the id, time and label columns (``query_id`` first), one row per impression.
        features: feature columns in order, each an array aligned with ``keys`` or the path of one
            saved with ``np.save``.
        directory: where the files go; each is written to a temporary name and moved into place.
        row_group_rows: rows per row group (and per step of the write).
    """
    query_code = pd.factorize(keys["query_id"])[0]
    queries = {}
    for part, part_rows in rows.items():
        codes = query_code[part_rows]
        queries[part] = len(np.unique(codes[codes >= 0]))
    return write_split_parts(rows, queries, len(keys), lambda chunk: keys.take(chunk).reset_index(drop=True),
                             lambda part_rows: _part_schema(keys, part_rows), features, directory,
                             valid_start=valid_start, test_start=test_start, row_group_rows=row_group_rows)


def write_split_parts(rows: dict[str, np.ndarray], queries: dict[str, int], n: int,
                      take_keys: Callable[[np.ndarray], pd.DataFrame],
                      schema_of: Callable[[np.ndarray], pa.Schema] | Mapping[str, pa.Schema],
                      features: Mapping[str, np.ndarray | Path], directory: Path, *, valid_start: datetime,
                      test_start: datetime, row_group_rows: int = SPLIT_ROW_GROUP_ROWS) -> SplitFiles:
    """:func:`write_split` with the key columns read through ``take_keys`` (the keys of some row positions, in
    their order) and each part's key schema from ``schema_of`` (its row positions): for keys that are never
    in memory whole (``models.day_split``), or each part's key schema given. ``n`` rows in all; ``queries``: each
    part's number of queries."""
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}")
    for name, source in features.items():
        length = len(np.load(source, mmap_mode="r")) if isinstance(source, (str, os.PathLike)) else len(source)
        if length != n:
            raise ValueError(f"feature {name!r} has {length} rows; keys have {n}")
    directory.mkdir(parents=True, exist_ok=True)
    paths, counts = {}, {}
    for part, part_rows in rows.items():
        schema = schema_of[part] if isinstance(schema_of, Mapping) else schema_of(part_rows)

        def write(tmp: Path, part_rows: np.ndarray = part_rows, schema: pa.Schema = schema) -> None:
            # Dictionary pages for the key columns only (ids repeat): a feature column's values mostly do not,
            # and Parquet's dictionary attempt on them made the write ~3x slower (15 of ~100 s of the 10M
            # features stage) for ~10% smaller files that read no faster.
            with pq.ParquetWriter(tmp, _with_features(schema, features, part_rows), compression="lz4",
                                  use_dictionary=list(schema.names)) as writer:
                for lo in range(0, len(part_rows), row_group_rows):  # an empty part: no row group
                    chunk = part_rows[lo:lo + row_group_rows]
                    table = arrow_table(take_keys(chunk)).cast(schema)
                    for name, source in features.items():
                        table = table.append_column(name, pa.array(_gather(source, chunk)))
                    writer.write_table(table, row_group_size=row_group_rows)
                    del table

        paths[part] = atomic_write(directory / f"{part}.parquet", write)
        counts[f"{part}_rows"], counts[f"{part}_queries"] = len(part_rows), queries[part]
    return SplitFiles(paths=paths, valid_start=valid_start, test_start=test_start, counts=counts)


def _gather(source: np.ndarray | Path, rows: np.ndarray) -> np.ndarray:
    """``source[rows]``; a saved column is mapped for the gather only (its pages are not kept)."""
    if isinstance(source, (str, os.PathLike)):
        mapped = np.load(source, mmap_mode="r")
        try:
            return np.asarray(mapped[rows])
        finally:
            del mapped
    return np.asarray(source)[rows]


def _part_schema(keys: pd.DataFrame, part_rows: np.ndarray) -> pa.Schema:
    """The Arrow types of a part's key columns, as one conversion of the whole part would infer
    them: typed columns from their dtype, object columns (e.g. all-null ones) from all their values,
    categorical ones as their values (the file holds the ids, not codes)."""
    head = arrow_table(keys.take(part_rows[:1]).reset_index(drop=True))
    fields = []
    for name, field_ in zip(keys.columns, head.schema, strict=True):
        if keys[name].dtype == object:
            field_ = field_.with_type(pa.Array.from_pandas(keys[name].take(part_rows)).type)
        elif pa.types.is_dictionary(field_.type):
            field_ = field_.with_type(field_.type.value_type)
        fields.append(field_)
    return pa.schema(fields)


def _with_features(schema: pa.Schema, features: Mapping[str, np.ndarray | Path], part_rows: np.ndarray) -> pa.Schema:
    for name, source in features.items():
        schema = schema.append(pa.field(name, pa.array(_gather(source, part_rows[:0])).type))
    return schema


def _contiguous_order(frame: pd.DataFrame, query: np.ndarray) -> np.ndarray:
    """Row order of a stable sort by (query_id, position), missing values last. ``query``: the rows' codes of
    ``pd.factorize(frame["query_id"], sort=True)``.

    Each part takes its rows in this order: one copy per part instead of a filtered copy that is
    then sorted (a stable sort restricted to a subset is the subset's stable sort)."""
    query = np.where(query < 0, len(query), query)
    position = frame["position"].to_numpy(dtype=np.float64, na_value=np.nan) if "position" in frame else None
    if position is None or np.isnan(position).all():  # no slot to order by (implicit queries): by query alone
        return np.argsort(query, kind="stable")
    return np.lexsort((position, query))


def group_sizes(part: pd.DataFrame) -> np.ndarray:
    """Sizes of consecutive query groups (the frame must be sorted by ``query_id``)."""
    q = part["query_id"]
    q = q.cat.codes.to_numpy() if isinstance(q.dtype, pd.CategoricalDtype) else q.to_numpy()  # no text made
    if len(q) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    return np.diff(np.r_[starts, len(q)]).astype(np.int64)


def with_positive_label(part: pd.DataFrame) -> pd.DataFrame:
    """Only queries with at least one relevant (label > 0) item: NDCG is undefined for the rest."""
    return part[positive_query_rows(part)].reset_index(drop=True)


def positive_query_rows(part: pd.DataFrame) -> np.ndarray:
    """Boolean per row of ``part`` (query_id, label): its query has a relevant (label > 0) item."""
    return (part.groupby("query_id", sort=False)["label"].transform("max") > 0).to_numpy()


def cap_queries(part: pd.DataFrame, max_queries: int | None, *, seed: int = 0) -> pd.DataFrame:
    """At most ``max_queries`` whole queries of ``part`` (all of it when it has no more, or None).

    The queries kept are those with the smallest seeded hash of ``query_id``: deterministic and
    independent of row order. Rows keep their order, so contiguous queries stay contiguous.

    Raises:
        ValueError: ``max_queries`` < 1 or ``part`` has no ``query_id``.
    """
    if max_queries is None:
        return part
    if max_queries < 1 or "query_id" not in part.columns:
        raise ValueError(f"cap_queries needs max_queries >= 1 and a query_id column; got {max_queries!r}, "
                         f"columns {list(part.columns)}")
    keep = cap_mask(part["query_id"], max_queries, seed=seed)
    return part if keep is None else part[keep].reset_index(drop=True)


def cap_mask(query_id: pd.Series, max_queries: int, *, seed: int = 0) -> np.ndarray | None:
    """The rows :func:`cap_queries` keeps, as a boolean mask over ``query_id``; None when it keeps all."""
    if max_queries < 1:
        raise ValueError(f"cap_mask needs max_queries >= 1; got {max_queries!r}")
    codes, uniques = pd.factorize(query_id)
    if len(uniques) <= max_queries:
        return None
    hashes = pd.util.hash_array(np.asarray(uniques, dtype=object), hash_key=f"rankloop{seed % 10**8:08d}")
    keep = np.zeros(len(uniques), dtype=bool)
    keep[np.argpartition(hashes, max_queries - 1)[:max_queries]] = True
    return keep[codes]


@dataclass(frozen=True)
class TrainingMatrices:
    """What the ranker fits (:func:`training_matrices`): the capped train rows and the validation rows
    whose query has a relevant item, each as the rows LightGBM reads in batches plus its key columns."""

    X: MatrixRows  # the capped train rows' features, read batch by batch as LightGBM builds its Dataset
    dtypes: dict[str, str]  # each feature's dtype when read as a frame (what a model's signature records)
    train: pd.DataFrame  # the same rows' query_id, label, and position / propensity when the part has them
    X_valid: MatrixRows  # the validation rows' features, read batch by batch as LightGBM builds its Dataset
    valid: pd.DataFrame  # their query_id and label
    train_rows_available: int  # the train part's rows before the cap
    valid_rows_available: int  # the validation rows of queries with a relevant item, before the cap


def training_matrices(split: SplitFiles, features: list[str], *, max_train_queries: int | None,
                      max_valid_queries: int | None, seed: int) -> TrainingMatrices:
    """The ranker's training and validation matrices from ``split``'s files, read as the fit needs them.

    Train keeps at most ``max_train_queries`` whole queries (:func:`cap_mask` with ``seed``; all of them
    when None); validation keeps the queries with a relevant item (NDCG is undefined for the rest,
    :func:`relevant`), at most ``max_valid_queries`` of them (the same rule). Both feature matrices are
    :class:`MatrixRows`, read a row group at a time as LightGBM bins them (``models.ranker`` builds the
    same Dataset a whole matrix gives): neither is ever a float matrix in memory. The train matrix was:
    3.1M rows x 90 features at 10M interactions of a log without slates (~31 rows a query); uncapped, the
    validation week's binned rows grow with the window (3.9M at 10M, 11.8M at 30M). The key columns are
    read whole, filtered while read."""
    query_id = split.read("train", ["query_id"], categorical=["query_id"])["query_id"]  # codes, not 34M texts at 30M
    available = len(query_id)
    keep = cap_mask(query_id, max_train_queries, seed=seed) if max_train_queries is not None else None
    del query_id
    release_memory(collect=False)  # the ids' text (Arrow-backed: ~0.2 GB of pages kept by the pool at 10M)
    bias = [c for c in ("position", "propensity") if c in pq.read_schema(split.paths["train"]).names]
    train = split.read("train", ["query_id", "label", *bias], rows=keep, categorical=["query_id"])  # the capped rows
    if len(train) < available:
        log.info("training on %d of %d rows (max_train_queries=%d)", len(train), available, max_train_queries)
    X = MatrixRows(split.paths["train"], features, keep)
    dtypes = matrix_dtypes(split.paths["train"], features, keep)
    valid, positive = relevant(split, "valid", ["query_id", "label"])
    valid_available = len(valid)
    capped = cap_mask(valid["query_id"], max_valid_queries, seed=seed) if max_valid_queries is not None else None
    if capped is not None:  # the kept relevant queries' rows, as a mask over the part's rows
        positive = positive.copy()
        positive[np.flatnonzero(positive)[~capped]] = False
        valid = valid[capped].reset_index(drop=True)
        log.info("early-stopping on %d of %d validation rows (max_valid_queries=%d)", len(valid), valid_available,
                 max_valid_queries)
    X_valid = MatrixRows(split.paths["valid"], features, positive)
    del keep, capped
    release_memory(collect=False)  # what the reads freed, before LightGBM bins the matrices
    return TrainingMatrices(X=X, dtypes=dtypes, train=train, X_valid=X_valid, valid=valid,
                            train_rows_available=available, valid_rows_available=valid_available)
