"""Configuration of where interactions come from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SourceSettings(BaseModel):
    """The interaction source and how to read it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str | None = Field(
        default=None,
        description="Source URI (sqlite:///path, postgresql://..., mysql://..., mongodb://.../db?collection=name, "
        "or a Parquet file/folder). Default: the demo SQLite database <home>/interactions.db.",
    )
    mapping: str = Field(default="rankloop", description="Name of a shipped mapping or path to a mapping YAML/JSON file.")
    batch_rows: int = Field(default=250_000, gt=0, description="Rows per Arrow batch streamed into the snapshot.")
    connect_retries: int = Field(default=3, ge=0, description="Retries for transient connection failures.")
    retry_delay_s: float = Field(default=2.0, ge=0, description="Seconds between connection retries (doubles each time).")
