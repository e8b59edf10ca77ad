"""Configuration of the promotion gate."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReplaySettings(BaseModel):
    """The serve-ability check before promotion: the candidate, loaded by ``registry.load`` in a fresh process,
    scores the last week's requests (``registry.replay``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="Replay every ranker the run would promote; a failure holds it.")
    candidates: int = Field(default=100, ge=1, description="Rows of one timed request (a 100-candidate request).")
    requests: int = Field(default=200, ge=10, description="Timed requests (the p99 latency is over these).")
    p99_ms: float = Field(default=100.0, gt=0, description="Bound on the p99 scoring latency of one request, ms.")
    max_memory_mb: float = Field(
        default=4096.0, gt=0, description="Bound on the replay process's peak resident memory (interpreter, "
        "libraries, model and one batch of the week's requests: registry.replay.REPLAY_BATCH_ROWS rows), MB.")
    timeout_s: float = Field(default=600.0, gt=0, description="The replay process is stopped (and the version held) "
                             "after this long.")


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
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    lock_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a promotion or rollback waits for another one of the same model kind to finish "
        "(they are serialised by a lock file under <home>/locks) before it fails naming the lock.",
    )
