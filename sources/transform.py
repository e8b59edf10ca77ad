"""Apply a mapping to raw Arrow batches, vectorised with ``pyarrow.compute`` (no per-row Python).

Readers fetch one raw column per *leaf* of the mapping (a spec that reads a source field), named
by :func:`leaf_aliases`; :func:`apply_mapping` turns such a batch into canonical columns.
"""

from __future__ import annotations

import io
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from sources.mapping import FieldSpec, TableSpec

RawKind = Literal["text", "real", "integer", "native"]
_EPOCH_TO_US = {"s": 1_000_000, "ms": 1_000, "us": 1}


def leaf_aliases(spec: TableSpec) -> dict[str, FieldSpec]:
    """Alias -> leaf spec, in a deterministic order (readers select the leaves under these names)."""
    out: dict[str, FieldSpec] = {}
    for column, field in spec.columns.items():
        for j, leaf in enumerate(field.leaves()):
            out[f"{column}__{j}"] = leaf
    return out


def raw_kind(leaf: FieldSpec, target: pa.DataType) -> RawKind:
    """The storage class a reader should fetch a leaf as (stable types for SQLite's inference)."""
    if leaf.values is not None or leaf.json_text:
        return "text"
    if leaf.unit in ("ms", "us", "ns"):
        return "integer"
    if leaf.unit == "s":
        return "real"
    if leaf.unit in ("timestamp", "auto"):
        return "native"
    if pa.types.is_integer(target):
        return "real" if leaf.scale is not None else "integer"
    if pa.types.is_floating(target):
        return "real"
    return "text"


def apply_mapping(spec: TableSpec, batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """Canonical table (``schema``) from a raw batch whose columns are named by :func:`leaf_aliases`."""
    n = batch.num_rows
    arrays = []
    for field in schema:
        fs = spec.columns.get(field.name)
        arrays.append(pa.nulls(n, field.type) if fs is None else _column(field.name, fs, batch, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _column(name: str, fs: FieldSpec, batch: pa.RecordBatch | pa.Table, target: pa.DataType) -> pa.Array:
    if fs.has_const:
        return _constant(fs.const, batch.num_rows, target)
    if fs.coalesce is None:
        return _leaf(fs, _raw(batch, f"{name}__0"), target)
    members, j = [], 0
    for member in fs.coalesce:
        count = len(member.leaves())
        if member.has_const:
            members.append(_constant(member.const, batch.num_rows, target))
        else:
            members.append(_column_member(name, member, batch, target, j))
        j += count
    return pc.coalesce(*members)


def _column_member(name: str, member: FieldSpec, batch: pa.RecordBatch | pa.Table, target: pa.DataType, j: int) -> pa.Array:
    if member.coalesce is not None:
        raise ValueError(f"column {name!r}: nested coalesce is not supported")
    return _leaf(member, _raw(batch, f"{name}__{j}"), target)


def _raw(batch: pa.RecordBatch | pa.Table, alias: str) -> pa.Array:
    col = batch.column(alias)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _constant(value: object, n: int, target: pa.DataType) -> pa.Array:
    if value is None:
        return pa.nulls(n, target)
    return pa.repeat(pa.scalar(value), n).cast(target)


def _leaf(fs: FieldSpec, arr: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target)
    if fs.json_text:
        return parse_json_text(arr.cast(pa.string()), target)
    if fs.values is not None:
        arr = _value_map(fs, arr)
    if fs.unit is not None:
        return to_timestamp(arr, fs.unit).cast(target)
    if fs.scale is not None or fs.offset is not None:
        arr = _affine(arr, fs.scale, fs.offset, target)
    return arr.cast(target)


def _value_map(fs: FieldSpec, arr: pa.Array) -> pa.Array:
    assert fs.values is not None
    text = arr.cast(pa.string())
    keys = list(fs.values)
    probe = pc.utf8_lower(text) if fs.case_insensitive else text
    lookup = pa.array([k.lower() for k in keys] if fs.case_insensitive else keys, pa.string())
    replacements = pa.array([None if v is None else str(v) for v in fs.values.values()], pa.string())
    index = pc.index_in(probe, value_set=lookup)
    mapped = pc.take(replacements, index)
    if fs.unmapped == "null":
        return mapped
    return pc.if_else(pc.is_valid(index), mapped, text)


def _affine(arr: pa.Array, scale: float | None, offset: float | None, target: pa.DataType) -> pa.Array:
    out = arr.cast(pa.float64())
    if scale is not None:
        out = pc.multiply(out, scale)
    if offset is not None:
        out = pc.add(out, offset)
    return pc.round(out) if pa.types.is_integer(target) else out


def to_timestamp(arr: pa.Array, unit: str) -> pa.Array:
    """``timestamp[us, UTC]`` from native timestamps (naive = UTC), ISO text, or epoch numbers."""
    target = pa.timestamp("us", tz="UTC")
    if unit == "auto":
        unit = "us" if pa.types.is_integer(arr.type) else "timestamp"
    if unit == "timestamp":
        if pa.types.is_timestamp(arr.type):
            return arr.cast(pa.timestamp("us", tz=arr.type.tz)).cast(target) if arr.type.tz else \
                arr.cast(pa.timestamp("us")).cast(target)
        return pc.cast(arr.cast(pa.string()), pa.timestamp("us")).cast(target)
    if unit == "ns":
        micros = pc.divide(arr.cast(pa.int64()), 1000)
    elif pa.types.is_floating(arr.type):
        micros = pc.round(pc.multiply(arr, float(_EPOCH_TO_US[unit]))).cast(pa.int64())
    else:
        micros = pc.multiply(arr.cast(pa.int64()), _EPOCH_TO_US[unit])
    return micros.cast(pa.timestamp("us")).cast(target)


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
