"""The demo source: simulated interactions in ``<home>/interactions.db`` (SQLite, native layout)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rankloop.settings import Settings, last_monday
from rankloop.simulator import SimulationConfig, items_table, make_world, period, simulate, users_table

log = logging.getLogger(__name__)


def demo_meta_path(settings: Settings) -> Path:
    return settings.home_dir / "demo.json"


def ensure_demo_source(settings: Settings, config: SimulationConfig | None = None) -> dict:
    """Simulate into ``<home>/interactions.db`` unless it exists; return the demo's metadata.

    The database is built under a temporary name and renamed into place, so a killed run never
    leaves a half-written source behind.
    """
    from sources import write_table

    meta_path = demo_meta_path(settings)
    if settings.demo_db.exists() and meta_path.exists():
        return json.loads(meta_path.read_text())
    config = config or SimulationConfig(end=last_monday(datetime.now(UTC)))
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.demo_db.with_name(f".{settings.demo_db.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    uri = f"sqlite:///{tmp}"
    world = make_world(config)
    rows = 0
    for i, chunk in enumerate(simulate(config)):
        first = i == 0
        rows += write_table(uri, "interactions", chunk, mode="replace" if first else "append",
                            indexes=[("ts",)] if first else ())
    write_table(uri, "items", items_table(world))
    write_table(uri, "users", users_table(world))
    start, end = period(config)
    meta = {"rows": rows, "start": start.isoformat(), "end": end.isoformat(),
            "config": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(config).items()}}
    tmp.replace(settings.demo_db)
    tmp_meta = meta_path.with_suffix(".json.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2))
    tmp_meta.replace(meta_path)
    log.info("simulated %d interactions into %s", rows, settings.demo_db)
    return meta

