"""LambdaRank on a Dask cluster with ``lightgbm.dask.DaskLGBMRanker`` (docs/scale-out.md).

The training frame is a dask DataFrame with one partition per day of queries (a query never spans
two partitions) and the group sizes of each partition. The LightGBM parameters are the local
:class:`models.ranker.Ranker`'s. ``lightgbm.dask`` has no early stopping and evaluates an
``eval_set`` only on each worker's share, so the validation curve is computed here instead, over
the *whole* validation set (per partition, then summed), and the iteration local early stopping
would pick is chosen from it: :func:`early_stopping_iteration`. The trees grow in rounds of
``early_stopping_rounds`` (each fit continues the booster, ``init_model``; :func:`stopped` says when
to end), so training ends about where local early stopping ends instead of growing ``n_estimators``.
Without row or feature sampling the rounds grow exactly the trees one fit grows (test); with them
each round draws its own samples (seeds moved on by the trees grown so far), run to run the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.config.ranker import RankerSettings
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


def placement(workers: Sequence[str], n_parts: int) -> list[str]:
    """The worker of each training partition: partition i on ``sorted(workers)[i % len(workers)]``.

    Round robin by partition (day) index, so every worker holds days from across the window (each
    worker's share is what LightGBM samples its bin boundaries from) and the assignment depends only
    on the number of workers, never on the scheduler's choices.
    """
    ordered = sorted(set(workers))
    if not ordered:
        raise ValueError("the cluster has no workers")
    return [ordered[i % len(ordered)] for i in range(n_parts)]


class PlacedClient:
    """A ``distributed.Client`` for ``DaskLGBMRanker`` that hands it the training parts on the workers of
    :func:`placement`, in partition order.

    ``lightgbm.dask._train`` computes one part per partition, asks ``client.who_has(parts)`` where
    they are and gives each worker the parts found there; the worker that comes first becomes
    LightGBM's rank 0. ``distributed.Client.who_has`` collects the keys into a set, so that order
    (which worker has which rank, and the order of the parts, i.e. of the rows, in each worker's
    local Dataset) changed with each process's string hashing, and so did the model: bins, bagging
    and the histograms all depend on it. Here ``who_has`` answers in partition order with the
    planned worker of each part (a part the scheduler put elsewhere is fetched by its worker;
    logged), so the model depends only on the data, the parameters and the number of workers.
    Everything else is the wrapped client's.
    """

    def __init__(self, client: Any, workers: Sequence[str]) -> None:
        self._client = client
        self._workers = list(workers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def who_has(self, futures: Any = None, **kwargs: Any) -> Any:
        held = self._client.who_has(futures, **kwargs)
        if futures is None or len(futures) != len(self._workers):
            return held  # not lightgbm's question about the training parts
        out = {}
        for i, (future, worker) in enumerate(zip(futures, self._workers, strict=True)):
            where = list(held.get(future.key, ()))
            if worker not in where:
                log.warning("training part %d is on %s, not on its planned worker %s: it moves there", i, where, worker)
            out[future.key] = [worker]
        return out


def fit_distributed(client: Any, frames: Sequence[Any], workers: Sequence[str], groups: Sequence[np.ndarray],
                    features: Sequence[str], settings: RankerSettings, *, rounds: int | None = None,
                    init_model: lgb.Booster | None = None) -> lgb.Booster:
    """Train ``rounds`` (default ``settings.n_estimators``) LambdaRank trees on the cluster, after those of
    ``init_model`` when given; returns the whole booster (``init_model``'s trees, then the new ones).

    Args:
        client: a ``distributed.Client``.
        frames: per partition, a future of its DataFrame (``features`` and ``label``; whole queries in
            the order of ``groups[i]``), held by ``workers[i]``.
        workers: the worker of each partition (:func:`placement`).
        groups: per partition, its query sizes in row order.
        features: feature columns, in model order.
        settings: the ranker settings (as for the local Ranker).
        rounds: trees to add.
        init_model: a booster to continue (:func:`train_in_rounds`). Its trees are kept; the bagging and
            feature-sampling seeds move on with the number of its trees, so a continued fit does not
            redraw the samples the first trees were grown on.
    """
    import dask
    import dask.array as da
    import dask.dataframe as dd
    from lightgbm.dask import DaskLGBMRanker

    if not len(frames) == len(workers) == len(groups):
        raise ValueError(f"{len(frames)} partitions, {len(workers)} workers and {len(groups)} group arrays: "
                         "one of each per partition")
    params = lgb_params(settings)
    params.pop("num_threads", None)  # lightgbm.dask sets it to each worker's nthreads
    params.pop("eval_at", None)
    params.pop("metric", None)
    cols = list(features)

    def pinned(fn: Any, *args: Any) -> list[Any]:  # each partition's piece computed where its frame is
        return [client.submit(fn, f, *args, workers=[w], allow_other_workers=False, pure=False)
                for f, w in zip(frames, workers, strict=True)]

    meta = client.submit(_head, frames[0], workers=[workers[0]], pure=False).result()
    X = dd.from_delayed(pinned(_select, cols), meta=meta[cols], verify_meta=False)
    y = dd.from_delayed(pinned(_select, "label"), meta=meta["label"], verify_meta=False)
    sizes = [client.scatter(np.asarray(g, dtype=np.int64), workers=[w]) for g, w in zip(groups, workers, strict=True)]
    group = da.concatenate([da.from_delayed(dask.delayed(s), shape=(len(g),), dtype=np.int64)
                            for s, g in zip(sizes, groups, strict=True)])
    done = init_model.current_iteration() if init_model is not None else 0
    if done:
        params |= {name: settings.seed + done for name in _ROUND_SEEDS}
    model = DaskLGBMRanker(client=PlacedClient(client, workers), n_estimators=rounds or settings.n_estimators, **params)
    log.info("training LambdaRank on %d partitions over %d workers, %d queries, %d features (lightgbm.dask): "
             "trees %d-%d", len(frames), len(set(workers)), int(sum(len(g) for g in groups)), len(cols), done + 1,
             done + (rounds or settings.n_estimators))
    model.fit(X, y, group=group, **({"init_model": init_model} if init_model is not None else {}))
    booster = model.to_local().booster_
    if booster.current_iteration() != done + (rounds or settings.n_estimators):
        raise RuntimeError(f"lightgbm.dask returned {booster.current_iteration()} trees after continuing {done} "
                           f"with {rounds or settings.n_estimators}")
    return portable(booster, settings, first=init_model)


def _head(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def _select(frame: pd.DataFrame, columns: Any) -> Any:
    return frame[columns]


# The cluster's addresses and per-worker threads: true of one training run, not of the model.
_NETWORK_PARAMS = ("machines", "local_listen_port", "machine_list_filename", "num_machines", "time_out")


# Moved on by each continued round (fit_distributed); the model records the first round's.
_ROUND_SEEDS = ("bagging_seed", "feature_fraction_seed")


def _param_name(line: str) -> str | None:
    return line[1:].split(":", 1)[0] if line.startswith("[") and ":" in line else None


def portable(booster: lgb.Booster, settings: RankerSettings, first: lgb.Booster | None = None) -> lgb.Booster:
    """The booster with the cluster's parameters dropped from its text, ``num_threads`` and ``num_iterations``
    as configured (a round grows fewer), and the sampling seeds of ``first`` (the first round's booster), so the
    saved model reads like a local one (``Ranker.load`` checks its parameters against the settings)."""
    kept = {}
    if first is not None:
        kept = {n: line for line in first.model_to_string().splitlines() if (n := _param_name(line)) in _ROUND_SEEDS}
    lines = []
    for line in booster.model_to_string().splitlines():
        name = _param_name(line)
        if name in _NETWORK_PARAMS:
            continue
        if name == "num_threads":
            line = f"[num_threads: {settings.num_threads}]"
        elif name == "num_iterations":
            line = f"[num_iterations: {settings.n_estimators}]"
        elif name in kept:
            line = kept[name]
        lines.append(line)
    return lgb.Booster(model_str="\n".join(lines) + "\n")


# --- validation curve -----------------------------------------------------------------------------
def partition_curve(booster_text: str, frame: pd.DataFrame, features: Sequence[str],
                    eval_at: Sequence[int] = (5, 10), start: int = 0) -> tuple[dict[int, np.ndarray], int]:
    """Per iteration from ``start`` on, the summed NDCG@k of the queries of ``frame`` (rows of a query
    contiguous).

    Returns ``({k: (n_iterations - start,) sums}, number of queries)``; divide the sums of all partitions
    by their query count for the curve of the whole set. The scores before iteration ``start`` are the
    first ``start`` trees' sum, added in the same order as tree by tree (the same values).
    """
    booster = lgb.Booster(model_str=booster_text)
    n = booster.current_iteration()
    sums = {k: np.zeros(n - start) for k in eval_at}
    g = group_sizes(frame)
    if len(frame) == 0:
        return sums, 0
    X = frame[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)
    labels = frame["label"].to_numpy()
    score = booster.predict(X, num_iteration=start, raw_score=True) if start else np.zeros(len(frame))
    for i in range(start, n):
        score += booster.predict(X, start_iteration=i, num_iteration=1, raw_score=True)
        for k in eval_at:
            sums[k][i - start] = per_query_ndcg(labels, score, g, k).sum()
    return sums, len(g)


Curves = list[tuple[dict[int, np.ndarray], int]]


def extend_curves(curves: Curves, more: Curves) -> Curves:
    """Each partition's curve (``partition_curve``) followed by its next iterations' (``more``, same order)."""
    if not curves:
        return list(more)
    if len(curves) != len(more):
        raise ValueError(f"{len(curves)} partitions' curves and {len(more)} continuations")
    return [({k: np.concatenate([c[k], m[k]]) for k in c}, n) for (c, n), (m, _) in zip(curves, more, strict=True)]


def stopped(curves: Curves, settings: RankerSettings, eval_at: Sequence[int] = (5, 10)) -> bool:
    """Whether early stopping (``settings.early_stopping_rounds``) has ended training on these curves: the
    best iteration is followed by that many without a strict improvement (never, without early stopping)."""
    rounds = settings.early_stopping_rounds
    queries = sum(n for _, n in curves)
    if rounds is None or queries == 0:
        return False
    mean = sum(c[max(eval_at)] for c, _ in curves) / queries
    return len(mean) >= early_stopping_iteration(mean, rounds) + rounds


def next_round(curves: Curves, done: int, settings: RankerSettings, eval_at: Sequence[int] = (5, 10)) -> int:
    """How many trees the next round grows: the fewest after which early stopping could end training.

    Local early stopping ends at the best iteration plus ``early_stopping_rounds`` (``E``); with ``done``
    trees grown and the best so far at ``b`` (no curve yet: the first tree), training cannot end before
    ``b + E`` trees, and may end there. So a round grows ``b + E - done`` trees: no more than a local fit
    grows, and one round (not two of ``E``) when the first tree stays the best. Without early stopping:
    the rest of ``n_estimators``. Never more than ``n_estimators - done``, never fewer than one.
    """
    left = settings.n_estimators - done
    rounds = settings.early_stopping_rounds
    if rounds is None or left <= 0:
        return max(left, 0)
    queries = sum(n for _, n in curves)
    best = early_stopping_iteration(sum(c[max(eval_at)] for c, _ in curves) / queries, rounds) if queries else 1
    return max(1, min(left, best + rounds - done))


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
