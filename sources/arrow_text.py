"""Vectorised Arrow <-> SQL text conversions (JSON text for lists/structs, SQL-friendly timestamps)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


def json_text(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Encode every value of ``array`` as JSON text (null entries stay null), without a Python loop."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], array.type)
    return pc.if_else(array.is_null(), pa.scalar(None, pa.string()), _encode(array))


def _encode(array: pa.Array) -> pa.Array:
    """JSON text per value with nulls rendered as ``null`` (used for nested members)."""
    if array.null_count == 0:
        return _encode_valid(array)
    return pc.if_else(array.is_null(), "null", _encode_valid(array))


def _encode_valid(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _encode(array.dictionary_decode())
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _encode_list(array)
    if pa.types.is_struct(kind):
        return _encode_struct(array)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _quote(array.cast(pa.string()))
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return _quote(pc.strftime(array, "%Y-%m-%dT%H:%M:%S"))
    if pa.types.is_boolean(kind):
        return pc.if_else(array, "true", "false").fill_null("null")
    if pa.types.is_floating(kind):
        array = pc.if_else(pc.is_finite(array), array, pa.scalar(None, kind))
    return array.cast(pa.string()).fill_null("null")


def _quote(strings: pa.Array) -> pa.Array:
    for old, new in _JSON_ESCAPES:
        strings = pc.replace_substring(strings, old, new)
    return pc.binary_join_element_wise('"', strings, '"', "").fill_null("null")


def _encode_list(array: pa.Array) -> pa.Array:
    if pa.types.is_fixed_size_list(array.type):
        array = array.cast(pa.list_(array.type.value_type))
    flat = array.flatten()
    offsets = pc.subtract(array.offsets, array.offsets[0])
    members = pa.ListArray.from_arrays(offsets, _encode(flat) if len(flat) else pa.array([], pa.string()))
    joined = pc.binary_join(members, ",")
    return pc.binary_join_element_wise("[", joined, "]", "").fill_null("null")


def _encode_struct(array: pa.Array) -> pa.Array:
    parts: list[pa.Array | str] = []
    for i, field in enumerate(array.type):
        key = _quote(pa.array([field.name]))[0].as_py()
        parts += [("{" if i == 0 else ",") + key + ":", _encode(pc.struct_field(array, [i]))]
    if not parts:
        return pa.array(["{}"] * len(array), pa.string())
    return pc.binary_join_element_wise(*parts, "}", "").fill_null("null")


def timestamp_micros(array: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Timestamps as int64 microseconds since the epoch (UTC), nulls kept."""
    return array.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())

