"""The demo ranker on request-time features, with each position-bias setting, scored as serving scores.

Runs the weekly retrain's own stages (``extract``, ``validate``, ``build_dataset``, ``train_ranker``;
no MLflow) once per ``ranker.position_bias`` setting on the demo source of a fixed window end, and
reports test NDCG@10 on the logged labels (what the run records) and against the simulator's true
relevance (what the logged labels estimate through a position-biased click model): the label of a
test row is then ``round(10 * sigmoid(rel))``, ``rel`` the simulator's relevance of that user, item
and request (mood, action, time of day). Scores come from the saved model.txt opened by the
registry's loader with the feature set's columns only, as ``train_ranker`` scores.

For reference, on the same test rows: the baselines and the logging policy's own order (its
slots), and with ``--old-model`` a model trained with ``ctx_position`` as a feature, scored with
the logged slot (as its run reported it) and with the slot unknown (-1, what serving can give it).
``--fixed-trees 10,50`` also trains each setting without early stopping for that many trees.

    flock /tmp/rankloop-heavy.lock .venv/bin/python bench/position_bias.py --home /tmp/pb \
        --old-model /tmp/old/model.txt --fixed-trees 10,50 --out bench/results/position_bias.json
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.settings import Settings
from core.version import code_version
from models.baselines import popularity_scores, similarity_scores
from models.metrics import ranking_report
from models.ranker import Ranker
from models.training import group_sizes, with_positive_label
from rankloop import stages
from rankloop.demo import ensure_demo_source
from rankloop.simulator import MOODS, TIMES_OF_DAY, SimulationConfig, make_world
from registry.loader import RankerAdapter

VARIANTS = ("none", "lightgbm", "propensity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="Data home (the demo source is simulated there once).")
    parser.add_argument("--end", default="2026-11-30", help="Window end (a Monday): the demo's simulated period ends there.")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="position_bias settings to train, comma-separated.")
    parser.add_argument("--old-model", type=Path, help="A LightGBM model.txt trained with ctx_position.")
    parser.add_argument("--fixed-trees", default="", help="Also train each setting for exactly these many trees.")
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    end = datetime.fromisoformat(args.end).replace(tzinfo=UTC)
    config = SimulationConfig(end=end)
    settings = Settings(home=args.home)
    ensure_demo_source(settings, config)
    began = time.perf_counter()
    start = end - timedelta(days=settings.window.history_days)
    workdir = args.home / "bench" / f"{end:%Y-%m-%d}"
    extracted = stages.extract(settings, start, end)
    validated = stages.validate(settings, extracted, start, end, workdir)
    dataset = stages.build_dataset(settings, validated, extracted, end, workdir)
    truth = _true_labels(dataset, validated, config)
    rows = _references(dataset, truth, args.old_model)
    trees = [None, *(int(t) for t in args.fixed_trees.split(",") if t)]
    for variant in args.variants.split(","):
        for n in trees:
            fixed = {} if n is None else {"n_estimators": n, "early_stopping_rounds": None}
            ranker = settings.ranker.model_copy(update={"position_bias": variant, **fixed})
            folder = workdir / (variant if n is None else f"{variant}_{n}")
            trained = stages.train_ranker(settings.model_copy(update={"ranker": ranker}), dataset, folder)
            rows.append(_row(variant, trained, dataset, folder, truth) | {"trees": "early stopping" if n is None else n})
            print(json.dumps(rows[-1]))
    given = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v)
    result = {"command": f"bench/position_bias.py {given}",
              "commit": code_version(), "window_end": end.isoformat(), "feature_set": dataset.feature_set,
              "features": len(dataset.features), "impressions": dataset.impressions,
              "split": dataset.split.sizes(), "seconds": round(time.perf_counter() - began, 1), "variants": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "variants"}))


def _references(dataset: stages.Dataset, truth: pd.DataFrame, old_model: Path | None) -> list[dict]:
    """The baselines, the logging order and the old model, on the same test rows as the ranker."""
    test = dataset.split.read("test", ["query_id", "item_id", "position", "label", *dataset.features])
    test = test.merge(truth, on=["query_id", "item_id"], how="left", validate="1:1")
    history = pd.concat([dataset.split.read(p, ["item_id", "label"]) for p in ("train", "valid")], ignore_index=True)
    scores = {"popularity": popularity_scores(history, test), "similarity": similarity_scores(test),
              "logging order (slot)": -test["position"].to_numpy(dtype=float)}
    if old_model is not None:
        old = Ranker.load(old_model)
        for name, slot in (("old model, logged slot", test["position"]), ("old model, slot unknown (-1)", -1)):
            frame = test.assign(ctx_position=slot).astype({"ctx_position": "int16"})
            scores[name] = old.predict(frame[old.feature_names_])
    return [_scored(name, np.asarray(s, dtype=float), test) for name, s in scores.items()]


def _scored(name: str, scores: np.ndarray, test: pd.DataFrame) -> dict:
    positive = (test.groupby("query_id", sort=False)["label"].transform("max") > 0).to_numpy()
    judged = test[positive]
    logged = ranking_report(judged["label"].to_numpy(), scores[positive], group_sizes(judged))
    true = ranking_report(test["true_label"].to_numpy(), scores, group_sizes(test))
    return {"position_bias": name, "ndcg_at_10": logged["ndcg_at_10"], "ndcg_at_5": logged["ndcg_at_5"],
            "true_ndcg_at_10": true["ndcg_at_10"]}


def _row(variant: str, trained: stages.TrainedRanker, dataset: stages.Dataset, folder: Path,
         truth: pd.DataFrame) -> dict:
    cols = list(dataset.features)
    served = RankerAdapter(folder, {"feature_set": {"features": cols}})
    test = dataset.split.read("test", ["query_id", "user_id", "item_id", "label", *cols])
    scores = served.predict(test[cols])
    true = test[["query_id", "item_id"]].merge(truth, on=["query_id", "item_id"], how="left", validate="1:1")
    true_report = ranking_report(true["true_label"].to_numpy(), scores, group_sizes(test))
    return {"position_bias": variant, "applied": trained.params["position_bias_applied"],
            "best_iteration": trained.best_iteration, "ndcg_at_10": trained.report["ndcg_at_10"],
            "ndcg_at_5": trained.report["ndcg_at_5"],
            "popularity_ndcg_at_10": trained.baselines["popularity"]["ndcg_at_10"],
            "similarity_ndcg_at_10": trained.baselines.get("similarity", {}).get("ndcg_at_10"),
            "true_ndcg_at_10": true_report["ndcg_at_10"],
            "test_queries_all": int(test["query_id"].nunique()),
            "test_queries_with_a_positive": int(with_positive_label(test)["query_id"].nunique())}


def _true_labels(dataset: stages.Dataset, validated: stages.Validated, config: SimulationConfig) -> pd.DataFrame:
    """query_id, item_id, true_label: the simulator's relevance of each test row, on the label scale."""
    from rankloop.simulator import _relevance  # the simulator's own formula: one definition of the truth

    test = dataset.split.read("test", ["query_id", "user_id", "item_id"])
    events = validated.load_events(["request_id", "event_type", "mood", "action_id", "time_of_day"])
    requests = (events[events["event_type"] == "impression"].drop_duplicates("request_id")
                .rename(columns={"request_id": "query_id"}))
    rows = test.merge(requests, on="query_id", how="left", validate="m:1")
    world = make_world(config)
    users = rows["user_id"].str[1:].astype(int).to_numpy()
    items = rows["item_id"].str[1:].astype(int).to_numpy()[:, None]
    mood = rows["mood"].map({m: i for i, m in enumerate(MOODS)}).to_numpy(dtype=int)
    tod = rows["time_of_day"].map({t: i for i, t in enumerate(TIMES_OF_DAY)})
    rel = _relevance(world, users, items, mood, rows["action_id"].to_numpy(dtype=int), tod.to_numpy(dtype=int))[:, 0]
    return rows[["query_id", "item_id"]].assign(true_label=np.round(10 / (1 + np.exp(-rel))).astype(int))


if __name__ == "__main__":
    main()
