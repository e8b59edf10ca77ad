"""Configuration of the promotion gate."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GateSettings(BaseModel):
    """When a new version may replace the champion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ndcg_tolerance: float = Field(
        default=0.0, ge=0, description="Allowed drop of test NDCG@10 against the champion."
    )
    bootstrap_samples: int = Field(
        default=1000, ge=100, description="Paired bootstrap resamples over queries."
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="One-sided level of the bootstrap lower bound (0.95: the 5th percentile of the mean difference).",
    )
    seed: int = Field(default=7, description="Seed of the paired bootstrap, so a decision can be replayed.")
    policy_tolerance: float = Field(
        default=0.0,
        ge=0,
        description="A table policy passes when its OPE lower bound >= the champion's OPE estimate minus this.",
    )
    lock_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a promotion or rollback waits for another one of the same model kind to finish "
        "(they are serialised by a lock file under <home>/locks) before it fails naming the lock.",
    )
