"""Ranker vs a bare lightgbm.LGBMRanker on LightGBM's LambdaRank example (run by hand).

Both train 100 trees with LightGBM's sklearn defaults on ``rank.train`` and are scored on
``rank.test`` twice: with ``models.metrics`` on their predictions and with LightGBM's own NDCG
evaluation of the final model. The two figures must agree within 0.005 for each model. Last, the
project's default RankerSettings (early stopping on held-out training queries) for reference.

    .venv/bin/python bench/lambdarank_bench.py [--data /work/shared/data/lightgbm_lambdarank] [--threads 2]

Known figure (README of the data): plain LGBMRanker defaults, 2 threads: NDCG@5 0.6739, NDCG@10 0.7358.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.datasets import load_svmlight_file

from core.config.ranker import RankerSettings
from models import metrics
from models.ranker import Ranker

TOLERANCE = 0.005
# LGBMRanker's defaults, spelled out in Ranker's vocabulary.
SHARED = {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20}
RANKER_ONLY = {"feature_fraction": 1.0, "bagging_fraction": 1.0, "bagging_freq": 0,
               "lambdarank_truncation_level": 30, "early_stopping_rounds": None}


def load(folder: Path, name: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """SVMlight rows, labels and the ``.query`` group sizes of one split."""
    X, y = load_svmlight_file(str(folder / name), n_features=300)
    group = np.loadtxt(folder / f"{name}.query", dtype=np.int64)
    columns = [f"f{i}" for i in range(X.shape[1])]
    return pd.DataFrame(X.toarray(), columns=columns), y.astype(np.int64), group


def run_ranker(train, test, threads: int) -> tuple[np.ndarray, dict[str, list[float]]]:
    ranker = Ranker(**SHARED, **RANKER_ONLY, num_threads=threads)
    ranker.fit(train[0], train[1], group=train[2], eval_set=[(test[0], test[1])], eval_group=[test[2]])
    return ranker.predict(test[0]), ranker.evals_result_["valid"]


def run_lgbm(train, test, threads: int) -> tuple[np.ndarray, dict[str, list[float]]]:
    model = lgb.LGBMRanker(**SHARED, n_jobs=threads, verbose=-1)
    model.fit(train[0], train[1], group=train[2], eval_X=(test[0],), eval_y=(test[1],), eval_group=[test[2]],
              eval_at=[5, 10])
    return model.predict(test[0]), model.evals_result_["valid_0"]


def run_defaults(train, test, threads: int, valid_queries: int = 41) -> dict[str, float]:
    """RankerSettings defaults, early stopping on the last ``valid_queries`` queries of rank.train."""
    cut = int(train[2][:-valid_queries].sum())
    ranker = Ranker.from_settings(RankerSettings(num_threads=threads))
    ranker.fit(train[0][:cut], train[1][:cut], group=train[2][:-valid_queries],
               eval_set=[(train[0][cut:], train[1][cut:])], eval_group=[train[2][-valid_queries:]])
    report = metrics.ranking_report(test[1], ranker.predict(test[0]), test[2])
    return report | {"best_iteration": ranker.best_iteration_}


def compare(name: str, scores: np.ndarray, history: dict[str, list[float]], test, seconds: tuple[float, float]) -> bool:
    """Print ours vs LightGBM's NDCG@5/@10 for one model; True when they agree within TOLERANCE."""
    ok = True
    for k in (5, 10):
        ours = metrics.ndcg_at_k(test[1], scores, test[2], k)
        theirs = history[f"ndcg@{k}"][-1]
        ok &= abs(ours - theirs) <= TOLERANCE
        print(f"{name:<14} NDCG@{k:<2}  models.metrics {ours:.4f}   lightgbm eval {theirs:.4f}   diff {ours - theirs:+.2e}")
    print(f"{name:<14} fit+predict {seconds[0]:.2f} s wall, {seconds[1]:.2f} s CPU (all threads)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/lightgbm_lambdarank"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    train, test = load(args.data, "rank.train"), load(args.data, "rank.test")
    print(f"rank.train {len(train[0])} rows / {len(train[2])} queries; rank.test {len(test[0])} rows / {len(test[2])} queries")
    ok = True
    for name, runner in (("Ranker", run_ranker), ("LGBMRanker", run_lgbm)):
        wall, cpu = time.perf_counter(), time.process_time()
        scores, history = runner(train, test, args.threads)
        seconds = (time.perf_counter() - wall, time.process_time() - cpu)
        ok &= compare(name, scores, history, test, seconds)
    print("agreement within", TOLERANCE, "OK" if ok else "FAILED")
    defaults = run_defaults(train, test, args.threads)
    print("RankerSettings defaults (early stopping on the last 41 rank.train queries) on rank.test:",
          ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in defaults.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
