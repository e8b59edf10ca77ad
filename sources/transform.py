"""Apply a mapping to raw Arrow batches, vectorised with ``pyarrow.compute`` (no per-row Python).

Readers fetch one raw column per *leaf* of the mapping (a spec that reads a source field), named
by :func:`leaf_plan`; :func:`apply_mapping` turns such a batch into the target columns, records
every value it could not convert in ``source_errors`` (column -> raw text; the value becomes null)
and drops the rows the mapping's filters reject.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.schema import SOURCE_ERRORS, snapshot_schema
from sources.arrow_text import json_text
from sources.convert import UTC_US, convert_each, parse_json_text, raw_text, to_number, to_timestamp
from sources.mapping import Condition, ExtraType, FieldSpec, Mapping, TableSpec

log = logging.getLogger(__name__)
RawKind = Literal["text", "real", "integer", "native"]
EXTRA_TYPES: dict[ExtraType, pa.DataType] = {"string": pa.string(), "float": pa.float64(), "int": pa.int64(),
                                             "bool": pa.bool_(), "timestamp": UTC_US}
_NUMERIC_TESTS = ("gt", "ge", "lt", "le", "between")


@dataclass(frozen=True)
class Leaf:
    """One source field a reader fetches: the raw column ``alias`` of a batch."""

    alias: str
    spec: FieldSpec
    target: pa.DataType | None  # None: a filter's field (read as it is)
    kind: RawKind

    @property
    def source(self) -> str:
        return self.spec.source or ""


def leaf_plan(spec: TableSpec, schema: pa.Schema) -> list[Leaf]:
    """Every leaf of ``spec`` (columns, extra columns, filters), in a deterministic order."""
    out: list[Leaf] = []
    for prefix, column, field in _fields(spec):
        target = schema.field(column).type if column in schema.names else EXTRA_TYPES["string"]
        for j, leaf in enumerate(field.leaves()):
            out.append(Leaf(f"{prefix}{column}__{j}", leaf, target, raw_kind(leaf, target)))
    for i, condition in enumerate(spec.filter):
        leaf = FieldSpec(source=condition.source)
        numeric = bool(set(condition.tests()) & set(_NUMERIC_TESTS)) and all(
            not isinstance(condition.tests().get(t), str) for t in _NUMERIC_TESTS)
        out.append(Leaf(f"filter:{i}__0", leaf, None, "real" if numeric else "text"))
    return out


def _fields(spec: TableSpec) -> Iterator[tuple[str, str, FieldSpec]]:
    for column, field in spec.columns.items():
        yield "", column, field
    for name, field in spec.extra.items():
        yield "extra:", name, field


def raw_kind(leaf: FieldSpec, target: pa.DataType) -> RawKind:
    """The storage class a reader should fetch a leaf as (stable types for SQLite's inference)."""
    if leaf.values is not None or leaf.json_text:
        return "text"
    if leaf.cases is not None:
        numeric = any(set(c.tests()) & set(_NUMERIC_TESTS) for c in leaf.cases)
        return "real" if numeric else "text"
    if leaf.unit in ("ms", "us", "ns", "auto"):
        return "integer"
    if leaf.unit == "s":
        return "real"
    if leaf.unit == "timestamp":
        return "native"
    if pa.types.is_integer(target) or pa.types.is_floating(target):
        return "real"
    return "text"


def apply_mapping(spec: TableSpec, batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """Target table (``schema``) from a raw batch whose columns are named as :func:`leaf_plan` says.

    Values that cannot be converted become null; with a ``source_errors`` column in ``schema``,
    each such row records ``{"column": "raw text"}`` there (else they are counted in a warning).
    Rows failing the mapping's filters are dropped.
    """
    n = batch.num_rows
    fields = {column: (prefix, field) for prefix, column, field in _fields(spec)}
    arrays: dict[str, Any] = {}
    errors: dict[str, tuple[np.ndarray, pa.Array]] = {}
    for target in schema:
        if target.name == SOURCE_ERRORS or target.name not in fields:
            arrays[target.name] = pa.nulls(n, target.type)
            continue
        prefix, field = fields[target.name]
        aliases = iter(f"{prefix}{target.name}__{j}" for j in range(len(field.leaves())))
        values, failed, raw = _column(field, batch, target.type, aliases)
        arrays[target.name] = values
        if failed is not None and failed.any():
            errors[target.name] = (failed, raw)
    if errors and SOURCE_ERRORS in schema.names:
        arrays[SOURCE_ERRORS] = errors_column(errors, n)
    elif errors:
        log.warning("%s: %s value(s) could not be converted and were read as null", spec.relation or "query",
                    {c: int(f.sum()) for c, (f, _) in errors.items()})
    table = pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)
    keep = filter_mask(spec, batch)
    return table if keep is None else table.filter(keep)


def errors_column(errors: dict[str, tuple[np.ndarray, pa.Array]], n: int) -> pa.Array:
    """``{"column": "raw", ...}`` JSON text per row with a failed value, null elsewhere."""
    if n == 0:
        return pa.array([], pa.string())
    # each member is ',"column":"raw"' or '' (joining with null_handling="skip" drops all-null rows in pyarrow 25)
    members = [pc.if_else(pa.array(failed), pc.binary_join_element_wise(f',{json_text(pa.array([column]))[0]}',
                                                                          json_text(pc.fill_null(raw, "")), ":"), "")
               for column, (failed, raw) in errors.items()]
    joined = pc.binary_join_element_wise(*members, "") if len(members) > 1 else members[0]
    wrapped = pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(joined, 1), "}", "")
    any_failed = np.logical_or.reduce([failed for failed, _ in errors.values()])
    return pc.if_else(pa.array(any_failed), wrapped, pa.scalar(None, pa.string()))


Converted = tuple[pa.Array, np.ndarray | None, pa.Array | None]


def _column(fs: FieldSpec, batch: pa.RecordBatch | pa.Table, target: pa.DataType, aliases: Iterator[str]) -> Converted:
    """(values, failed positions or None, raw text of the failed values or None) for one spec."""
    n = batch.num_rows
    if fs.has_const:
        return _constant(fs.const, n, target), None, None
    if fs.coalesce is not None:
        return _coalesce([_column(m, batch, target, aliases) for m in fs.coalesce])
    if fs.concat is not None:
        parts = [_column(m, batch, pa.string(), aliases) for m in fs.concat]
        joined = pc.binary_join_element_wise(*[p[0] for p in parts], fs.sep, null_handling="emit_null")
        return _coalesce([(joined.cast(target), None, None), *[(pa.nulls(n, target), f, r) for _, f, r in parts]])
    raw = _raw(batch, next(aliases))
    if pa.types.is_null(raw.type):
        return pa.nulls(n, target), None, None
    values, failed = convert_each(lambda a: convert_leaf(fs, a, target), raw, target)
    return values, failed, (raw_text(raw) if failed is not None else None)


def _coalesce(members: list[Converted]) -> Converted:
    """First non-null member; a row failed when its value is null and a member failed on it."""
    values = pc.coalesce(*[m[0] for m in members]) if len(members) > 1 else members[0][0]
    failed_members = [(f, r) for _, f, r in members if f is not None]
    if not failed_members:
        return values, None, None
    failed = np.logical_or.reduce([f for f, _ in failed_members]) & np.asarray(pc.is_null(values))
    raw = pc.coalesce(*[pc.if_else(pa.array(f), r, pa.scalar(None, pa.string())) for f, r in failed_members])
    return values, failed, raw


def _raw(batch: pa.RecordBatch | pa.Table, alias: str) -> pa.Array:
    col = batch.column(alias)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _constant(value: object, n: int, target: pa.DataType) -> pa.Array:
    if value is None:
        return pa.nulls(n, target)
    return pa.repeat(pa.scalar(value), n).cast(target)


def convert_leaf(fs: FieldSpec, arr: pa.Array, target: pa.DataType) -> pa.Array:
    """One leaf's raw values -> ``target``: JSON, lookup or cases, timestamp unit, scale/offset/clamp.

    Raises (for :func:`sources.convert.convert_each` to isolate the values) on text that is not a
    number or timestamp, on an epoch beyond the timestamp range, and on JSON that does not parse.
    """
    if fs.json_text:
        return parse_json_text(arr.cast(pa.string()), target)
    if fs.values is not None:
        arr = _lookup(fs, arr)
    elif fs.cases is not None:
        arr = _cases(fs, arr)
    if fs.unit is not None or pa.types.is_timestamp(target):
        return to_timestamp(arr, fs.unit or "timestamp", fs.format).cast(target)
    if pa.types.is_integer(target) or pa.types.is_floating(target):
        if fs.scale is None and fs.offset is None and fs.clamp is None:
            return to_number(arr, target)
        return to_number(_affine(to_number(arr, pa.float64()), fs), target)
    if pa.types.is_string(target) and pa.types.is_floating(arr.type):
        return _float_text(arr)
    return arr.cast(target)


def _float_text(arr: pa.Array) -> pa.Array:
    """Integral floats as integers (an id stored as 12.0 is "12"), others as Arrow writes them."""
    integral = pc.and_(pc.is_finite(arr), pc.equal(pc.floor(arr), arr))
    as_int = pc.if_else(pc.and_(integral, pc.less(pc.abs(arr), 2.0 ** 53)), arr, None).cast(pa.int64()).cast(pa.string())
    return pc.coalesce(as_int, arr.cast(pa.string()))


def _affine(arr: pa.Array, fs: FieldSpec) -> pa.Array:
    out = arr
    if fs.scale is not None:
        out = pc.multiply(out, fs.scale)
    if fs.offset is not None:
        out = pc.add(out, fs.offset)
    if fs.clamp is not None:
        low, high = fs.clamp
        out = out if low is None else pc.max_element_wise(out, pa.scalar(float(low)), skip_nulls=True)
        out = out if high is None else pc.min_element_wise(out, pa.scalar(float(high)), skip_nulls=True)
    return out


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _lookup(fs: FieldSpec, arr: pa.Array) -> pa.Array:
    assert fs.values is not None
    text = _as_text(arr)
    keys = list(fs.values)
    probe = pc.utf8_lower(text) if fs.case_insensitive else text
    lookup = pa.array([k.lower() for k in keys] if fs.case_insensitive else keys, pa.string())
    replacements = pa.array([_text(v) for v in fs.values.values()], pa.string())
    index = pc.index_in(probe, value_set=lookup)
    return _unmatched(fs, pc.is_valid(index), pc.take(replacements, index), text)


def _cases(fs: FieldSpec, arr: pa.Array) -> pa.Array:
    assert fs.cases is not None
    out = pa.nulls(len(arr), pa.string())
    matched = pa.array(np.zeros(len(arr), dtype=bool))
    for case in reversed(fs.cases):  # the first matching case wins: apply it last
        hit = condition_mask(case, arr)
        out = pc.if_else(hit, pa.scalar(_text(case.then), pa.string()), out)
        matched = pc.or_(matched, hit)
    return _unmatched(fs, matched, out, _as_text(arr))


def _unmatched(fs: FieldSpec, matched: pa.Array, mapped: pa.Array, text: pa.Array) -> pa.Array:
    if "otherwise" in fs.model_fields_set:
        fallback = pa.scalar(_text(fs.otherwise), pa.string())
    else:
        fallback = pa.scalar(None, pa.string()) if fs.unmapped == "null" else text
    return pc.if_else(matched, mapped, pc.if_else(pc.is_valid(text), fallback, pa.scalar(None, pa.string())))


def _as_text(arr: pa.Array) -> pa.Array:
    return _float_text(arr) if pa.types.is_floating(arr.type) else raw_text(arr)


def _numbers(arr: pa.Array) -> pa.Array:
    """Values as float64; text that is not a number becomes null (it matches no numeric test)."""
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type) \
            or pa.types.is_boolean(arr.type):
        return arr.cast(pa.float64())
    return convert_each(lambda a: to_number(raw_text(a), pa.float64()), arr, pa.float64())[0]


def condition_mask(condition: Condition, arr: pa.Array) -> pa.Array:
    """True where ``arr``'s value passes every test of ``condition`` (a null passes only is_null,
    ne and not_in)."""
    masks = [_test(name, value, arr) for name, value in condition.tests().items()]
    out = masks[0]
    for m in masks[1:]:
        out = pc.and_(out, m)
    return pc.fill_null(out, False)


def _test(name: str, value: Any, arr: pa.Array) -> pa.Array:
    comparisons = {"gt": pc.greater, "ge": pc.greater_equal, "lt": pc.less, "le": pc.less_equal}
    if name == "is_null":
        return pc.is_null(arr) if value else pc.is_valid(arr)
    if name in ("eq", "ne") and value is None:
        return pc.is_null(arr) if name == "eq" else pc.is_valid(arr)
    if name in comparisons:
        if isinstance(value, str):
            return comparisons[name](_as_text(arr), value)
        return comparisons[name](_numbers(arr), float(value))
    if name == "between":
        numbers = _numbers(arr)
        return pc.and_(pc.greater_equal(numbers, float(value[0])), pc.less_equal(numbers, float(value[1])))
    values = [value] if name in ("eq", "ne") else list(value)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values if v is not None)
    if numeric and values:
        found = pc.is_in(_numbers(arr), value_set=pa.array([float(v) for v in values if v is not None], pa.float64()))
    else:
        found = pc.is_in(_as_text(arr), value_set=pa.array([_text(v) for v in values if v is not None], pa.string()))
    if name in ("eq", "in"):
        return pc.and_(pc.is_valid(arr), found)
    return pc.or_(pc.is_null(arr), pc.invert(found))


def filter_mask(spec: TableSpec, batch: pa.RecordBatch | pa.Table) -> pa.Array | None:
    """Rows passing every filter of ``spec`` (None: no filters)."""
    if not spec.filter:
        return None
    masks = [condition_mask(cond, _raw(batch, f"filter:{i}__0")) for i, cond in enumerate(spec.filter)]
    out = masks[0]
    for m in masks[1:]:
        out = pc.and_(out, m)
    return out


def mapping_schema(spec: Mapping) -> pa.Schema:
    """The snapshot schema of a mapping: canonical columns (nullable), ``source_errors``, extras."""
    return snapshot_schema([pa.field(name, EXTRA_TYPES[kind]) for name, kind in spec.extra_types().items()])
