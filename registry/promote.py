"""Atomic promotion and rollback: verify, write the ledger ahead, move the aliases, commit.

Order of one operation (each name is a failure-injection point, see ``faults``)::

    manifest      read the version's manifest and check it against its recorded digest
    verify        download the version, compare every sha256, install it in the local cache
    gate          the decision must PASS, be about this version and the current champion (unless forced)
    ledger_write  write the ledger entry as 'pending'
    move_previous alias 'previous' -> the old champion (skipped without a champion)
    move_champion alias 'champion' -> the new version
    ledger_commit mark the ledger entry 'committed'

Nothing moves before ``ledger_write``. A failure at or after ``move_previous`` restores both
aliases to the snapshot taken at the start and marks the ledger entry 'aborted'. A process killed
in between leaves the entry 'pending': the next operation of the kind resolves it under the lock
before it moves anything (``registry.recover.heal_kind``), as it applies an offline rollback
recorded on this host and marks manifest-less versions unusable.

Promotions and rollbacks of one model kind are serialised by a lock file,
``<home>/locks/registry-<kind>.lock``: the aliases are read, the gate is checked against the
champion read *under the lock* and the aliases are moved without another operation in between, so
a scheduled promotion racing a 3 a.m. rollback cannot promote against a champion that was just
replaced (its decision names the old champion and is refused). The lock protects processes that
share the data home (one host or a shared file system); it waits ``gate.lock_timeout_s`` and then
fails with ``Reason.BUSY`` naming the lock file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from rankloop.errors import Reason, RegistryError
from rankloop.settings import Settings
from registry import ledger
from registry.cache import ModelCache
from registry.decision import Decision
from registry.lock import lock_path, registry_lock
from registry.manifest import check_kind
from registry.recover import heal_kind
from registry.store import (
    CHAMPION,
    PREVIOUS,
    TAG_UNUSABLE,
    aliases,
    get_version,
    make_client,
    read_manifest,
    set_alias,
)

__all__ = ["STEPS", "InjectedFault", "MoveResult", "lock_path", "move_locked", "promote", "registry_lock", "rollback"]

log = logging.getLogger(__name__)

STEPS: tuple[str, ...] = (
    "manifest",
    "verify",
    "gate",
    "ledger_write",
    "move_previous",
    "move_champion",
    "ledger_commit",
)


class InjectedFault(RuntimeError):
    """Raised at a step named in ``faults`` (tests prove that nothing moves)."""


@dataclass(frozen=True)
class MoveResult:
    """What an operation did."""

    kind: str
    version: int
    previous_champion: int | None
    entry_id: str
    action: str


def _fault_hook(faults: Collection[str]) -> Callable[[str], None]:
    unknown = sorted({f.split(":")[0] for f in faults} - set(STEPS))
    if unknown:
        raise ValueError(
            f"unknown fault step(s) {unknown}; expected names from {list(STEPS)} (optionally ':after')"
        )

    def hit(point: str) -> None:
        if point in faults:
            raise InjectedFault(f"injected failure at {point}")

    return hit


def promote(
    kind: str,
    version: int,
    *,
    decision: Decision | None,
    actor: str,
    reason: str,
    forced: bool = False,
    client: MlflowClient | None = None,
    settings: Settings | None = None,
    faults: Collection[str] = (),
) -> MoveResult:
    """Make ``version`` the champion of ``kind``; the old champion becomes ``previous``.

    Args:
        kind, version: what to promote.
        decision: the gate's decision for this version against the current champion (may be None when forced).
        actor: who promotes (recorded in the ledger); reason: why (required).
        forced: skip the gate (a manual promotion); checksums are still verified.
        client, settings: MLflow client and settings (defaults from the environment).
        faults: step names (``"verify"``) or ``"<step>:after"`` at which to raise InjectedFault.

    Returns:
        The MoveResult.

    Raises:
        RegistryError: refused (no alias moved): NOT_FOUND, CHECKSUM, GATE, REFUSED.
    """
    check_kind(kind)
    settings = settings or Settings()
    client = client or make_client(settings)
    with registry_lock(settings, kind):
        heal_kind(client, settings, kind)
        return move_locked(
            kind,
            int(version),
            action="promote",
            decision=decision,
            actor=actor,
            reason=reason,
            forced=forced,
            client=client,
            settings=settings,
            faults=faults,
        )


def rollback(
    kind: str,
    *,
    to: int | None = None,
    actor: str,
    reason: str,
    client: MlflowClient | None = None,
    settings: Settings | None = None,
    faults: Collection[str] = (),
) -> MoveResult:
    """Make ``to`` (default: the version holding ``previous``) the champion; the champion becomes ``previous``.

    The gate is skipped (recorded as forced); checksums are verified. Without ``to``, a ``previous``
    that the guardrail reverted away from (worse on live traffic) is refused: rolling back would
    bring the bad release back; naming it with ``to`` does it anyway.

    Raises:
        RegistryError: NOT_FOUND (no previous, unknown version), REFUSED (already champion, or
        ``previous`` is the release the guardrail reverted), CHECKSUM.
    """
    check_kind(kind)
    settings = settings or Settings()
    client = client or make_client(settings)
    with registry_lock(settings, kind):
        heal_kind(client, settings, kind)
        state = aliases(client, kind)
        target = to if to is not None else state.get(PREVIOUS)
        if target is None:
            raise RegistryError(
                f"{kind} has no 'previous' version to roll back to",
                reason=Reason.NOT_FOUND,
                details={"aliases": state},
                hint=f"name one with --to (`rankloop models {kind}` lists them)",
            )
        if to is None:
            _refuse_a_reverted_release(client, kind, int(target))
        return move_locked(
            kind,
            int(target),
            action="rollback",
            decision=None,
            actor=actor,
            reason=reason,
            forced=True,
            client=client,
            settings=settings,
            faults=faults,
        )


GUARDRAIL_ACTOR = "guardrail"  # rankloop.guard's actor (registry imports nothing above it)


def _refuse_a_reverted_release(client: MlflowClient, kind: str, previous: int) -> None:
    """Refuse a plain rollback to ``previous`` when the last move of the kind was the guardrail
    reverting it (a 3 a.m. rollback would bring the release that failed on live traffic back)."""
    moves = [e for e in ledger.history(kind, client=client) if e.alias == CHAMPION]
    if not moves:
        return
    last = moves[-1]
    if last.actor != GUARDRAIL_ACTOR or last.from_version != previous:
        return
    raise RegistryError(
        f"{kind} previous v{previous} is the release the guardrail reverted at {last.when[:16].replace('T', ' ')} "
        "UTC (worse on live traffic)",
        reason=Reason.REFUSED,
        details={"previous": previous, "reverted_at": last.when, "reason": last.reason},
        hint=f"`rankloop history {kind}` shows why; to bring it back anyway name it: "
        f"`rankloop rollback {kind} --to {previous} --reason TEXT`",
    )


def move_locked(
    kind: str,
    version: int,
    *,
    action: str,
    decision: Decision | None,
    actor: str,
    reason: str,
    forced: bool,
    client: MlflowClient | None,
    settings: Settings,
    faults: Collection[str],
) -> MoveResult:
    """Move the aliases; the caller holds ``registry_lock(settings, kind)``."""
    if not reason or not reason.strip():
        raise ValueError(f"a {action} needs a reason (recorded in the ledger), got {reason!r}")
    hit = _fault_hook(faults)
    client = client or make_client(settings)
    state = aliases(client, kind)
    champion = state.get(CHAMPION)
    info = get_version(client, kind, version)
    if champion == version:
        raise RegistryError(f"{kind} version {version} already is the champion", reason=Reason.REFUSED)
    if TAG_UNUSABLE in info.tags:
        raise RegistryError(
            f"{kind} version {version} is unusable: {info.tags[TAG_UNUSABLE]}",
            reason=Reason.REFUSED,
            details={"kind": kind, "version": version},
            hint=f"choose another version (`rankloop models {kind}` lists the usable ones)",
        )
    manifest = _step(hit, "manifest", lambda: read_manifest(client, kind, version))
    _step(hit, "verify", lambda: _verify(client, settings, kind, version, manifest))
    decision = decision if not forced else (decision or Decision.manual(kind, version, champion, reason))
    _step(hit, "gate", lambda: _check_gate(kind, version, champion, decision, forced))
    moves = _planned_moves(state, version)
    hit("ledger_write")
    entry = ledger.open_entry(
        client,
        kind=kind,
        action=action,
        actor=actor,
        reason=reason,
        forced=forced,
        moves=moves,
        decision=decision,
    )
    try:
        hit("ledger_write:after")
        for move in moves:
            _step(hit, f"move_{move.alias}", lambda m=move: set_alias(client, kind, m.alias, m.to_version))
        _step(hit, "ledger_commit", lambda: ledger.commit(client, entry))
    except BaseException as e:
        _restore(client, kind, state, entry, e)
        raise RegistryError(
            f"{action} of {kind} version {version} failed and was undone: {e}",
            reason=Reason.REFUSED,
            details={"aliases": state},
        ) from e
    log.info(
        "%s: %s version %d is champion (was %s), by %s: %s", action, kind, version, champion, actor, reason
    )
    return MoveResult(kind, version, champion, entry, action)


def _step(hit: Callable[[str], None], name: str, action: Callable[[], object]) -> object:
    hit(name)
    result = action()
    hit(f"{name}:after")
    return result


def _verify(client: MlflowClient, settings: Settings, kind: str, version: int, manifest: dict) -> None:
    cache = ModelCache(settings.cache_dir / "models")
    tampered = cache.problems(kind, version, manifest)
    if tampered:
        path = cache.version_dir(kind, version)
        raise RegistryError(
            f"the cached copy of {kind} version {version} at {path} fails its checksums: {tampered}; "
            f"investigate, then delete {path} to download it again",
            reason=Reason.CHECKSUM,
            details={"kind": kind, "version": version, "problems": tampered},
        )
    cache.install(client, kind, version, manifest)


def _check_gate(
    kind: str, version: int, champion: int | None, decision: Decision | None, forced: bool
) -> None:
    if forced:
        return
    problems = _gate_problems(kind, version, champion, decision)
    if problems:
        raise RegistryError(
            f"the gate does not allow {kind} version {version}: {'; '.join(problems)}",
            reason=Reason.GATE,
            details={"problems": problems},
        )


def _gate_problems(kind: str, version: int, champion: int | None, decision: Decision | None) -> list[str]:
    if decision is None:
        return ["no gate decision given"]
    problems = []
    if (decision.kind, decision.challenger_version) != (kind, version):
        problems.append(f"the decision is about {decision.kind} version {decision.challenger_version}")
    if decision.champion_version != champion:
        problems.append(
            f"the decision compared with champion {decision.champion_version}, "
            f"but the champion is now {champion}"
        )
    if not decision.passed:
        problems.append(f"verdict {decision.verdict.value}: {'; '.join(decision.reasons)}")
    return problems


def _planned_moves(state: dict[str, int], version: int) -> list[ledger.Move]:
    champion = state.get(CHAMPION)
    moves = [] if champion is None else [ledger.Move(PREVIOUS, state.get(PREVIOUS), champion)]
    return [*moves, ledger.Move(CHAMPION, champion, version)]


def _restore(
    client: MlflowClient, kind: str, state: dict[str, int], entry: str, error: BaseException
) -> None:
    failed = []
    for alias in (CHAMPION, PREVIOUS):
        try:
            set_alias(client, kind, alias, state.get(alias))
        except Exception as e:
            failed.append(f"{alias}: {e}")
    ledger.abort(client, entry, error)
    if failed:
        log.critical("could not restore %s aliases to %s after a failed move: %s", kind, state, failed)
        raise RegistryError(
            f"aliases of {kind} could not be restored to {state}: {failed}",
            reason=Reason.REFUSED,
            details={"aliases": state, "failed": failed},
        ) from error
