"""The ``interactions`` contract suite, declared once.

Each row-level rule names a reason code, one column and a *check* (not-null, in-set, between,
unique). The check yields both the Great Expectations expectation (``expectation()``) and the
vectorised pyarrow mask that quarantines rows (``mask()``), so the two cannot drift apart.
Window bounds are GE suite parameters (``$PARAMETER``), so the suite (and its version) does not
change from week to week; thresholds from :class:`ContractSettings` are part of the declaration.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from data_contracts.config import ContractSettings
from rankloop.schema import EVENT_TYPES, REQUIRED_COLUMNS, SOURCE_ERRORS, TRAIT_COLUMNS, EventType

SUITE_NAME = "interactions"
WINDOW_START = "window_start"
WINDOW_END = "window_end"
NOW = "now"
EVENT_KEY: tuple[str, ...] = ("user_id", "item_id", "event_type", "ts")
# What counts as "shown": an impression, or a view for sources that log only views.
EXPOSURE_TYPES: tuple[str, ...] = (EventType.IMPRESSION.value, EventType.VIEW.value)
ID_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id")
LENGTH_CHECKED: tuple[str, ...] = (*ID_COLUMNS, "session_id", "request_id")
FINITE_CHECKED: tuple[str, ...] = ("value", "propensity", "mood_delta")

Params = Mapping[str, Any]


def unconverted_columns(errors: pa.ChunkedArray) -> pa.Array:
    """``value`` or ``ts,value``: the columns named in each row's ``source_errors`` JSON object (null
    where there is none). Only the rows holding one are parsed."""
    whole = _single_chunk(errors)
    present = np.flatnonzero(~_to_numpy(pc.is_null(whole)))
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


def _to_numpy(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
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
        present = np.logical_and.reduce([~_to_numpy(pc.is_null(table.column(c))) for c in self.columns])
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
        table, n = batch.table, batch.table.num_rows
        mask = np.zeros(n, dtype=bool)
        engaged = batch.event_type_in(self.event_types)
        engaged &= ~_to_numpy(pc.or_(pc.is_null(table.column("user_id")), pc.is_null(table.column("item_id"))))
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
        theirs = batch.event_type_in(EXPOSURE_TYPES) & _to_numpy(pc.is_in(table.column("user_id"), value_set=users))
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
        return _to_numpy(pc.match_substring(self._unconverted, f",{column},"))

    def event_type_in(self, types: tuple[str, ...]) -> np.ndarray:
        """Boolean array: the row's event_type is one of ``types`` (False for nulls)."""
        codes, dictionary = self._event_types
        return np.isin(dictionary, list(types))[codes]


@dataclass(frozen=True)
class RowRule:
    """One row-level rule: rows it flags are quarantined with ``reason``.

    ``when_event_types`` restricts the rule to rows of those event types (a GE row_condition).
    ``reason_with_value``: the reason is ``<reason>:<offending value>`` (unknown event types; for
    ``source_errors`` the columns whose source values could not be converted, e.g. ``unparseable:value``).
    """

    name: str
    reason: str
    column: str
    check: Check
    description: str
    when_event_types: tuple[str, ...] | None = None
    reason_with_value: bool = False

    def mask(self, batch: Batch) -> np.ndarray:
        """Boolean array, True where the row breaks this rule (vectorised)."""
        if isinstance(self.check, CompoundUnique | HasExposure):
            flagged = self.check.batch_mask(batch)
        else:
            flagged = self.check.mask(batch.table.column(self.column), batch.params)
        flagged = flagged if isinstance(flagged, np.ndarray) else _to_numpy(flagged)
        if isinstance(self.check, NotNull):  # a value that did not convert is reported as unparseable, once
            flagged = flagged & ~batch.unconverted(self.column)
        return flagged if self.when_event_types is None else flagged & batch.event_type_in(self.when_event_types)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able declaration (the suite version hashes these)."""
        return {
            "name": self.name, "reason": self.reason + (":<value>" if self.reason_with_value else ""),
            "column": self.column, "expectation": self.check.expectation_type,
            "kwargs": self.check.kwargs(), "when_event_types": self.when_event_types,
            "description": self.description,
        }


@dataclass(frozen=True)
class Counts:
    """What the table-level rules look at."""

    rows_in: int
    rows_valid: int
    rows_quarantined: int
    valid_exposures: int  # valid impression/view rows


@dataclass(frozen=True)
class TableRule:
    """One table-level rule over the post-quarantine counts; ``fatal`` ones stop the run."""

    name: str
    reason: str
    description: str
    fatal: bool
    check: Callable[[Counts], tuple[bool, Any]] = field(compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able declaration."""
        return {"name": self.name, "reason": self.reason, "fatal": self.fatal, "description": self.description}


def row_rules(settings: ContractSettings) -> tuple[RowRule, ...]:
    """Every row-level rule, in the order reasons are reported (the first is ``rule``)."""
    traits = tuple(
        RowRule(f"{c}_in_unit_interval", "trait_out_of_range", c, Between(0.0, 1.0), f"{c} in [0, 1] when present.")
        for c in TRAIT_COLUMNS
    )
    return (
        RowRule("source_values_converted", "unparseable", SOURCE_ERRORS, IsNull(),
                "Every source value converted to its column's type; the reason names the columns that did not "
                "(unparseable:value), their raw text stays in the quarantined row's source_errors.",
                reason_with_value=True),
        *(RowRule(f"{c}_not_null", f"null_{c}", c, NotNull(), f"{c} is never null.") for c in REQUIRED_COLUMNS),
        *(RowRule(f"{c}_not_blank", f"empty_{c}", c, NotBlank(), f"{c} is not empty or only whitespace.")
          for c in ID_COLUMNS),
        *(RowRule(f"{c}_length", f"long_{c}", c, MaxLength(settings.max_id_length),
                  f"{c} at most max_id_length={settings.max_id_length} characters when present.")
          for c in LENGTH_CHECKED),
        RowRule("event_type_known", "unknown_event_type", "event_type", InSet(tuple(sorted(EVENT_TYPES))),
                "event_type is one of rankloop.schema.EventType (sources keep unknown values verbatim).",
                reason_with_value=True),
        RowRule("ts_not_in_future", "ts_in_future", "ts", Between(None, {"$PARAMETER": NOW}),
                "ts not after `now`, the validation time (a run parameter)."),
        RowRule("ts_after_floor", "ts_before_floor", "ts", Between(settings.ts_floor, None),
                f"ts at or after ts_floor={settings.ts_floor.isoformat()} (epoch-0 defaults, wrong epoch units)."),
        RowRule("ts_in_window", "ts_outside_window", "ts",
                Between({"$PARAMETER": WINDOW_START}, {"$PARAMETER": WINDOW_END}, strict_max=True),
                "ts within the extract window [start, end)."),
        RowRule("event_id_unique", "duplicate_event_id", "event_id", Unique(),
                "event_id unique; the first occurrence is kept, later ones quarantined."),
        RowRule("event_key_unique", "duplicate_event", ", ".join(EVENT_KEY), CompoundUnique(EVENT_KEY),
                "(user_id, item_id, event_type, ts) unique (client retries under new event ids); the first "
                "occurrence is kept, later ones quarantined."),
        RowRule("engagement_has_impression", "no_impression", "item_id",
                HasExposure(settings.engagement_event_types, settings.exposure_lookback_days * 86_400.0,
                            settings.exposure_clock_skew_seconds),
                "Engagement events need an impression or view of the same item by the same user in the same "
                f"session or request, or at most exposure_lookback_days={settings.exposure_lookback_days:g} days "
                "before it (whatever the session). Masks only: Great Expectations has no expectation for a join.",
                when_event_types=settings.engagement_event_types),
        RowRule("position_non_negative", "negative_position", "position", Between(0, None),
                "position >= 0 when present."),
        RowRule("propensity_in_range", "propensity_out_of_range", "propensity", Between(0.0, 1.0, strict_min=True),
                "propensity in (0, 1] when present."),
        *(RowRule(f"{c}_finite", f"non_finite_{c}", c, Finite(),
                  f"{c} is a finite number when present (NaN and infinities are quarantined). Masks only: Great "
                  "Expectations reads NaN as missing.") for c in FINITE_CHECKED),
        RowRule("rating_in_range", "rating_out_of_range", "value", Between(1.0, 5.0),
                "Rating events: value (stars) in [1, 5] when present.", when_event_types=(EventType.RATING.value,)),
        RowRule("dwell_in_range", "dwell_out_of_range", "value",
                Between(0.0, settings.max_dwell_seconds),
                "Dwell/view events: value (seconds) in [0, max_dwell_seconds] when present.",
                when_event_types=(EventType.DWELL.value, EventType.VIEW.value)),
        RowRule("completion_in_range", "completion_out_of_range", "value", Between(0.0, 100.0),
                "Complete events: value (percent) in [0, 100] when present.",
                when_event_types=(EventType.COMPLETE.value,)),
        *traits,
        RowRule("action_id_in_range", "action_id_out_of_range", "action_id", Between(0, 26),
                "action_id in 0..26 when present."),
    )


def table_rules(settings: ContractSettings) -> tuple[TableRule, ...]:
    """Table-level rules, evaluated on the counts after quarantine."""
    def fraction(c: Counts) -> tuple[bool, float]:
        observed = c.rows_quarantined / c.rows_in if c.rows_in else 0.0
        return observed <= settings.max_quarantine_fraction, observed

    return (
        TableRule("min_rows_after_quarantine", "too_few_rows",
                  f"At least min_rows={settings.min_rows} valid rows remain after quarantine.", True,
                  lambda c: (c.rows_valid >= settings.min_rows, c.rows_valid)),
        TableRule("max_quarantine_fraction", "too_many_quarantined",
                  f"At most max_quarantine_fraction={settings.max_quarantine_fraction} of rows quarantined.",
                  True, fraction),
        TableRule("has_exposures", "no_exposures",
                  "At least one valid impression or view row (non-fatal: `passed` is False).", False,
                  lambda c: (c.valid_exposures >= 1, c.valid_exposures)),
    )


def suite_as_dict(settings: ContractSettings | None = None) -> dict[str, Any]:
    """The whole declaration (name, version, required columns, rules) as JSON-able data."""
    settings = settings or ContractSettings()
    body = {
        "name": SUITE_NAME,
        "required_columns": list(REQUIRED_COLUMNS),
        "row_rules": [r.as_dict() for r in row_rules(settings)],
        "table_rules": [r.as_dict() for r in table_rules(settings)],
    }
    blob = json.dumps(body, sort_keys=True, default=str).encode()
    return {"version": hashlib.sha256(blob).hexdigest()[:12], **body}


def suite_version(settings: ContractSettings | None = None) -> str:
    """Hash (12 hex) of the declaration; changes whenever a rule or threshold changes."""
    return suite_as_dict(settings)["version"]
