"""The weekly retrain's stages as plain functions.

``flows/weekly.py`` wraps each one in a Prefect task and wires them; benchmarks call them
directly to measure orchestration overhead. Each stage takes the settings and what earlier
stages returned, and returns a small typed result (large data travels as Parquet paths or
DataFrames, never pickled).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rankloop.settings import Settings
from rankloop.version import code_version

log = logging.getLogger(__name__)

RANKER_MODEL = "rankloop.ranker"


@dataclass(frozen=True)
class Extracted:
    snapshot_path: Path
    digest: str
    rows: int
    reused: bool
    source: str
    items: pa.Table | None = None
    users: pa.Table | None = None
    changed: dict[str, Any] | None = None


@dataclass(frozen=True)
class Validated:
    events: pd.DataFrame
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    quarantine_path: Path | None
    suite_name: str
    suite_version: str
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """Impressions with labels and features, split by time."""

    split: Any  # models.training.Split
    feature_set: str
    feature_set_hash: str
    features: tuple[str, ...]
    impressions: int


@dataclass(frozen=True)
class TrainedRanker:
    model_path: Path
    report: dict[str, float]
    baselines: dict[str, dict[str, float]]
    per_query_ndcg: np.ndarray
    best_iteration: int
    evals_result: dict[str, Any]
    params: dict[str, Any]


def extract(settings: Settings, start: datetime, end: datetime) -> Extracted:
    """Snapshot the window ``[start, end)`` of the configured source (and its catalogue)."""
    import sources

    snap = sources.extract_snapshot(
        settings.source_uri,
        settings.source.mapping,
        start,
        end,
        settings.snapshot_dir,
        batch_rows=settings.source.batch_rows,
        retries=settings.source.connect_retries,
        retry_delay_s=settings.source.retry_delay_s,
    )
    items, users = sources.read_catalog(settings.source_uri, settings.source.mapping)
    return Extracted(
        snapshot_path=Path(snap.path),
        digest=snap.digest,
        rows=snap.rows,
        reused=snap.reused,
        source=sources.redact(settings.source_uri),
        items=items,
        users=users,
        changed=snap.previous,
    )


def validate(settings: Settings, extracted: Extracted, start: datetime, end: datetime) -> Validated:
    """Run the interaction contract; quarantine bad rows under ``<home>/quarantine/<digest>/``."""
    import data_contracts

    table = pq.read_table(extracted.snapshot_path)
    result = data_contracts.validate_interactions(table, window=(start, end), settings=settings.contracts)
    qpath = data_contracts.write_quarantine(result, settings.quarantine_dir / extracted.digest)
    summary = result.summary()
    return Validated(
        events=result.valid.to_pandas(),
        rows_in=summary["rows_in"],
        rows_valid=summary["rows_valid"],
        rows_quarantined=summary["rows_quarantined"],
        quarantine_path=qpath,
        suite_name=result.suite_name,
        suite_version=result.suite_version,
        reasons=dict(summary.get("reasons", {})),
    )


def build_dataset(settings: Settings, validated: Validated, extracted: Extracted, end: datetime) -> Dataset:
    """Graded labels -> point-in-time features -> time split."""
    import features
    from models.training import time_split

    imps = features.impressions(validated.events, settings.labels)
    fset = features.get_feature_set(settings.features.feature_set)
    items = extracted.items.to_pandas() if extracted.items is not None else None
    users = extracted.users.to_pandas() if extracted.users is not None else None
    X = features.build_features(
        imps, validated.events, items=items, users=users, settings=settings.features, feature_set=fset.name
    )
    frame = pd.concat([imps[["query_id", "user_id", "item_id", "ts", "position", "label"]], X], axis=1)
    split = time_split(frame, end=end, valid_days=settings.ranker.valid_days, test_days=settings.ranker.test_days)
    return Dataset(split=split, feature_set=fset.name, feature_set_hash=fset.hash, features=tuple(fset.features),
                   impressions=len(imps))


def train_ranker(settings: Settings, dataset: Dataset, workdir: Path) -> TrainedRanker:
    """Fit LambdaRank with early stopping on validation NDCG@10; score it and the baselines on the test week."""
    from models.baselines import popularity_scores, similarity_scores
    from models.metrics import per_query_ndcg, ranking_report
    from models.ranker import Ranker
    from models.training import group_sizes, with_positive_label

    cols = list(dataset.features)
    s = dataset.split
    valid = with_positive_label(s.valid)
    ranker = Ranker.from_settings(settings.ranker)
    ranker.fit(s.train[cols], s.train["label"], group=group_sizes(s.train),
               eval_set=[(valid[cols], valid["label"])], eval_group=[group_sizes(valid)])
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = workdir / "model.txt"
    ranker.save(model_path)
    test = with_positive_label(s.test)
    g = group_sizes(test)
    scores = ranker.predict(test[cols])
    history = pd.concat([s.train, s.valid])
    baselines = {"popularity": ranking_report(test["label"], popularity_scores(history, test), g)}
    if "user_item_embedding_cosine" in test.columns:
        baselines["similarity"] = ranking_report(test["label"], similarity_scores(test), g)
    return TrainedRanker(
        model_path=model_path,
        report=ranking_report(test["label"], scores, g),
        baselines=baselines,
        per_query_ndcg=per_query_ndcg(test["label"], scores, g, 10),
        best_iteration=int(ranker.best_iteration_),
        evals_result=ranker.evals_result_,
        params=ranker.get_params(),
    )


def champion_per_query_ndcg(settings: Settings, dataset: Dataset) -> tuple[int | None, np.ndarray | None]:
    """The current champion's per-query NDCG@10 on this run's test week (None when there is none)."""
    from models.metrics import per_query_ndcg
    from models.training import group_sizes, with_positive_label
    from registry import load
    from registry.errors import NoChampion

    try:
        champion = load("ranker", alias="champion", settings=settings)
    except NoChampion:
        return None, None
    test = with_positive_label(dataset.split.test)
    missing = [c for c in champion.manifest["features"] if c not in test.columns]
    if missing:
        log.warning("champion v%s needs features %s this run did not build; judging it as broken", champion.version, missing)
        return champion.version, np.zeros(test["query_id"].nunique())
    scores = champion.predict(test[champion.manifest["features"]])
    return champion.version, per_query_ndcg(test["label"], scores, group_sizes(test), 10)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def run_tags(settings: Settings, start: datetime, end: datetime, extracted: Extracted) -> dict[str, str]:
    """Tags every weekly run carries (what the compare view and `rankloop runs` read)."""
    return {
        "rankloop.window_start": start.isoformat(),
        "rankloop.window_end": end.isoformat(),
        "rankloop.source": extracted.source,
        "rankloop.mapping": settings.source.mapping,
        "rankloop.snapshot_digest": extracted.digest,
        "rankloop.code_version": code_version(),
        "rankloop.config_hash": settings.config_hash(),
    }


# --- run context ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RunContext:
    """Where one run keeps its working files, and the window it covers."""

    start: datetime
    end: datetime
    workdir: Path
    run_name: str

    @classmethod
    def create(cls, settings: Settings, start: datetime, end: datetime) -> RunContext:
        stamp = datetime.now(start.tzinfo).strftime("%Y%m%dT%H%M%S%f")
        workdir = settings.home_dir / "runs" / f"{end:%Y-%m-%d}" / stamp
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(start=start, end=end, workdir=workdir, run_name=f"weekly {end:%Y-%m-%d}")


def settings_for_run(
    *, window_end: Any = None, source_uri: str | None = None, mapping: str | None = None
) -> Settings:
    """The environment's settings with the flow's parameters applied on top."""
    from rankloop.settings import apply_environment

    settings = Settings()
    updates: dict[str, Any] = {}
    if window_end is not None:
        updates["window"] = settings.window.model_copy(update={"end": window_end})
    source_updates = {k: v for k, v in (("uri", source_uri), ("mapping", mapping)) if v is not None}
    if source_updates:
        updates["source"] = settings.source.model_copy(update=source_updates)
    settings = settings.model_copy(update=updates)
    apply_environment(settings)
    return settings


def redacted_source(settings: Settings) -> str:
    """The source URI with any password hidden."""
    from sources import redact

    return redact(settings.source_uri)
