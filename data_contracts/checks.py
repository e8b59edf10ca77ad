"""The checks the contract's rules are made of, and the batch they run on.

Each check knows its Great Expectations expectation (``expectation_type`` + ``kwargs()``) and
computes the same test as a vectorised mask over Arrow columns (``mask()``), or over the whole
batch for the joins (``batch_mask()``). :class:`Batch` encodes what several rules share once.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from core.schema import SOURCE_ERRORS, EventType

# What counts as "shown": an impression, or a view for sources that log only views.
EXPOSURE_TYPES: tuple[str, ...] = (EventType.IMPRESSION.value, EventType.VIEW.value)

Params = Mapping[str, Any]


def unconverted_columns(errors: pa.ChunkedArray) -> pa.Array:
    """``value`` or ``ts,value``: the columns named in each row's ``source_errors`` JSON object (null
    where there is none). Only the rows holding one are parsed."""
    whole = _single_chunk(errors)
    present = np.flatnonzero(~to_numpy(pc.is_null(whole)))
    names = _error_keys(whole.take(pa.array(present)))
    positions = np.full(len(whole), -1, dtype=np.int64)
    positions[present] = np.arange(len(present))
    return names.take(pa.array(positions, mask=positions < 0))


def _error_keys(texts: pa.Array) -> pa.Array:
    if len(texts) == 0:
        return pa.array([], pa.string())
    lines = pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts.cast(pa.string()))
    blob = pc.binary_join(lines, "\n")[0].as_buffer().to_pybytes() + b"\n"
    try:
        parsed = pajson.read_json(io.BytesIO(blob), read_options=pajson.ReadOptions(block_size=max(1 << 20, len(blob))))
    except pa.ArrowInvalid:  # not written by the extractor: name the column, keep the text in the row
        return pa.array([SOURCE_ERRORS] * len(texts), pa.string())
    if not parsed.column_names:
        return pa.array([SOURCE_ERRORS] * len(texts), pa.string())
    # ',name' per failed column, joined, first comma cut (null_handling="skip" drops all-null rows in pyarrow 25)
    names = [pc.if_else(pc.is_valid(parsed.column(c)), f",{c}", "") for c in parsed.column_names]
    joined = pc.binary_join_element_wise(*names, "") if len(names) > 1 else names[0]
    return _single_chunk(pc.utf8_slice_codeunits(joined, 1))


def _param(value: Any, params: Params) -> Any:
    """Resolve a ``{"$PARAMETER": name}`` placeholder against run parameters."""
    if isinstance(value, dict) and "$PARAMETER" in value:
        return params[value["$PARAMETER"]]
    return value


def _missing(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Null or NaN (pandas and GE treat NaN as missing; so do we)."""
    return pc.is_null(column, nan_is_null=True)


def to_numpy(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


@dataclass(frozen=True)
class NotNull:
    """The column has no nulls (NaN counts as null)."""

    expectation_type = "ExpectColumnValuesToNotBeNull"

    def kwargs(self) -> dict[str, Any]:
        return {}

    def mask(self, column: pa.ChunkedArray, params: Params) -> pa.ChunkedArray:
        return _missing(column)


@dataclass(frozen=True)
class InSet:
    """Present values are in ``values``."""

    values: tuple[str, ...]
    expectation_type = "ExpectColumnValuesToBeInSet"

    def kwargs(self) -> dict[str, Any]:
        return {"value_set": list(self.values)}

    def mask(self, column: pa.ChunkedArray, params: Params) -> pa.ChunkedArray:
        known = pc.is_in(column, value_set=pa.array(self.values, type=column.type))
        return pc.and_(pc.is_valid(column), pc.invert(known))


@dataclass(frozen=True)
class Between:
    """Present values lie between ``min_value`` and ``max_value`` (None: unbounded)."""

    min_value: Any = None
    max_value: Any = None
    strict_min: bool = False
    strict_max: bool = False
    expectation_type = "ExpectColumnValuesToBeBetween"

    def kwargs(self) -> dict[str, Any]:
        return {
            "min_value": self.min_value, "max_value": self.max_value,
            "strict_min": self.strict_min, "strict_max": self.strict_max,
        }

    def mask(self, column: pa.ChunkedArray, params: Params) -> pa.ChunkedArray:
        """True out of range; null where the value is null (filled with False by the caller)."""
        low, high = _param(self.min_value, params), _param(self.max_value, params)
        checks = []
        if low is not None:
            checks.append((pc.greater if self.strict_min else pc.greater_equal)(column, _scalar(low, column)))
        if high is not None:
            checks.append((pc.less if self.strict_max else pc.less_equal)(column, _scalar(high, column)))
        bad = pc.invert(checks[0] if len(checks) == 1 else pc.and_(*checks))
        if pa.types.is_floating(column.type):  # NaN compares False: missing, not out of range
            bad = pc.and_(bad, pc.invert(pc.is_nan(column)))
        return bad


@dataclass(frozen=True)
class NotBlank:
    """Present values hold something other than whitespace."""

    expectation_type = "ExpectColumnValuesToNotMatchRegex"

    def kwargs(self) -> dict[str, Any]:
        return {"regex": r"^\s*$"}

    def mask(self, column: pa.ChunkedArray, params: Params) -> pa.ChunkedArray:
        return pc.or_(pc.equal(pc.binary_length(column), 0), pc.utf8_is_space(column))  # no copy of the text


@dataclass(frozen=True)
class MaxLength:
    """Present values are at most ``max_value`` characters long."""

    max_value: int
    expectation_type = "ExpectColumnValueLengthsToBeBetween"

    def kwargs(self) -> dict[str, Any]:
        return {"min_value": None, "max_value": self.max_value}

    def mask(self, column: pa.ChunkedArray, params: Params) -> pa.ChunkedArray:
        return pc.greater(pc.utf8_length(column), self.max_value)


@dataclass(frozen=True)
class Finite:
    """Present values are finite numbers (NaN and infinities are not measurements). Great Expectations
    reads NaN as missing, so this has no GE expectation: masks only."""

    expectation_type = None

    def kwargs(self) -> dict[str, Any]:
        return {}

    def mask(self, column: pa.ChunkedArray, params: Params) -> pa.ChunkedArray:
        return pc.invert(pc.is_finite(column))


@dataclass(frozen=True)
class IsNull:
    """The column is null: ``source_errors`` names the values extraction could not convert."""

    expectation_type = "ExpectColumnValuesToBeNull"

    def kwargs(self) -> dict[str, Any]:
        return {}

    def mask(self, column: pa.ChunkedArray, params: Params) -> pa.ChunkedArray:
        return pc.is_valid(column)


@dataclass(frozen=True)
class Unique:
    """Present values occur once; every occurrence after the first is quarantined.

    GE counts *all* members of a duplicated group as unexpected: later occurrences (ours) plus one
    first occurrence per duplicated value.
    """

    expectation_type = "ExpectColumnValuesToBeUnique"

    def kwargs(self) -> dict[str, Any]:
        return {}

    def mask(self, column: pa.ChunkedArray, params: Params) -> np.ndarray:
        return repeat_mask(column)


def _scalar(value: Any, column: pa.ChunkedArray) -> pa.Scalar:
    if isinstance(value, datetime) and pa.types.is_timestamp(column.type):
        return pa.scalar(value, type=column.type)
    return pa.scalar(value).cast(column.type) if not pa.types.is_floating(column.type) else pa.scalar(float(value))


def _single_chunk(column: pa.ChunkedArray) -> pa.Array:
    """One array (encoding chunk by chunk, then unifying dictionaries, would hash twice)."""
    if column.num_chunks == 1:
        return column.chunk(0)
    if column.num_chunks == 0:
        return pa.array([], column.type)
    if pa.types.is_string(column.type):  # large offsets: no 2 GiB limit on the concatenated data
        return pa.concat_arrays([chunk.cast(pa.large_string()) for chunk in column.chunks])
    return pa.concat_arrays(column.chunks)


def repeat_mask(column: pa.ChunkedArray) -> np.ndarray:
    """True on every non-null occurrence of a value after its first.

    Dictionary-encodes once (hashing is the cost); only keys seen twice or more are then located.
    """
    n = len(column)
    whole = _single_chunk(column)
    encoded = pc.dictionary_encode(whole)
    mask = np.zeros(n, dtype=bool)
    if len(encoded.dictionary) == n - whole.null_count:  # all distinct: the usual case
        return mask
    codes = pc.fill_null(encoded.indices, -1).to_numpy()
    repeated = np.bincount(codes[codes >= 0], minlength=len(encoded.dictionary)) > 1
    rows = np.flatnonzero((codes >= 0) & repeated[np.maximum(codes, 0)])
    _, first = np.unique(codes[rows], return_index=True)
    mask[rows] = True
    mask[rows[first]] = False
    return mask


@dataclass(frozen=True)
class CompoundUnique:
    """Rows with all of ``columns`` present are unique on them; later copies are quarantined.

    Vectorised: candidates are rows whose (ts, event_type) pair repeats (an integer hash, no string
    hashing); only those are grouped exactly on every column by Arrow's hash aggregation.
    """

    columns: tuple[str, ...]
    expectation_type = "ExpectCompoundColumnsToBeUnique"

    def kwargs(self) -> dict[str, Any]:
        return {"column_list": list(self.columns), "ignore_row_if": "any_value_is_missing"}

    def batch_mask(self, batch: Batch) -> np.ndarray:
        table, n = batch.table, batch.table.num_rows
        present = np.logical_and.reduce([~to_numpy(pc.is_null(table.column(c))) for c in self.columns])
        hashed = batch.ts_int64.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        hashed ^= batch.event_type_codes.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        candidates = np.flatnonzero(pd.Series(hashed).duplicated(keep=False).to_numpy() & present)
        mask = np.zeros(n, dtype=bool)
        if len(candidates) == 0:
            return mask
        rows = table.select(list(self.columns)).take(pa.array(candidates)).append_column("_row", pa.array(candidates))
        first = rows.group_by(list(self.columns), use_threads=False).aggregate([("_row", "min")]).column("_row_min")
        mask[candidates] = True
        mask[first.to_numpy()] = False
        return mask


# Rows per bucket of users in which HasExposure joins (a bound on its working set, not on the result).
BUCKET_ROWS = 1_000_000


@dataclass(frozen=True)
class HasExposure:
    """Engagement rows (``event_types``) need an exposure (impression or view) of the same item by the
    same user: in the same session, or in the same request, or at most ``lookback_s`` seconds before
    it (up to ``skew_s`` after it) whatever the session, in the extract or in the prior exposures the
    run supplies. No Great Expectations expectation exists for this (it is a join): masks only.

    Vectorised: Arrow hash joins (left semi) for the session and request links, then an as-of join
    (``pandas.merge_asof``, backward, by user-item pair) for the lookback.
    """

    event_types: tuple[str, ...]
    lookback_s: float = 7 * 86_400.0
    skew_s: float = 60.0
    expectation_type = None

    def kwargs(self) -> dict[str, Any]:
        return {"exposure_event_types": list(EXPOSURE_TYPES),
                "match_on": [["user_id", "item_id", "session_id"], ["user_id", "item_id", "request_id"]],
                "or_within": {"keys": ["user_id", "item_id"], "lookback_seconds": self.lookback_s,
                              "skew_seconds": self.skew_s}}

    def batch_mask(self, batch: Batch) -> np.ndarray:
        """Every link is by user, so the rows are checked in buckets of users (about ``BUCKET_ROWS``
        rows each): the joins' working set is a bucket's, not the window's; the mask is the same."""
        n = batch.table.num_rows
        buckets = -(-n // BUCKET_ROWS)
        if buckets <= 1:
            return self._mask(batch)
        users = pc.dictionary_encode(_single_chunk(batch.table.column("user_id")))
        bucket = pc.fill_null(users.indices, 0).to_numpy() % buckets
        del users
        mask = np.zeros(n, dtype=bool)
        for b in range(buckets):
            rows = np.flatnonzero(bucket == b)
            if len(rows) == 0:
                continue
            part = Batch(batch.table.take(pa.array(rows)), batch.params, batch.prior_exposures)
            part.__dict__.update(ts_int64=batch.ts_int64[rows],
                                 _event_types=(batch.event_type_codes[rows], batch.event_type_dictionary))
            mask[rows] = self._mask(part)
        return mask

    def _mask(self, batch: Batch) -> np.ndarray:
        table, n = batch.table, batch.table.num_rows
        mask = np.zeros(n, dtype=bool)
        engaged = batch.event_type_in(self.event_types)
        engaged &= ~to_numpy(pc.or_(pc.is_null(table.column("user_id")), pc.is_null(table.column("item_id"))))
        if not engaged.any():
            return mask
        columns = ["user_id", "item_id", "session_id", "request_id"]
        exposures = table.select(columns).filter(pa.array(batch.event_type_in(EXPOSURE_TYPES)))
        rows = np.flatnonzero(engaged)
        remaining = table.select(columns).take(pa.array(rows)).append_column("_row", pa.array(rows))
        for keys in (["user_id", "item_id", "session_id"], ["user_id", "item_id", "request_id"]):
            probe = remaining.filter(pc.is_valid(remaining.column(keys[-1]))).select([*keys, "_row"])
            if probe.num_rows == 0:
                continue
            matched = probe.join(exposures.select(keys), keys=keys, join_type="left semi").column("_row")
            remaining = remaining.filter(pc.invert(pc.is_in(remaining.column("_row"), value_set=matched.combine_chunks())))
            if remaining.num_rows == 0:
                return mask
        rows = remaining.column("_row").to_numpy()
        mask[rows[~self._seen_before(batch, rows)]] = True
        return mask

    def _seen_before(self, batch: Batch, rows: np.ndarray) -> np.ndarray:
        """Per engagement row: an exposure of the pair in ``[ts - lookback, ts + skew]``."""
        table = batch.table
        engaged = pa.table({"user_id": table.column("user_id").take(pa.array(rows)),
                            "item_id": table.column("item_id").take(pa.array(rows)),
                            "ts": pa.array(batch.ts_int64[rows])})
        users = pc.unique(_single_chunk(engaged.column("user_id")))
        # only those users' exposures: a copy of every exposure row would cost more than the join
        theirs = batch.event_type_in(EXPOSURE_TYPES) & to_numpy(pc.is_in(table.column("user_id"), value_set=users))
        shown = table.select(["user_id", "item_id", "ts"]).take(pa.array(np.flatnonzero(theirs)))
        if batch.prior_exposures is not None:
            prior = batch.prior_exposures.select(["user_id", "item_id", "ts"]).cast(shown.schema)
            shown = pa.concat_tables([shown, prior.filter(pc.is_in(prior.column("user_id"), value_set=users))])
        if shown.num_rows == 0:
            return np.zeros(len(rows), dtype=bool)
        users = pc.dictionary_encode(pa.concat_arrays([_single_chunk(engaged.column("user_id")).cast(pa.large_string()),
                                                       _single_chunk(shown.column("user_id")).cast(pa.large_string())]))
        items = pc.dictionary_encode(pa.concat_arrays([_single_chunk(engaged.column("item_id")).cast(pa.large_string()),
                                                       _single_chunk(shown.column("item_id")).cast(pa.large_string())]))
        pair = (pc.fill_null(users.indices, -1).to_numpy().astype(np.int64) * (len(items.dictionary) + 1)
                + pc.fill_null(items.indices, -1).to_numpy().astype(np.int64))
        n, skew, lookback = len(rows), int(self.skew_s * 1e6), int(self.lookback_s * 1e6)
        shown_ts = pc.fill_null(_single_chunk(shown.column("ts")).cast(pa.int64()), np.iinfo(np.int64).min).to_numpy()
        left = pd.DataFrame({"pair": pair[:n], "at": batch.ts_int64[rows] + skew, "i": np.arange(n)}).sort_values("at")
        right = pd.DataFrame({"pair": pair[n:], "at": shown_ts, "shown": shown_ts}).sort_values("at")
        merged = pd.merge_asof(left, right, on="at", by="pair", direction="backward")
        seen = merged["shown"].notna().to_numpy() & (merged["shown"].to_numpy() >= merged["at"].to_numpy() - skew - lookback)
        out = np.zeros(n, dtype=bool)
        out[merged["i"].to_numpy()] = seen
        return out


Check = NotNull | NotBlank | MaxLength | Finite | IsNull | InSet | Between | Unique | CompoundUnique | HasExposure


class Batch:
    """A table under validation, its run parameters and its event types encoded once.

    Conditional rules test ``event_type`` membership on the small dictionary, then index by code,
    instead of hashing every string once per rule.
    """

    def __init__(self, table: pa.Table, params: Params, prior_exposures: pa.Table | None = None):
        self.table, self.params, self.prior_exposures = table, params, prior_exposures

    @classmethod
    def encoded(cls, ts_int64: np.ndarray, event_type_codes: np.ndarray, event_type_dictionary: np.ndarray,
                params: Params) -> Batch:
        """Rows known only by their time (int64 microseconds) and event type (codes into
        ``event_type_dictionary``, whose last entry is ``None``): what the records and the profile read."""
        batch = cls(pa.table({"ts": pa.array(ts_int64)}), params)
        batch.__dict__.update(ts_int64=ts_int64, _event_types=(event_type_codes, event_type_dictionary))
        return batch

    @cached_property
    def ts_int64(self) -> np.ndarray:
        """``ts`` as int64 microseconds (nulls as 0; the not-null rule owns them)."""
        return pc.fill_null(_single_chunk(self.table.column("ts")).cast(pa.int64()), 0).to_numpy()

    @property
    def event_type_codes(self) -> np.ndarray:
        """Per-row index into :attr:`event_type_dictionary` (nulls: its last entry, ``None``)."""
        return self._event_types[0]

    @property
    def event_type_dictionary(self) -> np.ndarray:
        return self._event_types[1]

    @cached_property
    def _event_types(self) -> tuple[np.ndarray, np.ndarray]:
        encoded = pc.dictionary_encode(_single_chunk(self.table.column("event_type")))
        codes = pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy()
        return codes, np.array(encoded.dictionary.to_pylist() + [None], dtype=object)

    @cached_property
    def _unconverted(self) -> pa.Array | None:
        """``,value,ts,`` per row: the columns whose source values did not convert (None: no such row)."""
        if SOURCE_ERRORS not in self.table.column_names or self.table.column(SOURCE_ERRORS).null_count == self.table.num_rows:
            return None
        names = unconverted_columns(self.table.column(SOURCE_ERRORS))
        return pc.binary_join_element_wise(",", names, ",", "")

    def unconverted(self, column: str) -> np.ndarray:
        """Boolean array: the row's ``column`` is null because its source value did not convert."""
        if self._unconverted is None:
            return np.zeros(self.table.num_rows, dtype=bool)
        return to_numpy(pc.match_substring(self._unconverted, f",{column},"))

    def event_type_in(self, types: tuple[str, ...]) -> np.ndarray:
        """Boolean array: the row's event_type is one of ``types`` (False for nulls)."""
        codes, dictionary = self._event_types
        return np.isin(dictionary, list(types))[codes]
