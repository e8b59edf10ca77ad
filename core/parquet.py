"""Opening a Parquet file to read it batch by batch or a row group at a time."""

from __future__ import annotations

import os
from typing import Any

import pyarrow.parquet as pq


def open_for_streaming(path: str | os.PathLike[str], **kwargs: Any) -> pq.ParquetFile:
    """``pq.ParquetFile(path, **kwargs)`` with pre-buffering off, for a read in pieces (``iter_batches``,
    ``read_row_group``).

    Pre-buffering (pyarrow's default) has the reader keep every row group it has read until the file is
    closed, so a batched or streamed read ends up holding the whole file anyway. By hand, the capped
    1M-row read of the 10M train file peaked at 1,318 MB with it, 1,067 MB without (in a third of the
    time). The values read are the same either way; a whole file read once in one call gains nothing.

    Args:
        path: the Parquet file.
        kwargs: any other ``pq.ParquetFile`` argument (``read_dictionary``, ...); not ``pre_buffer``.
    """
    return pq.ParquetFile(path, pre_buffer=False, **kwargs)
