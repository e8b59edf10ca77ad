"""Clear what a crash or an outage left behind, at the next operation.

* a ``pending`` ledger entry whose process is gone: completed when every move it records had
  happened, else undone (each alias back to its ``from_version``), so a kill between the two alias
  moves never leaves ``previous == champion``;
* an offline rollback recorded on this host (``registry.offline``): applied to the registry;
* a version registered without a manifest whose run is over: tagged ``rankloop.unusable``
  (``promote`` refuses it, ``rankloop models`` hides it);
* an MLflow run left RUNNING by a process that died (tagged with ``registry.owner.owner_tags``):
  marked FAILED.

``promote`` and ``rollback`` heal their kind themselves (:func:`heal_kind`, under the lock);
:func:`recover` does everything and is meant for the start of each run and on-call command.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.config.registry import RegistryConfig
from core.errors import Reason, RegistryError
from registry import ledger, offline
from registry.config import config_of
from registry.lock import registry_lock
from registry.manifest import KINDS, check_kind
from registry.owner import TAG_HOST, OwnerState, describe, hostname, owner_state
from registry.reach import is_not_found, reaches_store
from registry.store import (
    TAG_MANIFEST_SHA,
    TAG_UNUSABLE,
    VersionInfo,
    aliases,
    list_versions,
    make_client,
    mark_unusable,
    set_alias,
)

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

#: A pending entry or a manifest-less version whose owner cannot be checked (another host, no owner
#: tags) is left alone this long: a live move takes seconds, a registration-to-manifest step minutes.
STALE_AFTER_S = 3600.0
TAG_RECOVERED = "rankloop.recovered"


@dataclass
class RecoveryReport:
    """What one recovery did (ledger entry ids, run ids, ``kind:version`` of unusable versions)."""

    committed: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    offline: dict[str, str] = field(default_factory=dict)  # kind -> applied / already / superseded
    unusable: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # kinds skipped: another operation held the lock

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __bool__(self) -> bool:
        return any(v for k, v in asdict(self).items() if k != "busy")


def recover(settings: Settings | RegistryConfig | None = None, *, client: MlflowClient | None = None,
            kinds: tuple[str, ...] | list[str] = KINDS, lock_timeout_s: float | None = None,
            runs: bool = True) -> RecoveryReport:
    """Heal every kind in ``kinds`` (under its lock) and fail the RUNNING runs of dead processes.

    Args:
        settings, client: defaults from the environment.
        kinds: the model kinds to heal.
        lock_timeout_s: how long to wait for each kind's lock (default ``gate.lock_timeout_s``);
            a kind whose lock stays busy is skipped and listed in ``report.busy``.
        runs: also mark RUNNING runs of dead processes on this host FAILED.

    Returns:
        The RecoveryReport (falsy when there was nothing to do).

    Raises:
        RegistryError: UNREACHABLE when the store cannot be asked (nothing is assumed then).
    """
    settings = config_of(settings)
    client = client or make_client(settings)
    report = RecoveryReport()
    if runs:
        report.failed_runs = fail_dead_runs(client)
    for kind in kinds:
        try:
            with registry_lock(settings, check_kind(kind), timeout_s=lock_timeout_s):
                heal_kind(client, settings, kind, report)
        except RegistryError as e:
            if e.reason is not Reason.BUSY:
                raise
            report.busy.append(kind)
    if report:
        log.warning("recovered: %s", {k: v for k, v in report.to_dict().items() if v})
    return report


def heal_kind(client: MlflowClient, settings: Settings | RegistryConfig, kind: str,
              report: RecoveryReport | None = None) -> RecoveryReport:
    """Resolve pending ledger entries, apply an offline rollback, tag manifest-less versions of ``kind``.

    The caller holds ``registry_lock(settings, kind)``.
    """
    report = report if report is not None else RecoveryReport()
    for entry in ledger.pending(client, kind):
        if _may_resolve(entry.tags, entry.ts_ns / 1e9):
            getattr(report, _resolve(client, kind, entry)).append(entry.entry_id)
    outcome = offline.reconcile(client, settings, kind)
    if outcome:
        report.offline[kind] = outcome
    for info in list_versions(client, kind):
        why = None if TAG_MANIFEST_SHA in info.tags or TAG_UNUSABLE in info.tags else _abandoned(client, info)
        if why:
            mark_unusable(client, kind, info.version, why)
            report.unusable.append(f"{kind}:{info.version}")
            log.warning("%s version %d marked unusable: %s", kind, info.version, why)
    return report


def _may_resolve(tags: dict[str, str], started_s: float) -> bool:
    state = owner_state(tags)
    return state is OwnerState.DEAD or time.time() - started_s > STALE_AFTER_S


def _resolve(client: MlflowClient, kind: str, entry: ledger.PendingEntry) -> str:
    """Complete or undo one pending entry by comparing its moves with the aliases; the outcome's field name."""
    who = describe(entry.tags)
    if not entry.moves:
        ledger.abort(client, entry.entry_id, f"recovery: its process ({who}) died before it moved anything")
        return "undone"
    state = aliases(client, kind)
    if all(state.get(m.alias) == m.to_version for m in entry.moves):
        ledger.commit(client, entry.entry_id, note=f"recovery: every move had happened when {who} died")
        return "committed"
    if all(state.get(m.alias) in (m.from_version, m.to_version) for m in entry.moves):
        for move in reversed(entry.moves):  # champion first: 'previous' is never left naming it
            if state.get(move.alias) != move.from_version:
                set_alias(client, kind, move.alias, move.from_version)
        ledger.abort(client, entry.entry_id, f"recovery: its process ({who}) died between the alias moves; undone")
        return "undone"
    ledger.abort(client, entry.entry_id,
                 f"recovery: its process ({who}) died mid-move and the aliases moved since ({state}); left as they are")
    return "superseded"


def _abandoned(client: MlflowClient, info: VersionInfo) -> str | None:
    """Why a manifest-less version will never get its manifest, or None while its run may still publish one."""
    age_s = time.time() - info.created_ms / 1000
    run = _run(client, info.run_id) if info.run_id else None
    if info.run_id and run is None:
        return f"no manifest, and its run {info.run_id} no longer exists"
    if run is not None and run.info.status != "RUNNING":
        return f"no manifest: its run {info.run_id} ended ({run.info.status}) without publishing one"
    if run is not None and owner_state(run.data.tags) is OwnerState.DEAD:
        return f"no manifest: its run's process ({describe(run.data.tags)}) died before publishing one"
    if age_s > STALE_AFTER_S:
        return f"no manifest {age_s / 3600:.1f} h after it was registered"
    return None


@reaches_store
def _run(client: MlflowClient, run_id: str) -> Any:
    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if is_not_found(e):
            return None
        raise


@reaches_store
def fail_dead_runs(client: MlflowClient) -> list[str]:
    """Mark FAILED every RUNNING run whose owner tags name a dead process on this host; their ids.

    Ledger entries are left to :func:`heal_kind` (their status is the ledger's, not the run's).
    """
    ids = [e.experiment_id for e in client.search_experiments() if e.name != ledger.EXPERIMENT]
    if not ids:
        return []
    query = f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{hostname()}'"
    failed = []
    for run in ledger.all_runs(client, ids, query):
        if owner_state(run.data.tags) is OwnerState.DEAD:
            client.set_tag(run.info.run_id, TAG_RECOVERED, f"marked FAILED: its process ({describe(run.data.tags)}) died")
            ledger.terminate(client, run.info.run_id, "FAILED")
            failed.append(run.info.run_id)
    return failed
