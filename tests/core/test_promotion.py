"""``rankloop.promotion``: promote what passed, all or nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rankloop.promotion import Candidate, Status, promote_candidates


def _candidate(kind: str, status: Status, version: int | None, before: int | None) -> Candidate:
    return Candidate(kind, status, version, before, (f"{kind} reason",), decision=object(), verdict="PASS")


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    import registry.promote

    log: list[tuple[str, str, int]] = []

    def promote(kind: str, version: int, **kwargs: Any) -> None:
        if kind == "qtable":
            raise RuntimeError("store went away")
        log.append(("promote", kind, version))

    def rollback(kind: str, *, to: int, **kwargs: Any) -> None:
        log.append(("rollback", kind, to))

    monkeypatch.setattr(registry.promote, "promote", promote)
    monkeypatch.setattr(registry.promote, "rollback", rollback)
    return log


def test_only_passed_candidates_are_promoted_and_each_kind_says_what_became_of_it(moves: list) -> None:
    candidates = [_candidate("ranker", Status.PASSED, 3, 2), _candidate("bandit", Status.HELD, 5, 4),
                  _candidate("linucb", Status.UNCHANGED, 1, 1), _candidate("qtable", Status.SKIPPED, None, None)]
    out = promote_candidates(None, candidates, actor="test", end=datetime(2026, 11, 16, tzinfo=UTC))  # type: ignore[arg-type]
    assert moves == [("promote", "ranker", 3)]
    assert {k: v["status"] for k, v in out.items()} == {"ranker": "promoted", "bandit": "held",
                                                         "linucb": "unchanged", "qtable": "skipped"}
    assert out["ranker"]["champion_after"] == 3 and out["bandit"]["champion_after"] == 4


def test_a_failed_promotion_undoes_the_moves_the_run_made(moves: list) -> None:
    candidates = [_candidate("ranker", Status.PASSED, 3, 2), _candidate("bandit", Status.PASSED, 5, 4),
                  _candidate("qtable", Status.PASSED, 7, 6)]
    with pytest.raises(RuntimeError, match="store went away"):
        promote_candidates(None, candidates, actor="test", end=datetime(2026, 11, 16, tzinfo=UTC))  # type: ignore[arg-type]
    assert moves == [("promote", "ranker", 3), ("promote", "bandit", 5), ("rollback", "bandit", 4),
                     ("rollback", "ranker", 2)]
