"""The Dask ranker's training on a 2-worker LocalCluster: the same model on every run, and capped
training over day partitions (each partition needs its query_id to cap, even when training reads
only the features)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.training import cap_queries, group_sizes

pytestmark = pytest.mark.slow

FEATURES = ("f_signal", "f_weak", "f_noise")
DAY0 = date(2026, 10, 1)


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def _day(day: int, n_queries: int = 40, slate: int = 8) -> pd.DataFrame:
    """One day of slates with graded labels that the features partly explain."""
    rng = np.random.default_rng(100 + day)
    n = n_queries * slate
    signal = rng.normal(size=n)
    weak = rng.normal(size=n)
    truth = 1.5 * signal + 0.5 * weak + rng.normal(scale=0.8, size=n)
    return pd.DataFrame({
        "query_id": np.repeat([f"d{day}-q{q:03d}" for q in range(n_queries)], slate),
        "item_id": [f"i{i}" for i in rng.integers(0, 50, size=n)],
        "label": np.digitize(truth, [0.8, 1.8, 2.6]).astype(np.int64),
        "f_signal": signal, "f_weak": weak, "f_noise": rng.normal(size=n),
    })


def _dataset(tmp: Path) -> object:
    """Nine train days, two valid days, one test day, as the Dask flow's split holds them."""
    from rankloop import stages
    from rankloop.distributed import FeaturePart, PartitionedSplit

    def part(i: int) -> FeaturePart:
        frame, day = _day(i), DAY0 + timedelta(days=i)
        path = tmp / "features" / f"{day.isoformat()}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        return FeaturePart(day=day, path=path, rows=len(frame), groups=group_sizes(frame))

    test = part(11)  # the test week as partitioned_dataset writes it: one file
    split = PartitionedSplit(train=tuple(part(i) for i in range(9)), valid=(part(9), part(10)),
                             valid_start=datetime(2026, 10, 10, tzinfo=UTC), test_start=datetime(2026, 10, 12, tzinfo=UTC),
                             paths={"test": test.path}, test_rows=test.rows, test_queries=len(test.groups))
    from models.training import SplitParts

    assert isinstance(split, SplitParts)  # the Dask split reads as the local one where the stages share code
    return stages.Dataset(split=split, feature_set="test", feature_set_hash="test", features=FEATURES, impressions=0)


def _settings(**ranker: object) -> object:
    from core.settings import Settings

    settings = Settings()
    overrides = {"n_estimators": 25, "num_leaves": 7, "min_child_samples": 10, "early_stopping_rounds": None} | ranker
    return settings.model_copy(update={"ranker": settings.ranker.model_copy(update=overrides)})


def test_training_gives_the_same_model_every_run(client: object, tmp_path: Path) -> None:
    """Partitions go to workers round robin by day and lightgbm.dask sees them in day order, so two
    trainings on the same data give the same booster (the keys differ every time: before the parts
    were ordered by a set of keys, which changed the workers' ranks and row order, and the model)."""
    from rankloop.distributed import train_ranker_distributed

    dataset, settings = _dataset(tmp_path), _settings()
    first = train_ranker_distributed(settings, dataset, tmp_path / "a", client)
    second = train_ranker_distributed(settings, dataset, tmp_path / "b", client)
    text = first.model_path.read_text()
    assert text.count("Tree=") == 25
    assert second.model_path.read_text() == text
    assert second.report == first.report
    assert first.report["ndcg_at_10"] > first.baselines["popularity"]["ndcg_at_10"]  # it learned something


def test_capped_training_reads_query_id_for_the_cap(client: object, tmp_path: Path) -> None:
    """Regression (00ee9c4): with ranker.max_train_queries the partitions are capped by their query ids
    while training selects only the features; the partition reader once received the selected
    features as its columns (dask.dataframe.from_map projection), lost query_id and training failed.
    The capped training must use exactly the queries models.training.cap_queries keeps."""
    from rankloop.distributed import train_ranker_distributed

    dataset = _dataset(tmp_path)
    whole = pd.concat([pd.read_parquet(p.path) for p in dataset.split.train], ignore_index=True)
    cap = 150  # of 360 train queries
    settings = _settings(max_train_queries=cap)
    trained = train_ranker_distributed(settings, dataset, tmp_path / "capped", client)
    kept = cap_queries(whole, cap, seed=settings.ranker.seed)
    assert kept["query_id"].nunique() == cap
    assert trained.params["train_rows_available"] == len(whole)
    assert trained.params["train_rows_used"] == len(kept) < len(whole)
    assert trained.model_path.read_text().count("Tree=") == 25


def _trees(model_text: str) -> list[str]:
    return model_text.split("end of trees")[0].split("Tree=")[1:]


def test_early_stopping_grows_trees_in_rounds_and_keeps_a_single_fits_trees(client: object, tmp_path: Path) -> None:
    """lightgbm.dask has no early stopping: the trees grow in rounds, each continuing the booster and
    growing the fewest trees after which training could end, until the whole validation set's curve has
    gone ``early_stopping_rounds`` trees without improving: the trees a local fit's early stopping grows.
    Without row or feature sampling a continued fit grows the very trees one fit grows; the iteration
    kept is the one the whole curve gives."""
    from models.dask_ranker import early_stopping_iteration
    from rankloop.distributed import train_ranker_distributed

    dataset = _dataset(tmp_path)
    exact = {"bagging_freq": 0, "feature_fraction": 1.0, "learning_rate": 0.3}
    stopped = train_ranker_distributed(_settings(n_estimators=300, early_stopping_rounds=5, **exact), dataset,
                                       tmp_path / "rounds", client)
    grown, best = stopped.params["trees_trained"], stopped.best_iteration
    assert grown == best + 5 < 300  # stopped where LightGBM's early stopping stops
    # The fits the loop made: each round grew next_round's trees on the curve so far (the curve recorded is
    # the whole one: best + 5 trees)
    from models.dask_ranker import next_round
    from models.dask_ranker import stopped as has_stopped

    settings = _settings(n_estimators=300, early_stopping_rounds=5, **exact).ranker
    whole = {k: np.asarray(stopped.evals_result["valid"][f"ndcg@{k}"]) for k in (5, 10)}
    done, fits = 0, 0
    while True:
        done += next_round([({k: v[:done] for k, v in whole.items()}, 1)] if done else [], done, settings)
        fits += 1
        if done >= 300 or has_stopped([({k: v[:done] for k, v in whole.items()}, 1)], settings):
            break
    assert (done, fits) == (grown, stopped.params["fit_rounds"])
    curve = stopped.evals_result["valid"]["ndcg@10"]
    assert early_stopping_iteration(curve, 5) == best and len(curve) == best + 5
    assert "[num_iterations: 300]" in stopped.model_path.read_text()  # the configured trees, as a local model reads
    assert stopped.params["n_estimators"] == 300

    one_fit = train_ranker_distributed(_settings(n_estimators=grown, early_stopping_rounds=None, **exact), dataset,
                                       tmp_path / "one", client)
    assert one_fit.params["trees_trained"] == grown
    assert _trees(stopped.model_path.read_text()) == _trees(one_fit.model_path.read_text())[:best]


def test_the_validation_curve_reads_the_queries_max_valid_queries_keeps(client: object, tmp_path: Path) -> None:
    """ranker.max_valid_queries on Dask: the curve early stopping reads is over the valid days' queries with a
    relevant item, at most the cap of them, by the seeded hash the local run caps with (cap_queries over the
    relevant rows): the rows used and available are recorded, and the curve is the capped queries', not the
    whole week's."""
    from models.training import with_positive_label
    from rankloop.distributed import train_ranker_distributed

    dataset = _dataset(tmp_path)
    relevant = with_positive_label(pd.concat([pd.read_parquet(p.path) for p in dataset.split.valid],
                                             ignore_index=True))
    cap = 30  # of 80 valid queries
    assert relevant["query_id"].nunique() > cap
    capped = train_ranker_distributed(_settings(max_valid_queries=cap), dataset, tmp_path / "capped", client)
    whole = train_ranker_distributed(_settings(max_valid_queries=None), dataset, tmp_path / "whole", client)
    kept = cap_queries(relevant, cap, seed=capped.params["seed"])
    assert kept["query_id"].nunique() == cap
    assert capped.params["max_valid_queries"] == cap and whole.params["max_valid_queries"] is None
    assert capped.params["valid_rows_available"] == whole.params["valid_rows_available"] == len(relevant)
    assert capped.params["valid_rows_used"] == len(kept) < len(relevant) == whole.params["valid_rows_used"]
    assert capped.model_path.read_text() == whole.model_path.read_text()  # no early stopping: the same trees
    assert capped.evals_result["valid"]["ndcg@10"] != whole.evals_result["valid"]["ndcg@10"]
