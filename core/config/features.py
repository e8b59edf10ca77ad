"""Configuration of labels and features."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def _default_grades() -> dict[str, float]:
    # The seed ranker's label table, extended to the other seeds' vocabularies.
    return {
        "implement": 1.0,
        "purchase": 1.0,
        "save": 0.8,
        "cart_add": 0.8,
        "share": 0.6,
        "like": 0.6,
        "complete": 0.6,
        "click": 0.4,
        "view": 0.1,
        "dwell": 0.1,
        "skip": 0.0,
        "dislike": 0.0,
        "dismiss": 0.0,
        "impression": 0.0,
    }


def _default_context_vocab() -> dict[str, tuple[str, ...]]:
    # Fixed so that codes mean the same thing in training and serving, whatever data a run saw.
    return {
        "device": ("mobile", "desktop", "tablet", "tv"),
        "content_type": ("music", "video", "article", "product", "project"),
        "time_of_day": ("morning", "afternoon", "evening", "night"),
        "mood": ("neutral", "happy", "sad", "calm", "peaceful", "energetic", "stressed", "anxious", "angry", "tired"),
    }


class ImplicitQuerySettings(BaseModel):
    """How the ranker's queries are built when the log has no (or too few) logged slates.

    An implicit query is one user's session (else calendar day, UTC): the items the user engaged
    with, graded by the label table, plus sampled candidates they did not engage with (grade 0).
    Every row of the query is featurised at the query's request time (its first event), so a
    sampled candidate sees exactly the history its engaged neighbours see.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["auto", "logged", "implicit"] = Field(
        default="auto",
        description="auto: implicit queries when the window holds fewer than min_logged_queries queries with "
        "an impression event; logged: always the logged slates; implicit: always implicit queries.",
    )
    min_logged_queries: int = Field(
        default=50, ge=1,
        description="Fewest logged slates (queries holding at least one impression event) for auto to train on "
        "the logged slates.",
    )
    query_by: Literal["session", "day"] = Field(
        default="session",
        description="An implicit query is the user's session (day when the session is unknown) or the user's UTC day.",
    )
    popular_negatives: int = Field(
        default=10, ge=0,
        description="Candidates per query drawn in proportion to the items' past events (popularity-weighted).",
    )
    uniform_negatives: int = Field(
        default=10, ge=0, description="Candidates per query drawn uniformly from the items known before the query's day.",
    )
    popularity_days: int = Field(
        default=28, ge=1, description="Popularity weights count each item's events in this many days before the query's day.",
    )
    seed: int = Field(default=0, description="Seed of the candidate draws (each query's draw depends only on it and the query).")
    advised_history_days: int = Field(
        default=56, ge=1,
        description="Implicit queries over a shorter history get a warning in the run's protocol note (on a "
        "ratings-only log the ranker trailed popularity with 35 days and beat it with 91: docs/learning.md).",
    )


class LabelSettings(BaseModel):
    """How an impression's events become a graded relevance label."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grades: dict[str, float] = Field(default_factory=_default_grades, description="Grade in [0, 1] per event type; an impression takes its best event's grade.")
    view_min_grade: float = Field(default=0.1, ge=0, le=1, description="Grade of a view of zero seconds.")
    view_max_grade: float = Field(default=0.4, ge=0, le=1, description="Grade of a view of view_full_seconds or more.")
    view_full_seconds: float = Field(default=60.0, gt=0, description="View duration that earns view_max_grade.")
    rating_grades: dict[int, float] = Field(
        default_factory=lambda: {5: 1.0, 4: 0.8, 3: 0.4, 2: 0.1, 1: 0.0}, description="Grade per rating star."
    )
    levels: int = Field(default=10, gt=1, description="Grades are rounded to integer relevance levels 0..levels for LambdaRank.")
    implicit: ImplicitQuerySettings = Field(
        default_factory=ImplicitQuerySettings,
        description="Queries for logs without slates (engaged items plus sampled candidates).",
    )


class FeatureSettings(BaseModel):
    """Which features to build and their hyper-parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature_set: str = Field(default="ranker_default", description="Name of the registered feature set the ranker trains on.")
    implicit_feature_set: str = Field(
        default="ranker_implicit",
        description="The feature set the ranker trains on when the window's queries are implicit (a log without "
        "slates): its collaborative features carry the personal signal such logs hold.",
    )
    windows_days: tuple[int, ...] = Field(
        default=(1, 7, 28),
        description="Look-back windows for activity counts; a feature set looking back further than the longest is refused.",
    )
    ctr_prior_strength: float = Field(default=20.0, gt=0, description="Pseudo-impressions of the Bayesian prior on click-through.")
    ctr_prior_mean: float = Field(
        default=0.05, gt=0, lt=1,
        description="Prior click-through used before any impression has been seen (later: the global past click-through).",
    )
    engagement_types: tuple[str, ...] = Field(
        default=("click", "save", "share", "implement", "like", "complete", "cart_add", "purchase"),
        description="Event types that count as an engagement (affinity, engaged-item profile embedding).",
    )
    max_position: int = Field(
        default=20, ge=1, description="Positions at or beyond this slot share one bucket of the position click-through curve."
    )
    context_vocab: dict[str, tuple[str, ...]] = Field(
        default_factory=_default_context_vocab,
        description="Fixed vocabulary per context column: code = index, unknown = len(vocab), missing = -1.",
    )
