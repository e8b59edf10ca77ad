"""The append-only ledger of alias moves, kept in the registry's own store.

Each promotion or rollback is one run of the MLflow experiment ``rankloop-ledger``: its immutable
facts are params (kind, action, actor, reason, forced, the alias moves, the decision record), and a
tag ``ledger.status`` goes ``pending`` (written before any alias moves) -> ``committed`` (after) or
``aborted`` (the move was undone). Written ahead like this, a crash between moving the aliases and
committing leaves a visible ``pending`` entry instead of an unrecorded move; the entry carries its
owner process (``registry.owner``) so that recovery (``registry.recover``) can resolve it once that
process is gone.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.config.registry import RegistryConfig
from registry.decision import Decision
from registry.manifest import check_kind
from registry.owner import owner_tags
from registry.reach import reaches_store
from registry.store import make_client

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

EXPERIMENT = "rankloop-ledger"
PENDING, COMMITTED, ABORTED = "pending", "committed", "aborted"


def default_actor() -> str:
    """Who is acting: ``RANKLOOP_ACTOR`` when set, else the login name."""
    return os.environ.get("RANKLOOP_ACTOR") or getpass.getuser()


@dataclass(frozen=True)
class Move:
    """One alias moving from one version (None: unset) to another (None: removed)."""

    alias: str
    from_version: int | None
    to_version: int | None


@dataclass(frozen=True)
class LedgerEntry:
    """One alias move as the ledger recorded it."""

    when: str
    actor: str
    kind: str
    action: str
    alias: str
    from_version: int | None
    to_version: int | None
    reason: str
    forced: bool
    status: str
    operation_id: str
    decision: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _artifact_location(client: MlflowClient) -> str | None:
    """Beside an embedded SQLite store (``<home>/mlartifacts``), never in the caller's working directory."""
    uri = str(client.tracking_uri)
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / EXPERIMENT).as_uri()
    return None  # a tracking server decides where artifacts go


@reaches_store
def _experiment_id(client: MlflowClient) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=_artifact_location(client))
    except MlflowException:  # created concurrently by another process
        return client.get_experiment_by_name(EXPERIMENT).experiment_id


@reaches_store
def open_entry(
    client: MlflowClient,
    *,
    kind: str,
    action: str,
    actor: str,
    reason: str,
    forced: bool,
    moves: list[Move],
    decision: Decision,
) -> str:
    """Write a ``pending`` ledger entry for an operation; returns its id (the run id)."""
    now_ns = time.time_ns()
    params = {
        "kind": kind,
        "action": action,
        "actor": actor,
        "reason": reason[:5000],
        "forced": str(forced).lower(),
        "when": datetime.fromtimestamp(now_ns / 1e9, UTC).isoformat(),
        "ts_ns": str(now_ns),
        "moves": json.dumps([m.__dict__ for m in moves]),
    }
    tags = {
        "ledger.kind": kind,
        "ledger.status": PENDING,
        "ledger.ts_ns": str(now_ns),
        "mlflow.runName": f"{action} {kind} -> {moves[-1].to_version}",
        "ledger.decision": decision.to_json()[:7900],
        **owner_tags(),
    }
    run = client.create_run(_experiment_id(client), tags=tags)
    run_id = run.info.run_id
    try:
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        client.log_dict(run_id, decision.to_dict(), "decision.json")
    except BaseException as e:
        abort(client, run_id, e)
        raise
    return run_id


def terminate(client: MlflowClient, run_id: str, status: str) -> None:
    """End a run without MLflow's "View run ... at <tracking URI>" line on stdout.

    Library code never prints: the line would break ``--json`` output and echo the tracking URI
    (credentials included) on every ledger operation.
    """
    saved = os.environ.get(_NO_LINKS)
    os.environ[_NO_LINKS] = "true"
    try:
        client.set_terminated(run_id, status)
    finally:
        if saved is None:
            os.environ.pop(_NO_LINKS, None)
        else:
            os.environ[_NO_LINKS] = saved


_NO_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@reaches_store
def commit(client: MlflowClient, entry_id: str, note: str | None = None) -> None:
    """Mark an entry committed: the moves it records happened (``note``: how that was established)."""
    if note:
        client.set_tag(entry_id, "ledger.recovered", note[:4000])
    client.set_tag(entry_id, "ledger.status", COMMITTED)
    terminate(client, entry_id, "FINISHED")


def abort(client: MlflowClient, entry_id: str, error: BaseException | str) -> None:
    """Mark an entry aborted (the moves were undone, or never happened); never raises, logs instead."""
    why = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    try:
        client.set_tag(entry_id, "ledger.status", ABORTED)
        client.set_tag(entry_id, "ledger.error", why[:4000])
        terminate(client, entry_id, "FAILED")
    except Exception as e:  # the store may be what failed; the entry then stays 'pending' for recovery
        log.error("could not mark ledger entry %s aborted: %s", entry_id, e)


@dataclass(frozen=True)
class PendingEntry:
    """A ledger entry still ``pending``: its moves, when it was opened, and the tags naming its owner."""

    entry_id: str
    kind: str
    moves: tuple[Move, ...]
    ts_ns: int
    tags: dict[str, str]


@reaches_store
def pending(client: MlflowClient, kind: str) -> list[PendingEntry]:
    """The ``pending`` entries of a kind, oldest first (empty when the ledger does not exist yet)."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    query = f"tags.`ledger.kind` = '{check_kind(kind)}' and tags.`ledger.status` = '{PENDING}'"
    runs = all_runs(client, [experiment.experiment_id], query)
    entries = [
        PendingEntry(
            run.info.run_id,
            kind,
            tuple(Move(**m) for m in json.loads(run.data.params.get("moves", "[]"))),
            int(run.data.tags.get("ledger.ts_ns", 0)),
            dict(run.data.tags),
        )
        for run in runs
    ]
    return sorted(entries, key=lambda e: e.ts_ns)


def all_runs(client: MlflowClient, experiment_ids: list[str], query: str) -> list[Any]:
    """Every run of the experiments matching ``query`` (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, query, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def history(
    kind: str,
    *,
    client: MlflowClient | None = None,
    settings: Settings | RegistryConfig | None = None,
    include_aborted: bool = False,
) -> list[LedgerEntry]:
    """Every alias move of a kind, oldest first (aborted operations only when asked).

    Args:
        kind: the model kind.
        client, settings: MLflow client and settings (defaults from the environment).
        include_aborted: also list the moves of operations that were undone.

    Returns:
        One entry per alias move; the moves of one operation share ``operation_id``.
    """
    check_kind(kind)
    runs = _runs_of(client or make_client(settings), kind)
    runs.sort(key=lambda r: int(r.data.tags.get("ledger.ts_ns", 0)))
    entries = [e for run in runs for e in _entries(run)]
    return [e for e in entries if include_aborted or e.status != ABORTED]


@reaches_store
def _runs_of(client: MlflowClient, kind: str) -> list[Any]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return all_runs(client, [experiment.experiment_id], f"tags.`ledger.kind` = '{kind}'")


def _entries(run: Any) -> list[LedgerEntry]:
    p, tags = run.data.params, run.data.tags
    decision = json.loads(tags["ledger.decision"]) if _is_json(tags.get("ledger.decision")) else None
    return [
        LedgerEntry(
            when=p.get("when", ""),
            actor=p.get("actor", ""),
            kind=p.get("kind", ""),
            action=p.get("action", ""),
            alias=m["alias"],
            from_version=m["from_version"],
            to_version=m["to_version"],
            reason=p.get("reason", ""),
            forced=p.get("forced") == "true",
            status=tags.get("ledger.status", PENDING),
            operation_id=run.info.run_id,
            decision=decision,
        )
        for m in json.loads(p.get("moves", "[]"))
    ]


def _is_json(text: str | None) -> bool:
    if not text:
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
