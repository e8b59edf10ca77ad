"""Atomic promotion: a failure at any step leaves every alias where it was; the gate is enforced."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from core.errors import Reason, RegistryError
from registry.decision import Decision, Verdict, log_decision
from registry.ledger import history
from registry.promote import STEPS, InjectedFault, promote, rollback
from registry.store import aliases, read_manifest, set_alias

from .conftest import Store, experiment_id, register_ranker


def _pass(version: int, champion: int | None) -> Decision:
    return Decision("ranker", Verdict.PASS, ("test",), {"ndcg_diff_lower": 0.01}, version, champion)


@pytest.fixture(scope="module")
def two_versions(store: Store) -> tuple[int, int]:
    """v1 champion, v2 registered (with manifest), not promoted."""
    v1, v2 = register_ranker(store, 1), register_ranker(store, 2)
    promote(
        "ranker",
        v1,
        decision=_pass(v1, None),
        actor="test",
        reason="first",
        client=store.client,
        settings=store.settings,
    )
    return v1, v2


def _state(store: Store) -> tuple[dict[str, int], int]:
    return aliases(store.client, "ranker"), len(history("ranker", client=store.client))


@pytest.mark.parametrize("fault", [*STEPS, *(f"{s}:after" for s in STEPS)])
def test_failure_at_any_step_moves_no_alias(store: Store, two_versions: tuple[int, int], fault: str) -> None:
    v1, v2 = two_versions
    before = _state(store)
    with pytest.raises((InjectedFault, RegistryError)):
        promote(
            "ranker",
            v2,
            decision=_pass(v2, v1),
            actor="test",
            reason="inject",
            client=store.client,
            settings=store.settings,
            faults=[fault],
        )
    assert _state(store) == before
    assert before[0]["champion"] == v1


def test_alias_store_failing_mid_move_restores_previous(
    store: Store, two_versions: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = two_versions
    before = _state(store)
    real = store.client.set_registered_model_alias
    calls = []

    def flaky(name: str, alias: str, version: str) -> None:
        calls.append(alias)
        if alias == "champion" and len(calls) == 2:  # 'previous' moved, then the store fails
            raise mlflow.exceptions.MlflowException("store went away")
        real(name, alias, version)

    monkeypatch.setattr(store.client, "set_registered_model_alias", flaky)
    with pytest.raises(RegistryError, match="failed and was undone"):
        promote(
            "ranker",
            v2,
            decision=_pass(v2, v1),
            actor="t",
            reason="r",
            client=store.client,
            settings=store.settings,
        )
    monkeypatch.undo()
    assert calls[:2] == ["previous", "champion"]
    assert _state(store) == before
    aborted = [
        e for e in history("ranker", client=store.client, include_aborted=True) if e.status == "aborted"
    ]
    assert aborted and aborted[-1].to_version in (v1, v2)


@pytest.mark.parametrize(
    ("decision", "match"),
    [
        (None, "no gate decision"),
        (Decision("ranker", Verdict.HOLD, ("inconclusive",), {}, 2, 1), "verdict HOLD"),
        (Decision("ranker", Verdict.PASS, ("ok",), {}, 2, None), "compared with champion None"),
        (Decision("bandit", Verdict.PASS, ("ok",), {}, 2, 1), "about bandit version 2"),
    ],
)
def test_gate_refuses_and_nothing_moves(
    store: Store, two_versions: tuple[int, int], decision: Decision | None, match: str
) -> None:
    before = _state(store)
    with pytest.raises(RegistryError, match=match) as info:
        promote(
            "ranker",
            two_versions[1],
            decision=decision,
            actor="t",
            reason="r",
            client=store.client,
            settings=store.settings,
        )
    assert info.value.reason is Reason.GATE
    assert _state(store) == before


def test_refusals_name_what_is_wrong(store: Store, two_versions: tuple[int, int]) -> None:
    with pytest.raises(RegistryError, match="no version 99") as info:
        promote(
            "ranker",
            99,
            decision=None,
            actor="t",
            reason="r",
            forced=True,
            client=store.client,
            settings=store.settings,
        )
    assert info.value.reason is Reason.NOT_FOUND
    with pytest.raises(ValueError, match="needs a reason"):
        promote(
            "ranker", two_versions[1], decision=None, actor="t", reason=" ", forced=True, client=store.client
        )
    with pytest.raises(ValueError, match="unknown fault step"):
        promote(
            "ranker",
            two_versions[1],
            decision=None,
            actor="t",
            reason="r",
            client=store.client,
            faults=["nap"],
        )


def test_version_without_manifest_is_tagged_unusable_and_refused(
    store: Store, two_versions: tuple[int, int]
) -> None:
    from registry.store import TAG_UNUSABLE, get_version

    bare = register_ranker(store, 7, publish=False)  # its run ended without publishing a manifest
    with pytest.raises(RegistryError, match=f"ranker version {bare} is unusable: no manifest") as info:
        promote(
            "ranker",
            bare,
            decision=None,
            actor="t",
            reason="r",
            forced=True,
            client=store.client,
            settings=store.settings,
        )
    assert info.value.reason is Reason.REFUSED
    assert "ended (FINISHED) without publishing one" in get_version(store.client, "ranker", bare).tags[TAG_UNUSABLE]
    assert aliases(store.client, "ranker")["champion"] == two_versions[0]


def test_promote_then_rollback_moves_champion_and_previous(
    store: Store, two_versions: tuple[int, int]
) -> None:
    v3 = register_ranker(store, 3)
    champion = aliases(store.client, "ranker")["champion"]
    promote(
        "ranker",
        v3,
        decision=_pass(v3, champion),
        actor="t",
        reason="better",
        client=store.client,
        settings=store.settings,
    )
    assert aliases(store.client, "ranker") == {"champion": v3, "previous": champion}
    rollback("ranker", actor="t", reason="bad clicks", client=store.client, settings=store.settings)
    assert aliases(store.client, "ranker") == {"champion": champion, "previous": v3}
    last = history("ranker", client=store.client)[-2:]
    assert [(e.alias, e.from_version, e.to_version, e.action) for e in last] == [
        ("previous", champion, v3, "rollback"),
        ("champion", v3, champion, "rollback"),
    ]
    assert last[-1].forced and last[-1].reason == "bad clicks"
    with pytest.raises(RegistryError, match="already is the champion"):
        rollback("ranker", to=champion, actor="t", reason="r", client=store.client, settings=store.settings)


def test_log_decision_writes_json_tags_and_metrics(store: Store) -> None:
    decision = _pass(5, 4)
    run_id = store.client.create_run(experiment_id(store.client)).info.run_id
    log_decision(decision, run_id=run_id, client=store.client)
    run = store.client.get_run(run_id)
    assert run.data.tags["gate.verdict"] == "PASS" and run.data.metrics["gate.ndcg_diff_lower"] == 0.01
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="gate/decision.json", tracking_uri=store.settings.tracking_uri
    )
    assert Decision.from_json(Path(path).read_text()) == decision


def test_tampered_manifest_is_refused(store: Store, two_versions: tuple[int, int]) -> None:
    v = register_ranker(store, 11)
    manifest = read_manifest(store.client, "ranker", v)
    run_id = store.client.get_model_version("rankloop.ranker", str(v)).run_id
    store.client.log_text(
        run_id, json.dumps({**manifest, "metrics": {"ndcg_at_10": 0.99}}), "ranker/manifest.json"
    )
    with pytest.raises(RegistryError, match="does not match its recorded sha256"):
        promote(
            "ranker",
            v,
            decision=None,
            actor="t",
            reason="r",
            forced=True,
            client=store.client,
            settings=store.settings,
        )
    set_alias(store.client, "ranker", "previous", None)
    assert "previous" not in aliases(store.client, "ranker")


def test_promotion_waits_for_the_kinds_lock_then_fails_busy_moving_nothing(
    store: Store, two_versions: tuple[int, int]
) -> None:
    from filelock import FileLock

    from registry.promote import lock_path

    v1, v2 = two_versions
    before = _state(store)
    settings = store.settings.model_copy(update={"gate": store.settings.gate.model_copy(update={"lock_timeout_s": 0.3})})
    held = FileLock(str(lock_path(settings, "ranker")))
    lock_path(settings, "ranker").parent.mkdir(parents=True, exist_ok=True)
    with held:
        champion = before[0]["champion"]
        with pytest.raises(RegistryError) as info:
            promote("ranker", v2, decision=_pass(v2, champion), actor="t", reason="busy", client=store.client,
                    settings=settings)
        assert info.value.reason is Reason.BUSY
        assert str(lock_path(settings, "ranker")) in str(info.value)
        with pytest.raises(RegistryError) as info:
            rollback("ranker", actor="t", reason="busy", client=store.client, settings=settings)
        assert info.value.reason is Reason.BUSY
    assert _state(store) == before
    # Another kind has its own lock: not blocked by the ranker's.
    assert lock_path(settings, "bandit") != lock_path(settings, "ranker")


def test_a_rollback_that_lands_first_makes_the_racing_promotion_refuse(
    store: Store, two_versions: tuple[int, int]
) -> None:
    """The weekly run scored its candidate against the champion; on-call rolls back meanwhile.

    The promotion waits for the rollback's lock, then re-reads the aliases under the lock and
    refuses: its decision is about a champion that no longer holds the alias.
    """
    import threading

    from filelock import FileLock

    from registry.promote import lock_path

    state = aliases(store.client, "ranker")
    if "previous" not in state:
        promote("ranker", two_versions[1], decision=_pass(two_versions[1], state["champion"]), actor="t",
                reason="setup", client=store.client, settings=store.settings)
        state = aliases(store.client, "ranker")
    champion, previous = state["champion"], state["previous"]
    candidate = register_ranker(store, 7)
    decision = _pass(candidate, champion)  # scored against the champion before the rollback
    lock = FileLock(str(lock_path(store.settings, "ranker")))
    outcome: dict[str, BaseException | None] = {}
    with lock:  # hold the lock so the promotion is queued behind the rollback below
        def weekly() -> None:
            try:
                promote("ranker", candidate, decision=decision, actor="weekly-retrain", reason="weekly",
                        client=store.client, settings=store.settings)
                outcome["error"] = None
            except BaseException as e:  # noqa: BLE001 - inspected below
                outcome["error"] = e

        thread = threading.Thread(target=weekly)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the promotion must wait for the lock"
        # the on-call rollback runs while the lock is held by 'someone' -> do the alias moves by hand,
        # as the rollback would have, then release
        set_alias(store.client, "ranker", "champion", previous)
        set_alias(store.client, "ranker", "previous", champion)
    thread.join(30)
    assert not thread.is_alive()
    error = outcome["error"]
    assert isinstance(error, RegistryError) and error.reason is Reason.GATE, error
    assert aliases(store.client, "ranker") == {"champion": previous, "previous": champion}
