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
from collections.abc import Collection
from typing import TYPE_CHECKING

from mlflow.tracking import MlflowClient

from core.config.registry import RegistryConfig
from core.errors import Reason, RegistryError
from registry import ledger
from registry.config import config_of
from registry.decision import Decision
from registry.lock import lock_path, registry_lock
from registry.manifest import check_kind
from registry.move import STEPS, InjectedFault, MoveResult, move_locked
from registry.recover import heal_kind
from registry.store import (
    CHAMPION,
    PREVIOUS,
    aliases,
    make_client,
)

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["STEPS", "InjectedFault", "MoveResult", "lock_path", "move_locked", "promote", "registry_lock", "rollback"]

log = logging.getLogger(__name__)

def promote(
    kind: str,
    version: int,
    *,
    decision: Decision | None,
    actor: str,
    reason: str,
    forced: bool = False,
    client: MlflowClient | None = None,
    settings: Settings | RegistryConfig | None = None,
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
    settings = config_of(settings)
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
    settings: Settings | RegistryConfig | None = None,
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
    settings = config_of(settings)
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
