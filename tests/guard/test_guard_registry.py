"""The guardrail against a real registry store: it reverts a guarded release through the locked
promotion path with actor 'guardrail' and its evidence in the ledger, and never fights on-call."""

from __future__ import annotations

import json

from rankloop.guard import ACTOR, _revert, guard_kind
from registry.decision import Decision, Verdict
from registry.ledger import history
from registry.promote import promote, rollback
from registry.store import aliases

from .conftest import Store, register, requests_frame, tiny_model_text

BAD = {"ranker:2@2/1": (400, 0.09), "ranker:1@2/1": (100, 0.20)}


def _weekly_first(store: Store, version: int) -> None:
    decision = Decision("ranker", Verdict.PASS, ("first version",), {}, version, None)
    promote("ranker", version, decision=decision, actor="weekly-retrain", reason="weekly", settings=store.settings)


def _two_versions(store: Store, actor: str = "drill") -> None:
    _weekly_first(store, register(store, tiny_model_text(1)))
    register(store, tiny_model_text(2))
    promote("ranker", 2, decision=None, actor=actor, reason=f"{actor}: forced", forced=True, settings=store.settings)


def test_a_drill_release_worse_on_its_traffic_is_rolled_back_by_the_guardrail(store: Store) -> None:
    _two_versions(store)
    verdict = guard_kind(store.settings, "ranker", requests_frame(BAD), client=store.client)
    assert verdict.status == "reverted" and (verdict.champion, verdict.previous) == (2, 1)
    assert aliases(store.client, "ranker") == {"champion": 1, "previous": 2}
    last = history("ranker", client=store.client)[-1]
    assert (last.actor, last.action, last.to_version, last.status) == (ACTOR, "rollback", 1, "committed")
    assert last.reason.startswith("guardrail: v2 worse than its previous version")
    assert last.decision["figures"]["guardrail"] == 1 and last.decision["figures"]["p_value"] <= 0.05
    evidence = store.client.download_artifacts(verdict.ledger_entry, "guardrail/evidence.json")
    with open(evidence) as handle:
        recorded = json.load(handle)
    assert recorded["status"] == "reverted" and recorded["figures"]["requests_previous"] == 100
    assert recorded["looks"] and recorded["figures"]["release"] == "2/1"
    again = guard_kind(store.settings, "ranker", requests_frame(BAD), client=store.client)
    assert again.status == "respected" and "a rollback is never reverted" in again.reasons[0]


def test_dry_run_judges_and_moves_nothing(store: Store) -> None:
    _two_versions(store)
    verdict = guard_kind(store.settings, "ranker", requests_frame(BAD), client=store.client, dry_run=True)
    assert verdict.status == "would_revert"
    assert aliases(store.client, "ranker") == {"champion": 2, "previous": 1}


def test_an_equal_release_is_kept_and_too_little_traffic_is_said(store: Store) -> None:
    _two_versions(store)
    same = {"ranker:2@2/1": (400, 0.2), "ranker:1@2/1": (100, 0.2)}
    assert guard_kind(store.settings, "ranker", requests_frame(same), client=store.client).status == "keep"
    little = {"ranker:2@2/1": (120, 0.05), "ranker:1@2/1": (30, 0.2)}
    verdict = guard_kind(store.settings, "ranker", requests_frame(little), client=store.client)
    assert verdict.status == "insufficient_traffic" and verdict.reasons[0].startswith("insufficient traffic")
    assert aliases(store.client, "ranker") == {"champion": 2, "previous": 1}


def test_on_call_decisions_after_the_promotion_are_respected(store: Store) -> None:
    _two_versions(store, actor="alice")  # a forced promotion by a person
    verdict = guard_kind(store.settings, "ranker", requests_frame(BAD), client=store.client)
    assert verdict.status == "respected" and "promoted by hand by alice" in verdict.reasons[0]
    rollback("ranker", actor="bob", reason="on-call: back to v1", settings=store.settings)
    promote("ranker", 2, decision=None, actor="drill", reason="drill again", forced=True, settings=store.settings)
    rollback("ranker", actor="bob", reason="on-call: no", settings=store.settings)
    traffic = {"ranker:1@1/2": (400, 0.05), "ranker:2@1/2": (100, 0.2)}
    verdict = guard_kind(store.settings, "ranker", requests_frame(traffic), client=store.client)
    assert verdict.status == "respected" and "put back by bob" in verdict.reasons[0]
    assert aliases(store.client, "ranker") == {"champion": 1, "previous": 2}


def test_a_rollback_between_judging_and_reverting_wins(store: Store) -> None:
    _two_versions(store)
    judged = guard_kind(store.settings, "ranker", requests_frame(BAD), client=store.client, dry_run=True)
    entry = judged.figures["ledger_entry"]
    rollback("ranker", actor="carol", reason="on-call got there first", settings=store.settings)
    done = _revert(store.settings, store.client, "ranker", judged, entry)
    assert done.status == "stood_down" and "nothing reverted" in done.reasons[0]
    assert [e.actor for e in history("ranker", client=store.client) if e.alias == "champion"][-1] == "carol"


def test_no_previous_and_no_champion_are_said(store: Store) -> None:
    verdict = guard_kind(store.settings, "ranker", requests_frame(BAD), client=store.client)
    assert verdict.status == "no_champion"
    _weekly_first(store, register(store, tiny_model_text(1)))
    verdict = guard_kind(store.settings, "ranker", requests_frame(BAD), client=store.client)
    assert verdict.status == "no_previous"
