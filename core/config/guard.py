"""Configuration of the live checks around a release: drift of each run's data, the A/B report and the
guardrail (``RANKLOOP_DRIFT__*``, ``RANKLOOP_GUARD__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DriftSettings(BaseModel):
    """Drift of a run's newest week against the week before it (``rankloop.drift``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of the reference week per numeric feature (PSI).")
    top: int = Field(default=10, ge=1, description="Features listed (and charted) as the top movers.")
    hold_psi: float | None = Field(
        default=None, gt=0,
        description="Hold every version the run would promote when a feature's, the event-type mix's, the Q "
        "action mix's or the ranker score's PSI exceeds this (0.25 is the customary 'major shift'). None: "
        "report only.",
    )


class GuardSettings(BaseModel):
    """When the guardrail reverts a release from its live traffic (``rankloop.guard``, docs/operations.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["click_rate", "engagement_rate"] = Field(
        default="click_rate", description="Per-request outcome compared: share of the slate clicked, or engaged with "
        "(a reward above rewards.success_threshold).")
    margin: float = Field(
        default=0.01, ge=0, description="The champion is reverted only when its rate is lower than its previous "
        "version's by more than this (absolute, e.g. 0.01 = one point).")
    alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="False-revert bound of the sequential test, valid however many "
        "daily looks are taken (mSPRT: revert when the mixture likelihood ratio reaches 1/alpha).")
    mixture_sd: float = Field(
        default=0.05, gt=0, description="Standard deviation of the normal mixture over the effect (in rate units): "
        "the effect size the test is most sensitive to.")
    min_requests: int = Field(
        default=50, ge=10, description="Fewest requests each arm needs since the promotion; below it the guardrail "
        "says 'insufficient traffic' and does nothing.")
    lookback_days: int = Field(default=28, ge=1, description="Days of the source the guardrail and the daily A/B "
                               "report read (a release's traffic older than this is not seen).")
    ahead_days: int = Field(
        default=7, ge=0, description="Days after today also read: a simulated source's served days can run ahead "
        "of the wall clock (a live log has nothing there).")
    guarded_forced_actors: tuple[str, ...] = Field(
        default=("drill",), description="Forced promotions by these actors are guarded too (drills); any other "
        "forced promotion, and every rollback, is an on-call decision the guardrail never reverts.")
