"""Configuration of the bandit tables, the Q-learner, their rewards and off-policy evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RewardSettings(BaseModel):
    """Reward tables from the seed systems (bandits: first block; Q-learner: second block)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    click: float = Field(default=5.0, description="Bandit reward of a click (counted once per impression).")
    save: float = Field(default=10.0, description="Bandit reward of a save/bookmark (once per impression).")
    rating: dict[int, float] = Field(
        default_factory=lambda: {5: 10.0, 4: 7.0, 3: 3.0, 2: -5.0, 1: -10.0},
        description="Bandit reward by star rating (the impression's last rating counts).",
    )
    dwell_per_second: float = Field(default=0.1, description="Bandit reward per second of dwell/view time.")
    dwell_cap_seconds: float = Field(
        default=600.0, gt=0, description="Dwell seconds above this count as this (one open tab must not dominate)."
    )
    view_without_click: float = Field(default=-1.0, description="Bandit reward of an impression nobody clicked.")
    success_threshold: float = Field(default=0.0, description="A reward above this counts as a Beta success, otherwise a failure.")
    q_like: float = Field(default=1.0, description="Q reward of a like.")
    q_dislike: float = Field(default=-1.0, description="Q reward of a dislike.")
    q_complete: float = Field(default=0.5, description="Q reward of a completion (once per item).")
    q_skip: float = Field(default=-0.3, description="Q reward of a skip.")
    q_share: float = Field(default=0.8, description="Q reward of a share.")
    q_mood_improvement: float = Field(
        default=0.5, description="Q reward per unit of mood_delta (+1 better -> +0.5, -1 worse -> -0.5)."
    )


class BanditSettings(BaseModel):
    """Thompson-sampling Beta tables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prior_alpha: float = Field(default=1.0, gt=0, description="Beta prior alpha; also the prior of a new item.")
    prior_beta: float = Field(default=1.0, gt=0, description="Beta prior beta; also the prior of a new item.")
    half_life_days: float | None = Field(default=None, gt=0, description="Exponential decay of old counts; None = no decay.")
    user_prior_strength: float = Field(
        default=10.0, ge=0,
        description="Pseudo-counts of the item's global mean used as the prior of a user x item Beta.",
    )
    n_sims: int = Field(default=10_000, ge=100, description="Monte Carlo draws for action probabilities (OPE).")


class LinUCBSettings(BaseModel):
    """Disjoint LinUCB."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=1.0, ge=0, description="Width of the upper confidence bound.")
    ridge: float = Field(default=1.0, gt=0, description="A starts at ridge * I for every arm.")
    context_features: tuple[str, ...] = Field(
        default=("device", "time_of_day", "content_type"), description="Categorical context columns, one-hot encoded."
    )
    reward: Literal["success", "reward"] = Field(
        default="success", description="Target: the 0/1 Beta success or the raw bandit reward."
    )
    exploration: float = Field(
        default=0.15, ge=0, le=1, description="Serving exploration rate (seed: 15%); the evaluated policy is "
        "epsilon-greedy on the UCB scores with this epsilon."
    )


class QLearningSettings(BaseModel):
    """Tabular Q-learning over personality x content type x mood x time of day, 27 actions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=0.1, gt=0, le=1, description="Learning rate.")
    gamma: float = Field(default=0.9, ge=0, le=1, description="Discount of the next slate's value.")
    epsilon_start: float = Field(default=0.3, ge=0, le=1, description="Exploration rate of a fresh table.")
    epsilon_end: float = Field(default=0.05, ge=0, le=1, description="Floor of the exploration rate.")
    logging_action_probability: float = Field(
        default=1 / 27, gt=0, le=1, description="Probability with which the logging policy chose each logged action "
        "(1/27: uniform exploration, as the simulator and an exploring deployment log). Used as the OPE propensity.",
    )
    epsilon_decay: float = Field(default=0.995, gt=0, le=1, description="Exploration rate factor per episode.")
    trait_bins: int = Field(default=3, ge=2, le=10, description="Equal-width bins per Big Five trait (+1 'unknown').")
    content_types: tuple[str, ...] = Field(
        default=("music", "video", "article", "product", "project"), description="Content types (others -> 'other')."
    )
    moods: tuple[str, ...] = Field(
        default=("happy", "neutral", "sad", "relaxed", "energetic", "stressed", "anxious"),
        description="Moods (others and missing -> 'other').",
    )
    times_of_day: tuple[str, ...] = Field(
        default=("morning", "afternoon", "evening", "night"), description="Times of day (others -> 'other')."
    )
    default_action: int = Field(default=13, ge=0, le=26, description="Action for states never visited.")

    @model_validator(mode="after")
    def _epsilon_order(self) -> QLearningSettings:
        if self.epsilon_end > self.epsilon_start:
            raise ValueError(
                f"epsilon_end must be <= epsilon_start, got {self.epsilon_end} > {self.epsilon_start}"
            )
        return self


class OPESettings(BaseModel):
    """Off-policy evaluation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_samples: int = Field(default=500, ge=50, description="Bootstrap resamples for the intervals.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Coverage of the bootstrap intervals.")
    min_ess: float = Field(default=100.0, ge=1, description="Below this effective sample size: 'cannot evaluate'.")
    seed: int = Field(default=11, description="Seed of the bootstrap.")
