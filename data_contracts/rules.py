"""The ``interactions`` contract suite, declared once.

Each row-level rule names a reason code, one column and a *check* (``data_contracts.checks``). The
check yields both the Great Expectations expectation and the vectorised pyarrow mask that
quarantines rows (``mask()``), so the two cannot drift apart.
Window bounds are GE suite parameters (``$PARAMETER``), so the suite (and its version) does not
change from week to week; thresholds from :class:`ContractSettings` are part of the declaration.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config.contracts import ContractSettings
from core.schema import EVENT_TYPES, REQUIRED_COLUMNS, SOURCE_ERRORS, TRAIT_COLUMNS, EventType
from data_contracts.checks import (
    Batch,
    Between,
    Check,
    CompoundUnique,
    Finite,
    HasExposure,
    InSet,
    IsNull,
    MaxLength,
    NotBlank,
    NotNull,
    Unique,
    to_numpy,
)

SUITE_NAME = "interactions"
WINDOW_START = "window_start"
WINDOW_END = "window_end"
NOW = "now"
EVENT_KEY: tuple[str, ...] = ("user_id", "item_id", "event_type", "ts")
ID_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id")
LENGTH_CHECKED: tuple[str, ...] = (*ID_COLUMNS, "session_id", "request_id")
FINITE_CHECKED: tuple[str, ...] = ("value", "propensity", "mood_delta")


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
        flagged = flagged if isinstance(flagged, np.ndarray) else to_numpy(flagged)
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
                "event_type is one of core.schema.EventType (sources keep unknown values verbatim).",
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
