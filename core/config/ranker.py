"""Configuration of the LambdaRank ranker and its time-based split."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The fields of RankerSettings that are Ranker constructor parameters (the rest shape the split).
RANKER_PARAM_NAMES: tuple[str, ...] = (
    "learning_rate",
    "num_leaves",
    "min_child_samples",
    "n_estimators",
    "early_stopping_rounds",
    "feature_fraction",
    "bagging_fraction",
    "bagging_freq",
    "lambdarank_truncation_level",
    "num_threads",
    "seed",
    "extra_params",
    "position_bias",
    "position_bias_regularization",
    "propensity_floor",
)

PositionBias = Literal["none", "lightgbm", "propensity"]


class RankerSettings(BaseModel):
    """LightGBM LambdaRank parameters and the time-based split.

    The defaults suit 10^4-10^6 impressions in slates of 5-50 items with graded click labels: a
    small learning rate with early stopping on validation NDCG@10 picks the number of trees, leaves
    need 50 impressions so noisy click labels do not carve one-user leaves, and row/feature
    sub-sampling adds a little regularisation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(default=0.05, gt=0, description="Shrinkage per boosting round.")
    num_leaves: int = Field(default=31, ge=2, description="Maximum leaves per tree.")
    min_child_samples: int = Field(
        default=50, ge=1, description="Minimum impressions per leaf (LightGBM min_data_in_leaf)."
    )
    n_estimators: int = Field(default=400, ge=1, description="Maximum boosting rounds; early stopping picks fewer.")
    early_stopping_rounds: int | None = Field(
        default=30,
        ge=1,
        description="Stop when validation NDCG@10 has not improved for this many rounds. None = train all "
        "n_estimators rounds (validation curves are still recorded).",
    )
    feature_fraction: float = Field(default=0.9, gt=0, le=1, description="Share of features each tree sees.")
    bagging_fraction: float = Field(default=0.9, gt=0, le=1, description="Share of rows each bagging round keeps.")
    bagging_freq: int = Field(default=1, ge=0, description="Re-draw the bagging sample every this many rounds (0 = off).")
    lambdarank_truncation_level: int = Field(
        default=20, ge=1, description="Pairs are formed with the top this-many positions of each slate (keep >= 10)."
    )
    num_threads: int = Field(default=0, ge=0, description="0 = LightGBM's default (all cores).")
    seed: int = Field(default=42, description="Seed of every LightGBM random draw (training is deterministic given it).")
    extra_params: dict[str, Any] = Field(default_factory=dict, description="Any other LightGBM parameter, passed through.")
    position_bias: PositionBias = Field(
        default="none",
        description="How the training objective discounts the logged slot (never a feature: serving ranks "
        "before any slot exists). lightgbm: LightGBM's position-bias treatment for lambdarank (each training "
        "row's logged slot goes to the Dataset; the score is learnt as relevance f(x) + slot factor g(slot) and "
        "only f(x) is kept, so the model predicts without a slot). propensity: each training row weighted by "
        "1 / max(logged propensity, propensity_floor), normalised to mean 1. none: no correction. Queries "
        "without logged slots (implicit queries) have nothing to correct and train uncorrected.",
    )
    position_bias_regularization: float = Field(
        default=0.0, ge=0,
        description="LightGBM's lambdarank_position_bias_regularization (shrinks the learnt slot factors; "
        "position_bias=lightgbm only).",
    )
    propensity_floor: float = Field(
        default=0.05, gt=0, le=1,
        description="Logged propensities below this count as this (caps a row's weight at 1/floor; "
        "position_bias=propensity only).",
    )
    max_train_queries: int | None = Field(
        default=100_000,
        ge=1,
        description="Train on at most this many queries (slates): a deterministic sample of whole queries, "
        "chosen by a seeded hash of query_id (so the same week gives the same sample). None = all. Bounds "
        "training at ~10^6 impressions: on 2 cores LambdaRank on 4.5M impressions (10M interactions) does "
        "not fit a weekly 10-minute budget, and NDCG@10 gains little beyond 10^5 queries. The test week is "
        "never sampled (validation: max_valid_queries).",
    )
    max_valid_queries: int | None = Field(
        default=50_000,
        ge=1,
        description="Early-stop on at most this many validation queries (those with a relevant item): a "
        "deterministic sample of whole queries by the same seeded hash of query_id as max_train_queries. None "
        "= all. The validation week is what grows with the window under the fit (3.9M rows at 10M "
        "interactions, 11.8M at 30M, binned beside the capped train rows); the sample only picks the "
        "iteration early stopping keeps. The test week, which the gate judges, is never sampled.",
    )
    valid_days: int = Field(default=7, ge=1, description="Days before the test period used for validation/early stopping.")
    test_days: int = Field(default=7, ge=1, description="The last days of the window, held out as the test week.")

    def split_starts(self, end: datetime) -> tuple[datetime, datetime]:
        """``(valid_start, test_start)`` of the window ending at ``end``: see :func:`split_starts`."""
        return split_starts(end, valid_days=self.valid_days, test_days=self.test_days)

    def test_start(self, end: datetime) -> datetime:
        """The first instant of the test week of the window ending at ``end``."""
        return self.split_starts(end)[1]

    def ranker_params(self) -> dict[str, Any]:
        """The Ranker constructor parameters (everything but the split)."""
        return {name: getattr(self, name) for name in RANKER_PARAM_NAMES}


def split_starts(end: datetime, *, valid_days: int, test_days: int) -> tuple[datetime, datetime]:
    """The time split of a window ending at ``end`` (exclusive): the test part is the last ``test_days``,
    validation the ``valid_days`` before it, training everything earlier. Returns ``(valid_start,
    test_start)``; every stage that splits by time (ranker, tables, drift, the partitioned dataset)
    takes its boundaries from here."""
    test_start = end - timedelta(days=test_days)
    return test_start - timedelta(days=valid_days), test_start
