"""Offline rollback: stop serving a bad model on this host while the registry store is down.

``rollback_offline(kind)`` pins this host's serving cache to the previous verified cached version:
it writes ``<home>/registry/offline-<kind>.json`` (the pin: what to serve, what the registry said
when this host last reached it, who, why) and points the cache's champion pointer at it. Loaders
on this host serve the pinned version at their next ``refresh()`` and ignore the registry's
champion while the pin exists. The next registry operation that reaches the store, under the
kind's lock, applies the pin as an ordinary rollback (aliases + ledger, the reason noting the
offline move) and removes it: see :func:`reconcile`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.tracking import MlflowClient

from core.atomic import write_text
from core.config.registry import RegistryConfig
from core.errors import Reason, RegistryError, StorageError
from registry import ledger
from registry.cache import ModelCache
from registry.config import config_of
from registry.decision import Decision
from registry.lock import registry_lock
from registry.manifest import check_kind, manifest_digest
from registry.move import move_locked
from registry.owner import hostname
from registry.reach import storage_error
from registry.store import CHAMPION, aliases

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pin:
    """A rollback made on this host while the registry was down, not yet applied to the registry."""

    kind: str
    version: int  # what this host serves now
    manifest_sha256: str
    previous: int  # what it served before the last offline move
    base_champion: int  # the registry's champion when this host last reached it
    base_previous: int | None
    actor: str
    reason: str
    when: str
    host: str
    steps: list[dict[str, Any]] = field(default_factory=list)  # every offline move, oldest first

    def ledger_reason(self) -> str:
        return f"{self.reason} (offline rollback on {self.host} at {self.when[:19]}Z)"


def pin_path(settings: Settings | RegistryConfig, kind: str) -> Path:
    """Where an offline rollback of ``kind`` is recorded until it is applied to the registry."""
    return settings.home_dir / "registry" / f"offline-{kind}.json"


def read_pin(settings: Settings | RegistryConfig, kind: str) -> Pin | None:
    """The pending offline rollback of ``kind`` on this host, if any."""
    path = pin_path(settings, kind)
    if not path.is_file():
        return None
    try:
        return Pin(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise RegistryError(
            f"the offline rollback record {path} is unreadable ({e})",
            reason=Reason.REFUSED,
            details={"path": str(path)},
            hint=f"delete {path} to drop the offline rollback (this host then follows the registry)",
        ) from e


def rollback_offline(kind: str, *, to: int | None = None, actor: str, reason: str,
                     settings: Settings | RegistryConfig | None = None) -> Pin:
    """Pin this host's serving cache to ``to`` (default: the previous version), without the registry.

    The target must be in this host's cache and pass its checksums offline. Like an online
    rollback, the version served until now becomes "previous", so a second offline rollback
    returns to it.

    Raises:
        RegistryError: NOT_FOUND (this host never served the kind, or does not know/cache the
            target), REFUSED (already served), CHECKSUM (the cached copy fails its checksums).
        StorageError: the pin could not be written.
    """
    check_kind(kind)
    if not reason or not reason.strip():
        raise ValueError(f"an offline rollback needs a reason (recorded in the ledger), got {reason!r}")
    settings = config_of(settings)
    cache = ModelCache(settings.cache_dir / "models")
    with registry_lock(settings, kind):
        pin = read_pin(settings, kind)
        current, previous, base = _serving(cache, settings, kind, pin)
        target = to if to is not None else previous
        if target is None:
            raise RegistryError(
                f"this host does not know which {kind} version served before version {current}",
                reason=Reason.NOT_FOUND,
                hint=f"name a cached version with --to (cached here: {cache.cached_versions(kind)})",
            )
        if target == current:
            raise RegistryError(f"this host already serves {kind} version {target}", reason=Reason.REFUSED)
        manifest, _ = cache.verified(kind, target)
        now = datetime.now(UTC).isoformat()
        step = {"from_version": current, "to_version": target, "actor": actor, "reason": reason, "when": now}
        new = Pin(kind, target, manifest_digest(manifest), current, base[0], base[1], actor, reason, now,
                  hostname(), [*(pin.steps if pin else []), step])
        _write(pin_path(settings, kind), new)
        try:
            cache.write_pointer(kind, CHAMPION, target, manifest, previous=current)
        except StorageError as e:  # the pin alone makes the loaders serve the target
            log.warning("offline rollback of %s: could not update the cache pointer: %s", kind, e)
    log.info("offline rollback: %s version %d pinned on this host (was %d), by %s: %s",
                kind, target, current, actor, reason)
    return new


def _serving(cache: ModelCache, settings: Settings | RegistryConfig, kind: str,
             pin: Pin | None) -> tuple[int, int | None, tuple[int, int | None]]:
    """(served now, served before, the registry's (champion, previous) as this host last saw them)."""
    if pin is not None:
        return pin.version, pin.previous, (pin.base_champion, pin.base_previous)
    pointer = cache.read_pointer(kind, CHAMPION)
    if pointer is None:
        raise RegistryError(
            f"this host has never served {kind} (no {cache.pointer_path(kind, CHAMPION)}): nothing to roll back here",
            reason=Reason.NOT_FOUND,
            hint=f"roll back in the registry once it answers: rankloop rollback {kind} --reason ...",
        )
    version, previous = int(pointer["version"]), pointer.get("previous")
    return version, previous, (version, previous)


def _write(path: Path, pin: Pin) -> None:
    try:
        write_text(path, json.dumps(asdict(pin), indent=2, sort_keys=True) + "\n")
    except OSError as e:
        raise storage_error(e, path, f"old runs under {path.parent.parent / 'runs'} can go") from e


def reconcile(client: MlflowClient, settings: Settings | RegistryConfig, kind: str) -> str | None:
    """Apply this host's offline rollback of ``kind`` to the registry; the caller holds the kind's lock.

    Returns:
        None without a pin; ``"applied"`` (aliases moved, ledger entry committed), ``"already"``
        (the registry's champion already is the pinned version) or ``"superseded"`` (the champion
        moved elsewhere meanwhile: the registry wins, the offline move is recorded as aborted).
        The pin is removed in all three cases.

    Raises:
        RegistryError: the rollback could not be applied (e.g. CHECKSUM): the pin stays, so this
            host keeps serving the pinned version.
    """
    pin = read_pin(settings, kind)
    if pin is None:
        return None
    champion = aliases(client, kind).get(CHAMPION)
    if champion == pin.version:
        outcome = "already"
    elif champion != pin.base_champion:
        outcome = "superseded"
        _record_superseded(client, pin, champion)
    else:
        _apply(client, settings, pin)
        outcome = "applied"
    pin_path(settings, kind).unlink(missing_ok=True)
    log.warning("offline rollback of %s to version %d %s in the registry", kind, pin.version,
                {"applied": "applied", "already": "was already", "superseded": "superseded"}[outcome])
    return outcome


def _apply(client: MlflowClient, settings: Settings | RegistryConfig, pin: Pin) -> None:
    try:
        move_locked(pin.kind, pin.version, action="rollback", decision=None, actor=pin.actor,
                    reason=pin.ledger_reason(), forced=True, client=client, settings=settings, faults=())
    except RegistryError as e:
        if e.reason in (Reason.UNREACHABLE, Reason.BUSY):
            raise
        path = pin_path(settings, pin.kind)
        raise RegistryError(
            f"the offline rollback of {pin.kind} to version {pin.version} recorded in {path} cannot be applied "
            f"to the registry: {e}",
            reason=e.reason,
            details={"path": str(path), **e.details},
            hint=f"this host keeps serving version {pin.version}; fix the cause, or delete {path} to drop the "
            "offline rollback (this host then follows the registry)",
        ) from e


def _record_superseded(client: MlflowClient, pin: Pin, champion: int | None) -> None:
    entry = ledger.open_entry(
        client, kind=pin.kind, action="rollback", actor=pin.actor, reason=pin.ledger_reason(), forced=True,
        moves=[ledger.Move(CHAMPION, pin.base_champion, pin.version)],
        decision=Decision.manual(pin.kind, pin.version, pin.base_champion, pin.reason),
    )
    ledger.abort(client, entry, f"superseded: the registry's champion moved to {champion} while this host "
                                f"was offline ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})")
