"""The position-corrected ranker through the weekly stages: trained, recorded in the manifest and the
MLflow run, registered, loaded by ``registry.load`` and served from request-time features alone, and
the run's test figures are what the served model scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from core.settings import Settings
from models.metrics import per_query_ndcg
from models.training import group_sizes, with_positive_label
from rankloop import stages
from rankloop.simulator import SimulationConfig
from tests.simulated import stage_inputs

END = datetime(2026, 11, 16, tzinfo=UTC)
CONFIG = SimulationConfig(n_users=300, n_items=80, weeks=5, requests_per_user_week=3.0, end=END, seed=3)
RANKER = {"n_estimators": 20, "early_stopping_rounds": None, "num_threads": 1}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("position_bias") / "home"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[stages.Validated, stages.Extracted]:
    """The simulated window as the validate stage would leave it, and the catalogue."""
    return stage_inputs(CONFIG, tmp_path_factory.mktemp("events"))


@pytest.fixture
def settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setenv("RANKLOOP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(home=home, ranker=RANKER | {"position_bias": "lightgbm"})
    # apply_environment() (called by the stages) sets MLflow's globals: undo them after the test
    monkeypatch.setattr(tracking_utils, "_tracking_uri", settings.tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", settings.tracking_uri)
    return settings


@pytest.fixture
def run(settings: Settings, inputs, home: Path):
    validated, extracted = inputs
    workdir = home / "run"
    dataset = stages.build_dataset(settings, validated, extracted, END, workdir)
    trained = stages.train_ranker(settings, dataset, workdir)
    ctx = stages.RunContext(start=END - timedelta(days=35), end=END, workdir=workdir, run_name="test", actor="test")
    recorded = stages.record_ranker(settings, ctx, extracted, validated, dataset, trained)
    return dataset, trained, recorded


def test_the_corrected_ranker_is_recorded_registered_and_served_without_slots(settings: Settings, run) -> None:
    from registry import load
    from registry.promote import promote
    from registry.store import make_client

    dataset, trained, recorded = run
    assert "ctx_position" not in dataset.features
    assert trained.params["position_bias"] == "lightgbm" and trained.params["position_bias_applied"] == "lightgbm"
    # the manifest records the setting (the ranker's parameters and the run's configuration)
    assert recorded.manifest["params"]["position_bias"] == "lightgbm"
    assert recorded.manifest["params"]["position_bias_applied"] == "lightgbm"
    assert recorded.manifest["config"]["ranker"]["position_bias"] == "lightgbm"
    # and what the fit read of each week: the caps (on by default), the rows used and available
    manifest = recorded.manifest
    assert manifest["config"]["ranker"]["max_valid_queries"] == manifest["params"]["max_valid_queries"] == 50_000
    valid = with_positive_label(dataset.split.read("valid", ["query_id", "label"]))
    assert manifest["params"]["valid_rows_used"] == manifest["params"]["valid_rows_available"] == len(valid) > 0
    assert manifest["params"]["train_rows_used"] == manifest["params"]["train_rows_available"] == dataset.split.sizes()["train_rows"]
    params = MlflowClient(settings.tracking_uri).get_run(recorded.run_id).data.params
    assert params["ranker.position_bias"] == "lightgbm"
    assert params["ranker.position_bias_regularization"] == "0.0"

    promote("ranker", recorded.version, decision=None, actor="test", reason="position bias test", forced=True,
            client=make_client(settings))
    served = load("ranker", settings=settings)
    features = list(dataset.features)
    test = with_positive_label(dataset.split.read("test", ["query_id", "label", "position", *features]))
    scores = served.predict(test[features])  # request-time features only: no slot at serving
    np.testing.assert_array_equal(per_query_ndcg(test["label"], scores, group_sizes(test), 10),
                                  trained.per_query_ndcg)  # the run's figures are the served model's
    with pytest.raises(ValueError, match=r"extra \['position'\]"):
        served.predict(test[[*features, "position"]])


def test_the_setting_changes_the_model(settings: Settings, run, home: Path) -> None:
    dataset, trained, _ = run
    plain = settings.model_copy(update={"ranker": settings.ranker.model_copy(update={"position_bias": "none"})})
    uncorrected = stages.train_ranker(plain, dataset, home / "uncorrected")
    assert uncorrected.params["position_bias_applied"] == "none"
    assert uncorrected.model_path.read_text() != trained.model_path.read_text()
