"""Value conversions that never fail a batch: a value that cannot be converted becomes null and is
reported (its row and raw text), so extraction keeps every row and the contract quarantines it.

Conversions are vectorised ``pyarrow.compute`` calls. When one raises on a batch (a text value
``'abc'`` in a number column, an epoch that overflows), :func:`convert_each` finds the offending
values by bisection: halves that convert are kept whole, so a batch with ``k`` bad values costs
about ``k * log2(rows)`` extra conversions of ever smaller slices, and a clean batch costs nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from sources.arrow_text import json_text

Converter = Callable[[pa.Array], pa.Array]
_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError, ValueError)
_EPOCH_TO_US = {"s": 1_000_000, "ms": 1_000, "us": 1}
_ZONED = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
UTC_US = pa.timestamp("us", tz="UTC")


def convert_each(convert: Converter, arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """``convert(arr)``, or, when that raises, each value converted on its own where possible.

    Returns:
        The converted array (``target`` type; null where a value failed) and a boolean mask of the
        failed positions (None when nothing failed).
    """
    try:
        return convert(arr), None
    except _CONVERSION_ERRORS:
        pass
    pieces: list[tuple[int, pa.Array]] = []
    failed = np.zeros(len(arr), dtype=bool)
    pending = [(0, len(arr))]
    while pending:
        lo, hi = pending.pop()
        try:
            pieces.append((lo, convert(arr.slice(lo, hi - lo))))
            continue
        except _CONVERSION_ERRORS:
            pass
        if hi - lo == 1:
            failed[lo] = True
            pieces.append((lo, pa.nulls(1, target)))
        else:
            mid = (lo + hi) // 2
            pending += [(mid, hi), (lo, mid)]
    pieces.sort(key=lambda piece: piece[0])
    return pa.concat_arrays([p.cast(target) for _, p in pieces]), failed


def raw_text(arr: pa.Array) -> pa.Array:
    """The values as text, for the record of what could not be converted."""
    if pa.types.is_string(arr.type):
        return arr
    if pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    try:
        return arr.cast(pa.string())
    except _CONVERSION_ERRORS:
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
            return pa.array([None if v is None else v.decode("utf-8", "backslashreplace")
                             for v in arr.to_pylist()], pa.string())
        return json_text(arr)


def blank_to_null(text: pa.Array) -> pa.Array:
    """Text with surrounding spaces trimmed; empty text becomes null (an empty cell is a missing value)."""
    trimmed = pc.utf8_trim_whitespace(text)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def to_number(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Numbers (int/float/decimal/bool) or numeric text as ``target``; NaN becomes null for integers."""
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = blank_to_null(arr.cast(pa.string()))
        arr = arr.cast(pa.float64()) if pa.types.is_integer(target) else arr
    if pa.types.is_integer(target) and pa.types.is_floating(arr.type):
        arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, arr.type), arr)
        arr = pc.round(arr)
    return arr.cast(target)


def to_timestamp(arr: pa.Array, unit: str, layout: str | None = None) -> pa.Array:
    """``timestamp[us, UTC]`` from native timestamps or dates (naive = UTC), text, or epoch numbers.

    Text is ISO 8601 (``T`` or space, fraction, ``Z`` or ``+hh:mm`` offsets; naive = UTC) unless
    ``layout`` (strftime) is given. Epoch numbers overflowing the timestamp range raise.
    """
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), UTC_US)
    if unit == "auto":
        unit = "us" if pa.types.is_integer(arr.type) else "timestamp"
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = blank_to_null(arr.cast(pa.string()))
        if unit == "timestamp":
            return _parse_text(text, layout)
        arr = text.cast(pa.float64() if unit == "s" else pa.int64())
    if unit == "timestamp":
        if pa.types.is_timestamp(arr.type):
            return arr.cast(pa.timestamp("us", tz=arr.type.tz)).cast(UTC_US) if arr.type.tz else \
                arr.cast(pa.timestamp("us")).cast(UTC_US)
        if pa.types.is_date(arr.type):
            return arr.cast(pa.timestamp("us")).cast(UTC_US)
        raise pa.ArrowInvalid(f"cannot read {arr.type} values as timestamps")
    if unit == "ns":
        micros = pc.divide(arr.cast(pa.int64()), 1000)
    elif pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type):
        micros = pc.multiply_checked(arr.cast(pa.float64()), float(_EPOCH_TO_US[unit]))
        if pc.all(pc.less(pc.abs(micros), 9.2e18)).as_py() is False:  # NaN and inf fail this too
            raise OverflowError("epoch value out of range")
        micros = pc.round(micros).cast(pa.int64())
    else:
        micros = pc.multiply_checked(arr.cast(pa.int64()), _EPOCH_TO_US[unit])
    return _check_range(micros.cast(pa.timestamp("us")).cast(UTC_US))


def _check_range(ts: pa.Array) -> pa.Array:
    """Timestamps beyond year 1-9999 cannot be written or read back as dates: refuse them."""
    bounds = pc.min_max(ts.cast(pa.int64()))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is not None and (low < -62_135_596_800_000_000 or high > 253_402_300_799_999_999):
        raise OverflowError("timestamp outside years 1-9999")
    return ts


def _parse_text(text: pa.Array, layout: str | None) -> pa.Array:
    if layout is not None:
        parsed = pc.strptime(text, format=layout, unit="us", error_is_null=True)
        if parsed.null_count > text.null_count:
            raise pa.ArrowInvalid(f"text does not match layout {layout!r}")
        return _check_range(parsed.cast(UTC_US))
    zoned = pc.match_substring_regex(text, _ZONED)
    naive = pc.if_else(zoned, pa.scalar(None, pa.string()), text).cast(pa.timestamp("us")).cast(UTC_US)
    if not pc.any(zoned).as_py():
        return _check_range(naive)
    with_zone = pc.if_else(zoned, text, pa.scalar(None, pa.string()))
    with_zone = pc.replace_substring_regex(with_zone, r"z$", "Z")
    return _check_range(pc.coalesce(naive, with_zone.cast(UTC_US)))


def parse_json_text(texts: pa.Array, target: pa.DataType) -> pa.Array:
    """Parse JSON text values (e.g. ``"[0.1, 0.2]"``) into ``target`` without a Python loop."""
    if len(texts) == 0:
        return pa.array([], target)
    wrapped = pc.binary_join_element_wise('{"v":', texts.fill_null("null"), "}", "")
    one = pa.ListArray.from_arrays(pa.array([0, len(wrapped)], pa.int32()), wrapped)
    blob = pc.binary_join(one, "\n")[0].as_buffer()
    schema = pa.schema([pa.field("v", target)])
    table = pajson.read_json(io.BytesIO(blob.to_pybytes() + b"\n"),
                             parse_options=pajson.ParseOptions(explicit_schema=schema))
    return table.column("v").combine_chunks()


def json_field(texts: pa.Array, path: list[str]) -> pa.Array:
    """Extract a dotted path from JSON object text (for sources that can't extract it themselves)."""
    if len(texts) == 0:
        return pa.array([], pa.string())
    parsed = parse_json_text(pc.if_else(pc.is_valid(texts), texts, "{}").cast(pa.string()), _infer_struct(texts))
    out = parsed
    for part in path:
        if not pa.types.is_struct(out.type) or out.type.get_field_index(part) < 0:
            return pa.nulls(len(texts), pa.string())
        out = pc.struct_field(out, part)
    return out


def _infer_struct(texts: pa.Array) -> pa.DataType:
    sample = pc.binary_join_element_wise('{"v":', texts.fill_null("{}"), "}", "")
    one = pa.ListArray.from_arrays(pa.array([0, len(sample)], pa.int32()), sample)
    blob = pc.binary_join(one, "\n")[0].as_buffer().to_pybytes() + b"\n"
    return pajson.read_json(io.BytesIO(blob)).schema.field("v").type
