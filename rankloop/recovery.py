"""What a killed or failed run left behind, cleared at the start of the next one.

* the registry: pending ledger entries, MLflow runs of dead processes, versions without a
  manifest, an offline rollback to reconcile (``registry.recover``);
* Prefect flow runs whose process died while they were RUNNING: marked Crashed (a run started by
  ``rankloop train`` runs in the CLI's own process, which no worker heartbeat watches);
* the intermediate data of failed runs (``<home>/runs/<end>/<stamp>/data``): kept for the newest
  ``ops.keep_failed_runs`` failed runs, for inspection, and removed for the older ones;
* in the failed runs' folders that are kept, what a killed writer left half-written: the temporary
  files and folders that atomic writes and the contract's key buckets make (``.<name>.*.tmp``), which
  no reader opens and which are worth nothing for inspection.

Each run folder holds ``owner.json`` (host, pid, start time, Prefect flow run id) while its process
works on it; a folder whose owner is alive is never touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.settings import Settings

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"


@dataclass
class Healed:
    """What :func:`heal` did."""

    registry: dict[str, Any] = field(default_factory=dict)
    crashed_flow_runs: list[str] = field(default_factory=list)
    removed_intermediates: list[str] = field(default_factory=list)
    removed_temporaries: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.registry or self.crashed_flow_runs or self.removed_intermediates or self.removed_temporaries)


def claim(workdir: Path, flow_run_id: str | None) -> None:
    """Mark ``workdir`` as owned by this process (and the Prefect flow run it serves)."""
    from core.atomic import write_bytes
    from registry.owner import owner_tags

    write_bytes(workdir / OWNER_FILE, json.dumps(owner_tags() | {"flow_run_id": flow_run_id}).encode())


def release(workdir: Path) -> None:
    """The run is over (completed or failed in this process): its folder has no live owner."""
    (workdir / OWNER_FILE).unlink(missing_ok=True)


def heal(settings: Settings, *, keep_failed: int | None = None) -> Healed:
    """Clear what earlier runs on this home left behind; see the module docstring.

    Raises:
        RegistryError: UNREACHABLE when the registry cannot be asked (retried as transient).
    """
    from registry.recover import recover

    healed = Healed()
    report = recover(settings, lock_timeout_s=5)
    if report:
        healed.registry = {k: v for k, v in report.__dict__.items() if v}
    orphans = _orphaned_folders(settings.home_dir / "runs")
    healed.crashed_flow_runs = _crash_flow_runs([o for o in orphans if o[1]])
    for folder, _ in orphans:
        release(folder)
    keep = settings.ops.keep_failed_runs if keep_failed is None else keep_failed
    healed.removed_intermediates = _prune_failed(settings.home_dir / "runs", keep)
    healed.removed_temporaries = _sweep_temporaries(settings.home_dir / "runs")
    if healed:
        log.warning("recovered what earlier runs left behind: %s", healed)
    return healed


def _orphaned_folders(runs: Path) -> list[tuple[Path, str | None]]:
    """Run folders whose owning process is gone, with their Prefect flow run id."""
    from registry.owner import OwnerState, owner_state

    out = []
    for owner in runs.glob(f"*/*/{OWNER_FILE}"):
        try:
            tags = json.loads(owner.read_text())
        except (OSError, ValueError):
            tags = {}
        if owner_state(tags) is OwnerState.DEAD or not tags:
            out.append((owner.parent, tags.get("flow_run_id")))
    return out


def _crash_flow_runs(orphans: list[tuple[Path, str | None]]) -> list[str]:
    """Mark the still-RUNNING flow runs of dead processes Crashed (Prefect's own state for it)."""
    if not orphans:
        return []
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    crashed = []
    with get_client(sync_client=True) as client:
        for folder, run_id in orphans:
            try:
                run = client.read_flow_run(run_id)
            except Exception as e:  # noqa: BLE001 - another Prefect API (or a deleted run): nothing to mark
                log.info("flow run %s of %s not found on this Prefect API (%s)", run_id, folder, type(e).__name__)
                continue
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(run_id, Crashed(message=f"its process died; found by the next run ({folder})"),
                                          force=True)
                crashed.append(str(run_id))
    return crashed


def _prune_failed(runs: Path, keep: int) -> list[str]:
    """Remove ``data/`` of failed run folders (no live owner) but the ``keep`` newest."""
    failed = [d.parent for d in runs.glob("*/*/data") if d.is_dir() and not (d.parent / OWNER_FILE).exists()]
    failed.sort(key=lambda p: p.name, reverse=True)  # the folder name is the run's start stamp
    removed = []
    for folder in failed[max(keep, 0):]:
        shutil.rmtree(folder / "data", ignore_errors=True)
        removed.append(os.fspath(folder))
    return removed


def _sweep_temporaries(runs: Path) -> list[str]:
    """Remove the half-written temporaries (``.*.tmp``, files or folders) of run folders without a live owner."""
    removed = []
    for folder in runs.glob("*/*"):
        if not folder.is_dir() or (folder / OWNER_FILE).exists():
            continue
        for tmp in sorted(folder.rglob(".*.tmp")):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists() or tmp.is_symlink():
                tmp.unlink(missing_ok=True)
            else:
                continue  # inside a folder removed just before
            removed.append(os.fspath(tmp))
    return sorted(removed)
