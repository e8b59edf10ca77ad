"""Configuration of the data contracts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rankloop.schema import EVENT_TYPES


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
        description="Event types that need an exposure (impression or view) of the same item by the same user "
        "in the same session or request; rows without one are quarantined as no_impression.",
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

    @field_validator("engagement_event_types")
    @classmethod
    def _known_engagements(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - EVENT_TYPES)
        exposures = sorted(set(value) & {"impression", "view"})
        if unknown or exposures:
            raise ValueError(f"engagement_event_types must be non-exposure EventType values; unknown {unknown}, "
                             f"exposure types {exposures} (they are what engagements are matched against)")
        return tuple(value)
