"""Day partitions: how a stage's per-day work runs, and a window's valid rows cut into day files.

A stage that works per day is written once, as a function of one partition plus small shared
inputs; a :class:`Runner` runs it over the partitions: :class:`InProcess` one partition at a time in
this process (the local executor: memory of one day, not of the window), :class:`OnDask` on a Dask
cluster (``client.map``; shared inputs broadcast once). docs/scale-out.md.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from core.atomic import write_json

T = TypeVar("T")


class Runner(Protocol):
    """Runs a function over partitions."""

    def map(self, fn: Callable[..., T], items: Sequence[Any], **shared: Any) -> list[T]:
        """``[fn(item, **shared) for item in items]``, in order."""
        ...

    def share(self, obj: Any) -> Any:
        """``obj`` as an argument every partition receives (broadcast once on a cluster)."""
        ...


class InProcess:
    """One partition after the other, in this process."""

    def map(self, fn: Callable[..., T], items: Sequence[Any], **shared: Any) -> list[T]:
        return [fn(item, **shared) for item in items]

    def share(self, obj: Any) -> Any:
        return obj


class OnDask:
    """The partitions as tasks of a Dask cluster (``distributed.Client``)."""

    def __init__(self, client: Any):
        self.client = client

    def map(self, fn: Callable[..., T], items: Sequence[Any], **shared: Any) -> list[T]:
        return self.client.gather(self.client.map(fn, list(items), **shared, pure=False))

    def share(self, obj: Any) -> Any:
        return self.client.scatter(obj, broadcast=True)


def split_by_day(events_path: Path, folder: Path, *, batch_rows: int = 262_144, reuse: bool = False) -> dict[date, Path]:
    """The rows of ``events_path`` cut by the UTC day of ``ts``, one Parquet file per day that has rows.

    Streams the file (``pyarrow.dataset``: memory of a batch, not of the file); rows keep their order
    within a day. Written into a temporary folder that replaces ``folder`` at the end, so a killed
    split leaves no partial day files in use. Returns ``{day: path}``, days ascending.

    ``reuse``: when ``folder`` already holds the split of this very file (its path, size, modification time
    and rows, recorded beside the folder in ``<folder>.source.json`` by a split asked with ``reuse``, once the
    folder is in place), return it instead of cutting again (the local run's features and tables stages cut
    the same valid rows).
    """
    folder = Path(folder)
    stamp = folder.with_name(f"{folder.name}.source.json")
    source_id = _file_identity(events_path) if reuse else None
    if reuse and folder.is_dir() and stamp.exists():
        try:
            recorded = json.loads(stamp.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded == source_id:
            try:
                return _day_files(folder, events_path)
            except (RuntimeError, OSError, pa.ArrowException):  # a day file gone or damaged since: cut again
                pass
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    stamp.unlink(missing_ok=True)  # from here until the new folder is in place, nothing claims the folder
    source = ds.dataset(events_path, format="parquet")
    columns = {name: pc.field(name) for name in source.schema.names}
    columns["day"] = pc.field("ts").cast(pa.date32())
    # A scan, not a ParquetFile: pre-buffering off as core.parquet.open_for_streaming has it, for the same reason.
    ds.write_dataset(
        source.scanner(columns=columns, batch_size=batch_rows, use_threads=False, batch_readahead=1,
                       fragment_readahead=1,
                       fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False)), tmp, format="parquet",
        partitioning=ds.partitioning(pa.schema([("day", pa.date32())]), flavor="hive"),
        basename_template="part-{i}.parquet", preserve_order=True, use_threads=False,
        file_options=ds.ParquetFileFormat().make_write_options(compression="lz4"),
        existing_data_behavior="error",
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    paths = _day_files(folder, events_path)
    if reuse:
        write_json(stamp, source_id)
    return paths


def _file_identity(path: Path) -> dict[str, Any]:
    """What tells one events file from another: its resolved path, size, modification time and rows."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "rows": pq.ParquetFile(path).metadata.num_rows}


def _day_files(folder: Path, events_path: Path) -> dict[date, Path]:
    """``{day: file}`` of a split folder, checked: one file per day, as many rows in all as ``events_path``."""
    paths = {}
    for directory in sorted(folder.glob("day=*")):
        files = sorted(directory.glob("*.parquet"))
        if len(files) != 1:
            raise RuntimeError(f"expected one file per day in {directory}, found {[f.name for f in files]}")
        paths[date.fromisoformat(directory.name.removeprefix("day="))] = files[0]
    written = sum(pq.ParquetFile(p).metadata.num_rows for p in paths.values())
    total = pq.ParquetFile(events_path).metadata.num_rows
    if written != total:
        raise RuntimeError(f"split {events_path} into {written} rows of day files, expected {total}")
    return paths
