"""Handing freed memory back to the operating system between the big steps of a stage.

Arrow's default pool (mimalloc) keeps the pages it frees, and glibc keeps freed heap pages below its
top: both stay resident under whatever the process does next (~0.6 GB beside the ranker's training
matrix at 10M interactions, ~1.7 GB through the features stage). :func:`release_memory` returns them."""

from __future__ import annotations

import contextlib
import ctypes
import gc

import pyarrow as pa


def release_memory(*, collect: bool = True) -> None:
    """Return freed memory to the OS: collect reference cycles (``collect``), release the Arrow pool's
    unused pages, and trim glibc's heap (a no-op where the C library is not glibc)."""
    if collect:
        gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)
