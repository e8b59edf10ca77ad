"""LambdaRank on a Dask cluster with ``lightgbm.dask.DaskLGBMRanker`` (docs/scale-out.md).

The training frame is a dask DataFrame with one partition per day of queries (a query never spans
two partitions) and the group sizes of each partition. The LightGBM parameters are the local
:class:`models.ranker.Ranker`'s. ``lightgbm.dask`` has no early stopping and evaluates an
``eval_set`` only on each worker's share, so the validation curve is computed here instead, over
the *whole* validation set (per partition, then summed), and the iteration local early stopping
would pick is chosen from it: :func:`early_stopping_iteration`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.config import RankerSettings
from models.metrics import per_query_ndcg
from models.ranker import Ranker
from models.training import group_sizes

log = logging.getLogger(__name__)


# --- query cap over partitions ------------------------------------------------------------------
def query_hashes(part: pd.DataFrame, seed: int) -> np.ndarray:
    """The seeded hashes ``models.training.cap_queries`` ranks the distinct queries of ``part`` by."""
    uniques = pd.unique(part["query_id"])
    return pd.util.hash_array(np.asarray(uniques, dtype=object), hash_key=f"rankloop{seed % 10**8:08d}")


def cap_threshold(hashes: Sequence[np.ndarray], max_queries: int | None) -> np.uint64 | None:
    """The largest hash ``cap_queries`` keeps over all partitions (None: keep everything)."""
    if max_queries is None:
        return None
    if max_queries < 1:
        raise ValueError(f"max_queries must be >= 1, got {max_queries!r}")
    every = np.concatenate([np.asarray(h, dtype=np.uint64) for h in hashes]) if hashes else np.zeros(0, np.uint64)
    if len(every) <= max_queries:
        return None
    return np.partition(every, max_queries - 1)[max_queries - 1]


def keep_capped(part: pd.DataFrame, threshold: np.uint64 | None, seed: int) -> pd.DataFrame:
    """The rows of ``part`` whose query ``cap_queries`` keeps under ``threshold`` (order kept)."""
    if threshold is None:
        return part
    codes, uniques = pd.factorize(part["query_id"])
    hashes = pd.util.hash_array(np.asarray(uniques, dtype=object), hash_key=f"rankloop{seed % 10**8:08d}")
    return part[(hashes <= threshold)[codes]].reset_index(drop=True)


# --- training -------------------------------------------------------------------------------------
def lgb_params(settings: RankerSettings, eval_at: Sequence[int] = (5, 10)) -> dict[str, Any]:
    """The local Ranker's LightGBM parameters (validated the same way)."""
    ranker = Ranker.from_settings(settings)
    return Ranker._lgb_params(ranker._validated_settings(), list(eval_at))


def fit_distributed(client: Any, train: Any, groups: Sequence[np.ndarray], features: Sequence[str],
                    settings: RankerSettings) -> lgb.Booster:
    """Train ``settings.n_estimators`` LambdaRank trees on the cluster; returns the whole booster.

    Args:
        client: a ``distributed.Client``.
        train: dask DataFrame with ``features`` and ``label``; partition i holds whole queries, in
            the order of ``groups[i]``.
        groups: per partition, its query sizes in row order.
        features: feature columns, in model order.
        settings: the ranker settings (as for the local Ranker).
    """
    import dask.array as da
    from lightgbm.dask import DaskLGBMRanker

    if train.npartitions != len(groups):
        raise ValueError(f"train has {train.npartitions} partitions but {len(groups)} group arrays were given")
    params = lgb_params(settings)
    params.pop("num_threads", None)  # lightgbm.dask sets it to each worker's nthreads
    params.pop("eval_at", None)
    params.pop("metric", None)
    group = da.concatenate([da.from_array(np.asarray(g, dtype=np.int64), chunks=len(g)) for g in groups])
    model = DaskLGBMRanker(client=client, n_estimators=settings.n_estimators, **params)
    log.info("training LambdaRank on %d partitions, %d queries, %d features (lightgbm.dask)",
             train.npartitions, int(sum(len(g) for g in groups)), len(features))
    model.fit(train[list(features)], train["label"], group=group)
    return portable(model.to_local().booster_, settings)


# The cluster's addresses and per-worker threads: true of one training run, not of the model.
_NETWORK_PARAMS = ("machines", "local_listen_port", "machine_list_filename", "num_machines", "time_out")


def portable(booster: lgb.Booster, settings: RankerSettings) -> lgb.Booster:
    """The booster with the cluster's parameters dropped from its text and ``num_threads`` as configured,
    so the saved model reads like a local one (``Ranker.load`` checks its parameters against the settings)."""
    lines = []
    for line in booster.model_to_string().splitlines():
        name = line[1:].split(":", 1)[0] if line.startswith("[") and ":" in line else None
        if name in _NETWORK_PARAMS:
            continue
        if name == "num_threads":
            line = f"[num_threads: {settings.num_threads}]"
        lines.append(line)
    return lgb.Booster(model_str="\n".join(lines) + "\n")


# --- validation curve -----------------------------------------------------------------------------
def partition_curve(booster_text: str, frame: pd.DataFrame, features: Sequence[str],
                    eval_at: Sequence[int] = (5, 10)) -> tuple[dict[int, np.ndarray], int]:
    """Per iteration, the summed NDCG@k of the queries of ``frame`` (rows of a query contiguous).

    Returns ``({k: (n_iterations,) sums}, number of queries)``; divide the sums of all partitions
    by their query count for the curve of the whole set.
    """
    booster = lgb.Booster(model_str=booster_text)
    n = booster.current_iteration()
    sums = {k: np.zeros(n) for k in eval_at}
    g = group_sizes(frame)
    if len(frame) == 0:
        return sums, 0
    X = frame[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)
    labels = frame["label"].to_numpy()
    score = np.zeros(len(frame))
    for i in range(n):
        score += booster.predict(X, start_iteration=i, num_iteration=1, raw_score=True)
        for k in eval_at:
            sums[k][i] = per_query_ndcg(labels, score, g, k).sum()
    return sums, len(g)


def early_stopping_iteration(curve: Sequence[float], rounds: int | None) -> int:
    """The (1-based) iteration ``lightgbm.early_stopping`` keeps for a higher-is-better curve.

    Training stops once ``rounds`` iterations pass without a strict improvement; the best
    iteration is the first that reached the best value. ``rounds`` None: the last iteration.
    """
    if len(curve) == 0:
        raise ValueError("the validation curve is empty")
    if rounds is None:
        return len(curve)
    best, best_at = -np.inf, 0
    for i, value in enumerate(curve):
        if value > best:
            best, best_at = value, i
        elif i - best_at >= rounds:
            break
    return best_at + 1


@dataclass(frozen=True)
class DistributedFit:
    """A trained booster cut at the chosen iteration, and its curves (``Ranker.evals_result_`` shape)."""

    booster: lgb.Booster
    best_iteration: int
    evals_result: dict[str, dict[str, list[float]]]

    def ranker(self) -> Ranker:
        """A fitted local :class:`Ranker` over the booster (saving cuts it at ``best_iteration``)."""
        ranker = Ranker(**_ranker_kwargs(self.booster))
        ranker.booster_ = self.booster
        ranker.feature_names_ = self.booster.feature_name()
        ranker.feature_dtypes_ = {}
        ranker.best_iteration_ = self.best_iteration
        ranker.evals_result_ = self.evals_result
        return ranker


def _ranker_kwargs(booster: lgb.Booster) -> dict[str, Any]:
    from models.ranker import _params_from_booster

    return _params_from_booster(booster.params)


def choose_iteration(booster: lgb.Booster, curves: Sequence[tuple[dict[int, np.ndarray], int]],
                     settings: RankerSettings, eval_at: Sequence[int] = (5, 10)) -> DistributedFit:
    """Combine the partitions' validation curves and pick the early-stopping iteration on NDCG@max(eval_at)."""
    queries = sum(n for _, n in curves)
    if queries == 0:
        raise ValueError("the validation partitions hold no query with a relevant item")
    mean = {k: sum(c[k] for c, _ in curves) / queries for k in eval_at}
    best = early_stopping_iteration(mean[max(eval_at)], settings.early_stopping_rounds)
    history = {"valid": {f"ndcg@{k}": [float(v) for v in mean[k][:best + (settings.early_stopping_rounds or 0)]]
                         for k in eval_at}}
    log.info("best iteration %d of %d trained (validation NDCG@%d %.4f)", best, len(mean[max(eval_at)]),
             max(eval_at), mean[max(eval_at)][best - 1])
    return DistributedFit(booster=booster, best_iteration=best, evals_result=history)
