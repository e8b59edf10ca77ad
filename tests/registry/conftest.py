"""Registry fixtures: a shared MLflow SQLite store per module and tiny LightGBM ranker versions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.settings import Settings

FEATURES = ["f_pop", "f_sim", "f_fresh"]


@dataclass
class Store:
    """One data home with its MLflow store and a client."""

    home: Path
    settings: Settings
    client: MlflowClient


def point_mlflow_at(mp: pytest.MonkeyPatch, home: Path, uri: str | None = None) -> Store:
    """Make RANKLOOP_HOME/MLFLOW_TRACKING_URI (and MLflow's globals) name this store; undone by ``mp``."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    settings = Settings(home=home, mlflow_tracking_uri=uri)
    mp.setenv("RANKLOOP_HOME", str(home))
    # apply_environment() sets MLflow's globals (and their environment variables): undo them all
    mp.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    mp.setenv("MLFLOW_REGISTRY_URI", settings.tracking_uri)
    mp.setattr(tracking_utils, "_tracking_uri", settings.tracking_uri)
    mp.setattr(registry_utils, "_registry_uri", settings.tracking_uri)
    home.mkdir(parents=True, exist_ok=True)
    return Store(home, settings, MlflowClient(settings.tracking_uri, settings.tracking_uri))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A SQLite-backed store shared by the tests of one module (it takes seconds to create)."""
    with pytest.MonkeyPatch.context() as mp:
        yield point_mlflow_at(mp, tmp_path_factory.mktemp("registry") / "home")


def tiny_booster(seed: int, features: list[str] = FEATURES) -> lgb.Booster:
    """A 5-tree LambdaRank model on 20 random queries of 10 items."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, len(features)))
    y = (X[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int) + (X[:, 1] > 1).astype(int)
    data = lgb.Dataset(X, y, group=[10] * 20, feature_name=features)
    params = {"objective": "lambdarank", "verbose": -1, "num_leaves": 4, "min_data_in_leaf": 5, "seed": seed}
    return lgb.train(params, data, num_boost_round=5)


def feature_frame(n: int = 6, seed: int = 0, features: list[str] = FEATURES) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(features))), columns=features)


def experiment_id(client: MlflowClient, name: str = "rankloop") -> str:
    """The experiment's id, created when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    uri = str(client.tracking_uri)
    location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).as_uri() if uri.startswith("sqlite:///") else None
    return client.create_experiment(name, artifact_location=location)


def register_ranker(store: Store, seed: int, *, ndcg: float = 0.5, publish: bool = True) -> int:
    """Log a tiny ranker the way ``models.tracking`` does (run artifacts under ``ranker/``), register it."""
    from registry.publish import publish as do_publish

    client = store.client
    run_id = client.create_run(experiment_id(client)).info.run_id
    feature_set = {"name": "tiny", "hash": "h123", "features": FEATURES}
    client.log_text(run_id, tiny_booster(seed).model_to_string(), "ranker/model.txt")
    client.log_text(run_id, json.dumps(feature_set), "ranker/feature_set.json")
    client.set_terminated(run_id)
    with contextlib.suppress(MlflowException):  # already registered
        client.create_registered_model("rankloop.ranker")
    version = int(
        client.create_model_version("rankloop.ranker", f"runs:/{run_id}/ranker", run_id=run_id).version
    )
    if publish:
        window = {"start": "2026-10-12", "end": "2026-11-16"}
        do_publish(
            "ranker",
            version,
            client=client,
            settings=store.settings,
            metrics={"ndcg_at_10": ndcg},
            window=window,
            snapshot_digest="abc",
            contract_suite_version="1",
            params={"seed": seed},
        )
    return version


def run_artifact_path(store: Store, version: int, relative: str) -> Path:
    """The file a ranker version's run artifact ``ranker/<relative>`` is stored in (local artifact store)."""
    run_id = store.client.get_model_version("rankloop.ranker", str(version)).run_id
    root = store.client.get_run(run_id).info.artifact_uri.removeprefix("file://")
    return Path(root) / "ranker" / relative
