"""Configuration of the ranker, the bandit tables and the Q-learner."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RankerSettings(BaseModel):
    """LightGBM LambdaRank parameters and the time-based split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    min_child_samples: int = Field(default=20, ge=1)
    n_estimators: int = Field(default=400, ge=1, description="Maximum boosting rounds; early stopping picks fewer.")
    early_stopping_rounds: int = Field(default=30, ge=1, description="Stop when validation NDCG@10 has not improved for this many rounds.")
    feature_fraction: float = Field(default=0.9, gt=0, le=1)
    bagging_fraction: float = Field(default=0.9, gt=0, le=1)
    bagging_freq: int = Field(default=1, ge=0)
    lambdarank_truncation_level: int = Field(default=20, ge=1)
    num_threads: int = Field(default=0, ge=0, description="0 = LightGBM's default (all cores).")
    seed: int = 42
    extra_params: dict[str, Any] = Field(default_factory=dict, description="Any other LightGBM parameter, passed through.")
    valid_days: int = Field(default=7, ge=1, description="Days before the test period used for validation/early stopping.")
    test_days: int = Field(default=7, ge=1, description="The last days of the window, held out as the test week.")

