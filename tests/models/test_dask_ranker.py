"""The cluster-free pieces of the Dask ranker: the query cap over partitions, early-stopping choice, curves."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from core.config.ranker import RankerSettings
from models.dask_ranker import (
    cap_threshold,
    early_stopping_iteration,
    keep_capped,
    next_round,
    partition_curve,
    portable,
    query_hashes,
    stopped,
)
from models.metrics import ndcg_at_k
from models.training import cap_queries, group_sizes


def _frame(n_queries: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    q = np.repeat([f"q{i:03d}" for i in range(n_queries)], 5)
    return pd.DataFrame({"query_id": q, "label": rng.integers(0, 3, len(q)), "f1": rng.random(len(q)),
                         "f2": rng.random(len(q))})


def test_capping_partitions_keeps_the_queries_cap_queries_keeps() -> None:
    whole = _frame(60)
    parts = [whole.iloc[:100], whole.iloc[100:220], whole.iloc[220:]]  # whole queries per part
    threshold = cap_threshold([query_hashes(p, 7) for p in parts], 17)
    capped = pd.concat([keep_capped(p, threshold, 7) for p in parts], ignore_index=True)
    expected = cap_queries(whole, 17, seed=7)
    assert capped["query_id"].nunique() == 17
    assert sorted(capped["query_id"].unique()) == sorted(expected["query_id"].unique())


def test_no_cap_or_a_large_cap_keeps_everything() -> None:
    part = _frame(5)
    assert cap_threshold([query_hashes(part, 0)], None) is None
    assert cap_threshold([query_hashes(part, 0)], 99) is None
    assert keep_capped(part, None, 0) is part
    with pytest.raises(ValueError, match="max_queries"):
        cap_threshold([query_hashes(part, 0)], 0)


def test_early_stopping_iteration_matches_lightgbm_rules() -> None:
    curve = [0.5, 0.6, 0.6, 0.55, 0.58, 0.59, 0.61, 0.4]
    assert early_stopping_iteration(curve, 3) == 2  # stops at i=4, best first reached at iteration 2
    assert early_stopping_iteration(curve, 5) == 7  # the 0.61 comes before the patience runs out
    assert early_stopping_iteration(curve, None) == len(curve)
    with pytest.raises(ValueError, match="empty"):
        early_stopping_iteration([], 3)


def _grow(full: np.ndarray, settings: RankerSettings) -> tuple[int, int]:
    """The Dask loop over a known curve (two partitions' NDCG sums: 3 + 1 queries): (trees grown, fits)."""
    curves, done, fits = [], 0, 0
    while True:
        more = next_round(curves, done, settings)
        assert more >= 1
        piece = [({5: full[done:done + more] * 3, 10: full[done:done + more] * 3}, 3),
                 ({5: full[done:done + more], 10: full[done:done + more]}, 1)]
        curves = piece if not curves else [({k: np.concatenate([c[k], m[k]]) for k in c}, n)
                                           for (c, n), (m, _) in zip(curves, piece, strict=True)]
        done, fits = done + more, fits + 1
        if done >= settings.n_estimators or stopped(curves, settings):
            return done, fits


@pytest.mark.parametrize("curve", [
    [0.7, *[0.6] * 60],  # the first tree stays the best (the bench's best iteration 1)
    [0.5, 0.6, 0.6, 0.55, 0.58, 0.59, 0.61, *[0.4] * 50],  # improves after a plateau
    list(np.linspace(0.3, 0.6, 61)),  # never stops improving: n_estimators binds
])
def test_rounds_grow_the_trees_local_early_stopping_grows(curve: list[float]) -> None:
    """Each round grows the fewest trees after which training could end: the Dask loop grows exactly the
    trees LightGBM's early stopping grows (best iteration + early_stopping_rounds, at most n_estimators)."""
    full = np.asarray(curve)
    settings = RankerSettings(n_estimators=40, early_stopping_rounds=5)
    grown, fits = _grow(full, settings)
    assert grown == min(early_stopping_iteration(full[:40], 5) + 5, 40)
    if curve[0] == 0.7:
        assert fits == 1  # one fit of 6 trees, where rounds of 5 took two fits and 10 trees
    assert _grow(full, settings.model_copy(update={"early_stopping_rounds": None})) == (40, 1)


def test_partition_curve_is_the_ndcg_of_each_iteration() -> None:
    train = _frame(40, seed=1)
    params = {"objective": "lambdarank", "verbosity": -1, "num_threads": 1, "min_data_in_leaf": 5, "seed": 1}
    booster = lgb.train(params, lgb.Dataset(train[["f1", "f2"]].to_numpy(), train["label"],
                                            group=group_sizes(train)), 6)
    valid = _frame(12, seed=2)
    sums, n = partition_curve(booster.model_to_string(), valid, ["f1", "f2"], eval_at=(5,))
    assert n == 12 and len(sums[5]) == 6
    for i in (1, 6):
        scores = booster.predict(valid[["f1", "f2"]].to_numpy(), num_iteration=i, raw_score=True)
        assert sums[5][i - 1] / n == pytest.approx(ndcg_at_k(valid["label"], scores, group_sizes(valid), 5))


def test_portable_model_drops_the_cluster_and_keeps_predictions() -> None:
    train = _frame(20, seed=3)
    params = {"objective": "lambdarank", "verbosity": -1, "num_threads": 1, "min_data_in_leaf": 5,
              "machines": "127.0.0.1:12400,127.0.0.1:12401", "num_machines": 1}
    booster = lgb.train(params, lgb.Dataset(train[["f1", "f2"]].to_numpy(), train["label"],
                                            group=group_sizes(train)), 3)
    out = portable(booster, RankerSettings(num_threads=0))
    text = out.model_to_string()
    assert "[num_threads: 0]" in text and "machines:" not in text
    X = train[["f1", "f2"]].to_numpy()
    assert np.array_equal(out.predict(X), booster.predict(X))


def test_placement_is_round_robin_over_sorted_workers() -> None:
    from models.dask_ranker import placement

    workers = ["tcp://127.0.0.1:9", "tcp://127.0.0.1:10", "tcp://127.0.0.1:11"]
    assert placement(workers, 5) == [workers[1], workers[2], workers[0], workers[1], workers[2]]
    assert placement(list(reversed(workers)), 5) == placement(workers, 5)  # the scheduler's order does not matter
    with pytest.raises(ValueError, match="no workers"):
        placement([], 3)


class _Future:
    def __init__(self, key: str) -> None:
        self.key = key


class _Client:
    """Answers who_has like distributed: keys in set order, each part wherever it happens to be."""

    def __init__(self, held: dict[str, list[str]]) -> None:
        self.held = held
        self.other = "delegated"

    def who_has(self, futures=None, **kwargs):  # noqa: ANN001, ANN201
        keys = list({f.key for f in futures})
        return {k: self.held[k] for k in keys}


def test_placed_client_reports_parts_in_partition_order_on_their_planned_workers(caplog: pytest.LogCaptureFixture) -> None:
    from models.dask_ranker import PlacedClient

    parts = [_Future(f"dict-{c}") for c in "qwertyuiop"]
    planned = ["w0", "w1"] * 5
    held = {f.key: [w] for f, w in zip(parts, planned, strict=True)}
    held[parts[3].key] = ["w0"]  # the scheduler put part 3 on the other worker
    client = PlacedClient(_Client(held), planned)
    answer = client.who_has(parts)
    assert list(answer) == [f.key for f in parts]  # partition order: rank 0 is the worker of part 0
    assert [answer[f.key] for f in parts] == [[w] for w in planned]
    assert "training part 3" in caplog.text
    assert client.other == "delegated"
    assert client.who_has(parts[:2]) == {f.key: held[f.key] for f in parts[:2]}  # any other question: unchanged
