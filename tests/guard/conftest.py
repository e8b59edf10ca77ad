"""Guard fixtures: a registry store with tiny ranker versions, and a trained simulated data home."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.settings import Settings
from rankloop.simulator import SimulationConfig

FEATURES = ["f_pop", "f_sim", "f_fresh"]
END = datetime(2026, 11, 16, tzinfo=UTC)
SMALL = SimulationConfig(n_users=400, n_items=120, weeks=5, requests_per_user_week=3.0, end=END, seed=5)


@dataclass
class Store:
    home: Path
    settings: Settings
    client: MlflowClient


def point_mlflow_at(mp: pytest.MonkeyPatch, home: Path) -> Store:
    """RANKLOOP_HOME and MLflow's globals name this home's store (undone by ``mp``)."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    settings = Settings(home=home)
    mp.setenv("RANKLOOP_HOME", str(home))
    mp.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    mp.setenv("MLFLOW_REGISTRY_URI", settings.tracking_uri)
    mp.delenv("MLFLOW_TRACKING_URI")
    mp.delenv("MLFLOW_REGISTRY_URI")
    mp.setattr(tracking_utils, "_tracking_uri", settings.tracking_uri)
    mp.setattr(registry_utils, "_registry_uri", settings.tracking_uri)
    home.mkdir(parents=True, exist_ok=True)
    return Store(home, settings, MlflowClient(settings.tracking_uri, settings.tracking_uri))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with pytest.MonkeyPatch.context() as mp:
        yield point_mlflow_at(mp, tmp_path / "home")


def tiny_model_text(seed: int, features: list[str] = FEATURES) -> str:
    """A 5-tree LambdaRank model (LightGBM text) on random queries."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, len(features)))
    y = (X[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    params = {"objective": "lambdarank", "verbose": -1, "num_leaves": 4, "min_data_in_leaf": 5, "seed": seed}
    return lgb.train(params, lgb.Dataset(X, y, group=[10] * 20, feature_name=features), num_boost_round=5).model_to_string()


def register(store: Store, model_text: str, manifest_features: list[str] = FEATURES) -> int:
    """Log ``model_text`` as ``ranker/model.txt`` of a run, register it, publish its manifest."""
    from registry.publish import publish

    client = store.client
    experiment = client.get_experiment_by_name("rankloop")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "rankloop", artifact_location=(store.home / "mlartifacts" / "rankloop").resolve().as_uri())
    run_id = client.create_run(experiment_id).info.run_id
    client.log_text(run_id, model_text, "ranker/model.txt")
    client.log_text(run_id, json.dumps({"name": "tiny", "hash": "h", "features": manifest_features}),
                    "ranker/feature_set.json")
    client.set_terminated(run_id)
    with contextlib.suppress(MlflowException):
        client.create_registered_model("rankloop.ranker")
    version = int(client.create_model_version("rankloop.ranker", f"runs:/{run_id}/ranker", run_id=run_id).version)
    publish("ranker", version, client=client, settings=store.settings, window={"start": "a", "end": "b"},
            snapshot_digest="d", contract_suite_version="1", params={}, metrics={},
            feature_set={"name": "tiny", "hash": "h", "features": manifest_features})
    return version


def requests_frame(tags_rates: dict[str, tuple[int, float]], *, days: float = 3.0, seed: int = 0) -> pd.DataFrame:
    """Served requests (``rankloop.ab.request_outcomes`` columns): per policy_version, (requests, click rate)."""
    rng = np.random.default_rng(seed)
    frames = []
    for tag, (n, rate) in tags_rates.items():
        clicks = rng.binomial(10, rate, n)
        frames.append(pd.DataFrame({"request_id": [f"{tag}-{i}" for i in range(n)], "policy_version": tag,
                                    "impressions": 10, "clicks": clicks, "engaged": clicks,
                                    "click_rate": clicks / 10, "engagement_rate": clicks / 10}))
    out = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    out["ts"] = pd.Timestamp("2026-11-16", tz="UTC") + pd.to_timedelta(np.sort(rng.random(len(out))) * days, unit="D")
    return out


# --- a trained simulated home (one weekly retrain), shared by the slow tests ----------------------
@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory, prefect_api: None) -> Path:
    """A simulated demo source and its first weekly retrain (ranker v1 champion); copy it before changing it."""
    from flows.weekly import weekly_retrain
    from rankloop.demo import ensure_demo_source

    home = tmp_path_factory.mktemp("guard-trained") / "home"
    with pytest.MonkeyPatch.context() as mp:
        point_mlflow_at(mp, home)
        mp.setenv("RANKLOOP_RANKER__N_ESTIMATORS", "120")
        ensure_demo_source(Settings(home=home), SMALL)
        summary = weekly_retrain(window_end=date(2026, 11, 16))
    assert summary["status"] == "completed" and summary["champion_after"] == 1, summary
    return home


@pytest.fixture
def home_copy(trained_home: Path, tmp_path: Path) -> Iterator[Store]:
    """A private copy of the trained home (its runs' artifacts stay readable in the original)."""
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    with pytest.MonkeyPatch.context() as mp:
        yield point_mlflow_at(mp, home)
