"""Configuration of the data contracts."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.schema import EVENT_TYPES


class ContractSettings(BaseModel):
    """Thresholds of the interaction contract suite (every one is recorded in the suite version)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_quarantine_fraction: float = Field(
        default=0.01, ge=0, le=1,
        description="Fail the run when more than this fraction of rows is quarantined (default 1%).",
    )
    min_rows: int = Field(default=100, ge=0, description="Fail the run when fewer valid rows than this remain.")
    max_dwell_seconds: float = Field(
        default=86_400.0,
        gt=0,
        description="Dwell/view events must have 0 <= value <= this many seconds (default 86,400 s = one day).",
    )
    engagement_event_types: tuple[str, ...] = Field(
        default=("click", "save", "cart_add", "purchase"),
        description="Event types that need an exposure (impression or view) of the same item by the same user: "
        "in the same session or request, or within exposure_lookback_days before it; rows without one are "
        "quarantined as no_impression.",
    )
    exposure_lookback_days: float = Field(
        default=7.0, ge=0,
        description="An engagement counts as following an exposure when the same user saw or viewed the same item "
        "at most this many days before it (in the extract, or in the prior exposures given), whatever the session.",
    )
    exposure_clock_skew_seconds: float = Field(
        default=60.0, ge=0,
        description="An exposure logged up to this many seconds after the engagement still counts (clients and "
        "trackers log asynchronously).",
    )
    max_id_length: int = Field(
        default=256, ge=1,
        description="event_id, user_id, item_id, session_id and request_id longer than this many characters are "
        "quarantined (a 10,000-character id is a logging bug, not an id).",
    )
    ts_floor: datetime = Field(
        default=datetime(1980, 1, 1, tzinfo=UTC),
        description="Rows with ts before this are quarantined as ts_before_floor (epoch-0 defaults, wrong epoch "
        "units, pre-1970 values). Timezone-aware.",
    )
    max_volume_change: float = Field(
        default=0.5, gt=0,
        description="Fail the run when the valid rows per active day differ from the previous window's by more "
        "than this relative change (0.5: below 0.5x or above 1.5x).",
    )
    max_event_mix_shift: float = Field(
        default=0.1, gt=0, le=1,
        description="Fail the run when the event-type mix moves further than this total variation distance "
        "(half the sum of absolute share differences, 0..1) from the previous window's.",
    )
    min_day_volume_fraction: float = Field(
        default=0.6, gt=0, lt=1,
        description="Fail the run when a full day in the window has fewer valid rows than this fraction of the "
        "median day (days before the source's first row are not counted).",
    )
    day_volume_min_rows: int = Field(
        default=1_000, ge=1,
        description="Check daily volumes only when the median day has at least this many rows (small sources "
        "are too noisy for the check).",
    )
    ge_max_rows: int | None = Field(
        default=200_000,
        ge=1,
        description="Run Great Expectations on the full extract up to this many rows; above it, on an evenly "
        "strided deterministic sample of this many rows (exact counts still come from the vectorised masks). "
        "None: always the full extract.",
    )
    example_rows: int = Field(
        default=5, ge=1, le=100, description="How many offending rows a ContractViolation quotes per rule."
    )

    @field_validator("ts_floor")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError(f"ts_floor must be timezone-aware (e.g. 1980-01-01T00:00:00Z), got {value.isoformat()}")
        return value.astimezone(UTC)

    @field_validator("engagement_event_types")
    @classmethod
    def _known_engagements(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - EVENT_TYPES)
        exposures = sorted(set(value) & {"impression", "view"})
        if unknown or exposures:
            raise ValueError(f"engagement_event_types must be non-exposure EventType values; unknown {unknown}, "
                             f"exposure types {exposures} (they are what engagements are matched against)")
        return tuple(value)
