"""Configuration of the data contracts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ContractSettings(BaseModel):
    """Thresholds of the interaction contract suite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_quarantine_fraction: float = Field(
        default=0.2, ge=0, le=1, description="Fail the run when more than this fraction of rows is quarantined."
    )
    min_rows: int = Field(default=100, ge=0, description="Fail the run when fewer valid rows than this remain.")
    max_dwell_seconds: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="Dwell/view events must have 0 <= value < this many seconds (default 6 hours).",
    )
    ge_max_rows: int | None = Field(
        default=1_000_000,
        ge=1,
        description="Run Great Expectations on the full extract up to this many rows; above it, on an evenly "
        "strided deterministic sample of this many rows (exact counts still come from the vectorised masks). "
        "None: always the full extract.",
    )
    example_rows: int = Field(
        default=5, ge=1, le=100, description="How many offending rows a ContractViolation quotes per rule."
    )
