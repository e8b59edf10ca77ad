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
