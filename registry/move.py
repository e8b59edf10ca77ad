"""Moving a kind's aliases under its lock: the steps of one promotion or rollback, each a failure-injection
point (``registry.promote`` for the order and guarantees). Used by ``registry.promote`` and by
``registry.offline`` when it applies a rollback recorded offline; imports neither, so the three
modules form no import cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlflow.tracking import MlflowClient

from core.config.registry import RegistryConfig
from core.errors import Reason, RegistryError
from registry import ledger
from registry.cache import ModelCache
from registry.decision import Decision
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

if TYPE_CHECKING:
    from core.settings import Settings

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
    settings: Settings | RegistryConfig,
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


def _verify(client: MlflowClient, settings: Settings | RegistryConfig, kind: str, version: int, manifest: dict) -> None:
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
