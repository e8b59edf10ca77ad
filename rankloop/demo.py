"""The demo source: simulated interactions in ``<home>/interactions.db`` (SQLite, native layout)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import Settings, last_monday
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



# --- releases for drills and benchmarks -------------------------------------------------------------
DRILL_ACTOR = "drill"


def train_shuffled_ranker(settings: Settings, *, seed: int = 0, max_queries: int = 3000) -> tuple[Any, dict]:
    """A deliberately worse ranker: the champion's feature set, trained on the source's last week with
    its labels shuffled across rows (its scores carry no relevance). Returns (ranker, feature_set)."""
    import numpy as np

    from models.ranker import Ranker
    from models.training import group_sizes

    events, items, users, champion = _recent_events(settings)
    import features

    rows = features.impressions(events, settings.labels)
    queries = rows["query_id"].unique()[-max_queries:]
    rows = rows[rows["query_id"].isin(queries)].reset_index(drop=True)
    fset = champion.manifest["feature_set"]
    X = features.build_features(rows, events, items=items, users=users, settings=settings.features,
                                feature_set=fset["name"])[list(fset["features"])]
    labels = np.random.default_rng(seed).permutation(rows["label"].to_numpy())
    params = settings.ranker.ranker_params() | {"n_estimators": 60, "early_stopping_rounds": None, "seed": seed}
    ranker = Ranker(**params).fit(X, labels, group=group_sizes(rows))
    return ranker, dict(fset)


def _recent_events(settings: Settings) -> tuple[Any, Any, Any, Any]:
    """The demo source's last 14 days of events (before its served end), its catalogue, and the champion ranker."""
    from datetime import timedelta

    import pyarrow.parquet as pq

    import sources
    from registry import load

    meta = json.loads(demo_meta_path(settings).read_text())
    end = datetime.fromisoformat(meta.get("served_until") or meta["end"])
    uri = f"sqlite:///{settings.demo_db}"
    snap = sources.extract_snapshot(uri, "rankloop", end - timedelta(days=14), end, settings.snapshot_dir)
    items, users = sources.read_catalog(uri, "rankloop")
    events = pq.read_table(snap.path).drop(["source_errors"]).to_pandas()
    return (events, items.to_pandas() if items is not None else None,
            users.to_pandas() if users is not None else None, load("ranker", settings=settings))


def register_ranker(settings: Settings, ranker: Any, feature_set: dict, *, note: str) -> int:
    """Log and register ``ranker`` as a new version with its manifest (outside a weekly run); returns the version."""
    import mlflow

    from core.runtime import ensure_experiment
    from core.version import code_version
    from models.tracking import log_ranker_run
    from registry import owner_tags
    from registry.publish import publish

    now = datetime.now(UTC)
    mlflow.set_experiment(experiment_id=ensure_experiment(settings))
    with mlflow.start_run(run_name=f"ranker {note}", tags={"rankloop.release": note, **owner_tags()}):
        if not getattr(ranker, "evals_result_", None):
            ranker.evals_result_, ranker.best_iteration_ = {}, ranker.booster_.current_iteration()
        info = log_ranker_run(ranker, test_report={}, baselines={}, feature_set_name=feature_set["name"],
                              feature_set_hash=feature_set["hash"], params={"release": note}, window=(now, now),
                              snapshot_digest="-", code_version=code_version())
        version = int(info.registered_model_version)
        publish("ranker", version, settings=settings, feature_set=feature_set,
                window={"start": now.isoformat(), "end": now.isoformat()}, snapshot_digest="-",
                contract_suite_version="-", code_version=code_version(), params={"release": note}, metrics={})
    return version


def copy_of_champion(settings: Settings) -> tuple[Any, dict]:
    """The champion ranker's own model (an equal-quality release, for A/A checks of the guardrail)."""
    from models.ranker import Ranker
    from registry import load

    champion = load("ranker", settings=settings)
    return Ranker.load(champion.path / "model.txt"), dict(champion.manifest["feature_set"])


def force_release(settings: Settings, version: int, *, reason: str, actor: str = DRILL_ACTOR) -> Any:
    """Promote ``version`` of the ranker by hand (forced, no gate), recorded in the ledger with ``actor``."""
    from registry.promote import promote

    return promote("ranker", version, decision=None, actor=actor, reason=reason, forced=True, settings=settings)


def bad_release(settings: Settings, *, seed: int = 0) -> int:
    """Register and force-promote a ranker trained on shuffled labels, recorded as a drill; returns its version."""
    ranker, feature_set = train_shuffled_ranker(settings, seed=seed)
    version = register_ranker(settings, ranker, feature_set, note="drill: trained on shuffled labels")
    force_release(settings, version, reason=f"drill: deliberately worse ranker v{version} (trained on shuffled "
                                            "labels) to exercise the guardrail")
    log.warning("drill: ranker v%d (trained on shuffled labels) is the champion now", version)
    return version
