"""Handing freed memory back to the operating system between the big steps of a stage.

Arrow's pool keeps pages it frees, and glibc keeps freed heap pages below its top: both stay resident
under whatever the process does next (~0.6 GB beside the ranker's training matrix at 10M interactions,
~1.7 GB through the features stage). :func:`release_memory` returns them. pyarrow's default pool,
mimalloc, kept 0.3-0.5 GB more resident in each stage of the 10M run by bucket even so; the runs use jemalloc, which pyarrow sets to
hand freed pages back at once (:func:`use_arrow_pool`, ``executor.arrow_memory_pool``)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging

import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

_POOLS = {"jemalloc": "jemalloc_memory_pool", "mimalloc": "mimalloc_memory_pool", "system": "system_memory_pool"}


def use_arrow_pool(backend: str) -> str:
    """Make ``backend`` (jemalloc, mimalloc or system) Arrow's default memory pool in this process, for
    what Arrow allocates from now on (buffers already allocated go back to their own pool). Returns
    the backend in use: the current one, with a warning, when this build of pyarrow lacks ``backend``."""
    if backend not in _POOLS:
        raise ValueError(f"unknown Arrow memory pool {backend!r}; use one of {sorted(_POOLS)}")
    current = pa.default_memory_pool().backend_name
    if backend == current:
        return current
    try:
        pool = getattr(pa, _POOLS[backend])()
    except NotImplementedError:  # a pyarrow built without it (jemalloc is not in every wheel)
        log.warning("this pyarrow has no %s memory pool: Arrow keeps its %s pool", backend, current)
        return current
    pa.set_memory_pool(pool)
    return backend


def release_memory(*, collect: bool = True) -> None:
    """Return freed memory to the OS: collect reference cycles (``collect``), release the Arrow pool's
    unused pages, and trim glibc's heap (a no-op where the C library is not glibc)."""
    if collect:
        gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


def empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame with ``frame``'s columns and dtypes and no rows that shares none of its buffers.

    ``frame.iloc[:0]`` (and its ``copy()``, for Arrow-backed columns) is a view that keeps every
    buffer of ``frame`` alive for as long as the empty frame lives: a table that "drops" its rows that
    way still holds them."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in frame.dtypes.items()},
                        columns=frame.columns)
