"""A run is a transaction: every kind is judged first, what passed is promoted together at the end.

Each stage that trains or refits a model returns a :class:`Candidate` (registered and judged, never
promoted). The last stage, :func:`promote_candidates`, moves the aliases of the candidates that
passed; when one of those moves fails, the moves this run already made are undone, so a run either
promotes everything that passed or nothing. A run that fails at an earlier stage never reaches it:
no alias moves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.settings import Settings

log = logging.getLogger(__name__)


class Status(StrEnum):
    """What became of one kind in a run."""

    PASSED = "passed"  # judged better: promoted at the end of the run
    PROMOTED = "promoted"
    HELD = "held"  # judged not better (or broken): the champion stays
    UNCHANGED = "unchanged"  # identical to the champion: nothing registered, nothing moved
    SKIPPED = "skipped"  # the window's log cannot fit this kind (reason given)


@dataclass(frozen=True)
class Candidate:
    """One kind's outcome before promotion.

    ``decision`` is the registry gate's :class:`registry.decision.Decision` (None when unchanged or
    skipped); ``version`` the registered version (None when nothing was registered).
    """

    kind: str
    status: Status
    version: int | None
    champion_before: int | None
    reasons: tuple[str, ...]
    decision: Any = None
    headline: str = ""
    run_id: str | None = None
    verdict: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def outcome(self, status: Status, champion_after: int | None) -> dict[str, Any]:
        """The JSON-ready summary entry of this kind once the run ended."""
        return {"kind": self.kind, "status": status.value, "version": self.version,
                "verdict": self.verdict, "reasons": list(self.reasons), "headline": self.headline,
                "champion_before": self.champion_before, "champion_after": champion_after,
                "promoted": status is Status.PROMOTED, "run_id": self.run_id, **self.extra}


def candidate_from_decision(kind: str, decision: Any, *, version: int, champion_before: int | None,
                            headline: str = "", run_id: str | None = None, **extra: Any) -> Candidate:
    """PASSED when the gate passed, else HELD."""
    return Candidate(kind, Status.PASSED if decision.passed else Status.HELD, version, champion_before,
                     tuple(decision.reasons), decision, headline, run_id, decision.verdict.value, dict(extra))


def promote_candidates(settings: Settings, candidates: list[Candidate], *, actor: str, end: datetime,
                       ) -> dict[str, dict[str, Any]]:
    """Promote every PASSED candidate (in the order given); returns each kind's final outcome.

    Raises:
        RankLoopError: a promotion was refused or failed; the moves this call made were undone first.
    """
    from registry.promote import promote, rollback

    done: list[Candidate] = []
    try:
        for c in candidates:
            if c.status is Status.PASSED:
                promote(c.kind, c.version, decision=c.decision, actor=actor, settings=settings,
                        reason=f"weekly retrain {end:%Y-%m-%d}: {'; '.join(c.reasons)}")
                done.append(c)
    except BaseException as error:
        for c in reversed(done):
            _undo(rollback, settings, c, actor, error)
        raise
    out = {}
    for c in candidates:
        if c.status is Status.PASSED:
            out[c.kind] = c.outcome(Status.PROMOTED, c.version)
        else:
            out[c.kind] = c.outcome(c.status, c.champion_before)
    return out


def _undo(rollback: Any, settings: Settings, c: Candidate, actor: str, error: BaseException) -> None:
    reason = f"undo: the run that promoted version {c.version} failed before it ended ({type(error).__name__})"
    try:
        if c.champion_before is None:
            log.error("%s v%s was promoted by a run that then failed; there is no earlier champion to restore",
                      c.kind, c.version)
            return
        rollback(c.kind, to=c.champion_before, actor=actor, reason=reason, settings=settings)
        log.warning("%s: undid the promotion of v%s (back to v%s): %s", c.kind, c.version, c.champion_before, error)
    except Exception as e:  # noqa: BLE001 - the original error is the one to raise; this one is logged
        log.error("%s: could not undo the promotion of v%s: %s", c.kind, c.version, e)
