"""Day partitions: how a stage's per-day work runs, and a window's valid rows cut into day files.

A stage that works per day is written once, as a function of one partition plus small shared
inputs; a :class:`Runner` runs it over the partitions: :class:`InProcess` one partition at a time in
this process (the local executor: memory of one day, not of the window), :class:`OnDask` on a Dask
cluster (``client.map``; shared inputs broadcast once). docs/scale-out.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

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


def split_by_day(events_path: Path, folder: Path, *, batch_rows: int = 262_144) -> dict[date, Path]:
    """The rows of ``events_path`` cut by the UTC day of ``ts``, one Parquet file per day that has rows.

    Streams the file (``pyarrow.dataset``: memory of a batch, not of the file); rows keep their order
    within a day. Written into a temporary folder that replaces ``folder`` at the end, so a killed
    split leaves no partial day files in use. Returns ``{day: path}``, days ascending.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
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
