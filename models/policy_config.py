"""Configuration of the bandit tables, the Q-learner, their rewards and off-policy evaluation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RewardSettings(BaseModel):
    """Reward tables from the seed systems (bandits: first block; Q-learner: second block)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    click: float = 5.0
    save: float = 10.0
    rating: dict[int, float] = Field(default_factory=lambda: {5: 10.0, 4: 7.0, 3: 3.0, 2: -5.0, 1: -10.0})
    dwell_per_second: float = 0.1
    view_without_click: float = -1.0
    success_threshold: float = Field(default=0.0, description="A reward above this counts as a Beta success, otherwise a failure.")
    q_like: float = 1.0
    q_dislike: float = -1.0
    q_complete: float = 0.5
    q_skip: float = -0.3
    q_share: float = 0.8
    q_mood_improvement: float = 0.5


class BanditSettings(BaseModel):
    """Thompson-sampling Beta tables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prior_alpha: float = Field(default=1.0, gt=0)
    prior_beta: float = Field(default=1.0, gt=0)
    half_life_days: float | None = Field(default=None, gt=0, description="Exponential decay of old counts; None = no decay.")


class LinUCBSettings(BaseModel):
    """Disjoint LinUCB."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=1.0, ge=0)
    ridge: float = Field(default=1.0, gt=0)
    context_features: tuple[str, ...] = Field(default=("device", "time_of_day", "content_type"))


class QLearningSettings(BaseModel):
    """Tabular Q-learning over personality x content type x mood x time of day, 27 actions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=0.1, gt=0, le=1)
    gamma: float = Field(default=0.9, ge=0, le=1)
    epsilon_start: float = Field(default=0.3, ge=0, le=1)
    epsilon_end: float = Field(default=0.05, ge=0, le=1)
    trait_bins: int = Field(default=3, ge=2)
    default_action: int = Field(default=13, ge=0, le=26)


class OPESettings(BaseModel):
    """Off-policy evaluation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_samples: int = Field(default=500, ge=50)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_ess: float = Field(default=100.0, ge=1, description="Below this effective sample size: 'cannot evaluate'.")
    seed: int = 11
