"""What a frame keeps alive: the bytes of the buffers behind its columns (for tests of code that drops rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def _arrays(values: object) -> list[np.ndarray]:
    if isinstance(values, pd.Categorical):
        return [values.codes, *_arrays(values.categories.array)]
    if hasattr(values, "asi8"):  # datetimes, timedeltas
        return [values.asi8]
    if hasattr(values, "_data") and hasattr(values, "_mask"):  # nullable integers, floats, booleans
        return [values._data, values._mask]
    return [np.asarray(values)]


def held_bytes(frame: pd.DataFrame) -> int:
    """Bytes of the buffers ``frame``'s columns keep alive, each counted once: every Arrow buffer of an
    Arrow-backed column, and the whole base array behind a numpy one (a view of no rows keeps all of it)."""
    seen: dict[int, int] = {}
    for _, column in frame.items():
        values = column.array
        if hasattr(values, "__arrow_array__"):
            arrow = values.__arrow_array__()
            for chunk in arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]:
                for buffer in chunk.buffers():
                    if buffer is not None:
                        seen[buffer.address] = max(seen.get(buffer.address, 0), buffer.size)
            continue
        for array in _arrays(values):
            while isinstance(array.base, np.ndarray):
                array = array.base
            address = array.__array_interface__["data"][0]
            seen[address] = max(seen.get(address, 0), array.nbytes)
    return sum(seen.values())
