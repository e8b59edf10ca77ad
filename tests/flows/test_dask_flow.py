"""The weekly retrain on a 2-worker distributed.LocalCluster against the local run on the same demo data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rankloop.simulator import SimulationConfig

END = datetime(2026, 11, 16, tzinfo=UTC)
SMALL = SimulationConfig(n_users=700, n_items=150, weeks=5, requests_per_user_week=3.0, end=END, seed=11)

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dask-vs-local")
    return {"local": root / "local", "dask": root / "dask"}


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    from rankloop.demo import ensure_demo_source
    from rankloop.settings import Settings

    monkeypatch.setenv("RANKLOOP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RANKLOOP_RANKER__N_ESTIMATORS", "120")
    ensure_demo_source(Settings(), SMALL)


@pytest.fixture(scope="module")
def runs(homes: dict[str, Path], cluster: str, prefect_api: None) -> dict[str, dict]:
    """The local flow and the Dask flow, each on its own copy of the same simulated source."""
    from flows.weekly import weekly_retrain
    from flows.weekly_dask import run

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        _use_home(mp, homes["local"])
        out["local"] = weekly_retrain(window_end=date(2026, 11, 16))
    with pytest.MonkeyPatch.context() as mp:
        _use_home(mp, homes["dask"])
        mp.setenv("RANKLOOP_EXECUTOR__KIND", "dask")
        mp.setenv("RANKLOOP_EXECUTOR__ADDRESS", cluster)
        out["dask"] = run(window_end=date(2026, 11, 16))
    return out


def test_same_rows_extracted_and_quarantined(runs: dict[str, dict]) -> None:
    local, dask = runs["local"], runs["dask"]
    assert dask["status"] == local["status"] == "completed"
    assert dask["rows_in"] == local["rows_in"] > 0
    assert dask["rows_quarantined"] == local["rows_quarantined"]
    assert dask["impressions"] == local["impressions"] > 0
    assert dask["executor"]["kind"] == "dask" and "address" in dask["executor"]


def test_ndcg_within_tolerance_and_gate_runs(runs: dict[str, dict]) -> None:
    local, dask = runs["local"], runs["dask"]
    print(f"test NDCG@10 local {local['ndcg_at_10']:.4f} dask {dask['ndcg_at_10']:.4f}; "
          f"best iteration local {local['best_iteration']} dask {dask['best_iteration']}")
    assert abs(dask["ndcg_at_10"] - local["ndcg_at_10"]) <= 0.01, (dask["ndcg_at_10"], local["ndcg_at_10"])
    # The baselines see the same test week and history: identical.
    assert dask["popularity_ndcg_at_10"] == pytest.approx(local["popularity_ndcg_at_10"], abs=1e-12)
    assert dask["version"] == 1 and dask["champion_after"] == 1  # same registry/gate code: first version promoted
    for kind in ("bandit", "linucb", "qtable"):
        assert dask["tables"][kind]["version"] == 1


def test_executor_recorded_in_mlflow(runs: dict[str, dict], homes: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from rankloop.settings import Settings, apply_environment

    monkeypatch.setenv("RANKLOOP_HOME", str(homes["dask"]))
    apply_environment(Settings())
    params = MlflowClient().get_run(runs["dask"]["run_id"]).data.params
    assert params["executor.kind"] == "dask"
    assert params["executor.address"].startswith("tcp://")


def test_feature_values_match_on_a_sample(runs: dict[str, dict], homes: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Features of the Dask run's day partitions equal the local build's for the same impressions."""
    import pyarrow.parquet as pq

    import data_contracts
    import features
    from rankloop import stages
    from rankloop.settings import Settings

    monkeypatch.setenv("RANKLOOP_HOME", str(homes["local"]))
    settings = Settings().model_copy(update={"window": Settings().window.model_copy(update={"end": date(2026, 11, 16)})})
    start, end = settings.window.resolve()
    extracted = stages.extract(settings, start, end)
    assert extracted.reused  # the local run's snapshot
    result = data_contracts.validate_interactions(pq.read_table(extracted.snapshot_path), window=(start, end),
                                                  settings=settings.contracts)
    events = result.valid.to_pandas()
    imps = features.impressions(events, settings.labels)
    fset = features.get_feature_set(settings.features.feature_set)
    X = features.build_features(imps, events, items=extracted.items.to_pandas(), users=extracted.users.to_pandas(),
                                settings=settings.features)
    local = pd.concat([imps[["query_id", "item_id", "label"]], X], axis=1)
    files = sorted((homes["dask"] / "runs").glob("*/*/features/*.parquet"))
    assert len(files) >= 30  # one partition per day of the 35-day window that has queries
    dask = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(dask) == len(local)
    keys = ["query_id", "item_id"]
    assert not local.duplicated(keys).any()
    sample = local.sample(n=500, random_state=0)
    merged = sample.merge(dask, on=keys, suffixes=("_l", "_d"), validate="one_to_one")
    assert len(merged) == len(sample)
    for col in (*fset.features, "label"):
        a, b = merged[f"{col}_l"].to_numpy(dtype=np.float64), merged[f"{col}_d"].to_numpy(dtype=np.float64)
        assert np.array_equal(a, b, equal_nan=True), col


def test_the_weekly_flow_dispatches_to_dask_by_configuration(runs: dict[str, dict], homes: dict[str, Path],
                                                              cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """flows.weekly.weekly_retrain with the dask executor finds the Dask run's key (the local path's
    snapshot digest differs), so it went through flows.weekly_dask."""
    from flows.weekly import weekly_retrain

    _use_home(monkeypatch, homes["dask"])
    monkeypatch.setenv("RANKLOOP_EXECUTOR__KIND", "dask")
    monkeypatch.setenv("RANKLOOP_EXECUTOR__ADDRESS", cluster)
    again = weekly_retrain(window_end=date(2026, 11, 16))
    assert again["run_id"] == runs["dask"]["run_id"]
    assert again["snapshot_digest"] == runs["dask"]["snapshot_digest"] != runs["local"]["snapshot_digest"]
