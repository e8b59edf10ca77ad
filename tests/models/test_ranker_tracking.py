"""log_ranker_run against a real MLflow sqlite store in a temporary directory."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from models import baselines, metrics
from models.tracking import log_ranker_run, run_name

MODEL_NAME = "test.ranker"
WINDOW = (datetime(2026, 10, 12, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC))


@pytest.fixture(scope="module")
def logged(fitted_ranker, train_split, test_split, tmp_path_factory):
    """One run logged into a fresh sqlite store; yields (client, run, model_info, workdir)."""
    workdir = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("ranker-test", artifact_location=(workdir / "artifacts").as_uri())
        report = metrics.ranking_report(test_split.y, fitted_ranker.predict(test_split.X), test_split.group)
        baseline_reports = {
            "popularity": metrics.ranking_report(
                test_split.y, baselines.popularity_scores(train_split.frame, test_split.frame), test_split.group),
            "similarity": metrics.ranking_report(
                test_split.y, baselines.similarity_scores(test_split.frame), test_split.group),
        }
        params = {"source": {"uri": "postgresql://reader:hunter2@db/app", "password": "hunter2",
                             "dsn": "host=db user=reader password=hunter2 dbname=app"},
                  "labels": {"levels": 10}, "features": {"windows_days": [1, 7, 28]}}
        with mlflow.start_run(experiment_id=experiment, run_name=run_name(WINDOW[1], "ranker_default")) as run:
            info = log_ranker_run(
                fitted_ranker, test_report=report, baselines=baseline_reports, feature_set_name="ranker_default",
                feature_set_hash="abc123", params=params, window=WINDOW, snapshot_digest="sha256:feed",
                code_version="deadbeef", registered_model_name=MODEL_NAME,
            )
        client = MlflowClient()
        yield client, client.get_run(run.info.run_id), info, workdir, report
    finally:
        mlflow.set_tracking_uri(previous)


def test_run_name_is_readable():
    assert run_name(WINDOW[1], "ranker_default") == "ranker 2026-11-16 ranker_default"


def test_logging_outside_a_run_is_refused(fitted_ranker):
    with pytest.raises(ValueError, match="needs an active MLflow run"):
        log_ranker_run(fitted_ranker, test_report={}, baselines={}, feature_set_name="f", feature_set_hash="h",
                       params={}, window=WINDOW, snapshot_digest="d", code_version="c")


def test_final_metrics_and_baselines_are_logged(logged, fitted_ranker):
    _, run, _, _, report = logged
    logged_metrics = run.data.metrics
    for key in ("ndcg_at_5", "ndcg_at_10", "map_at_10", "mrr"):
        assert logged_metrics[key] == pytest.approx(report[key])
        assert f"popularity_{key}" in logged_metrics and f"similarity_{key}" in logged_metrics
    assert logged_metrics["best_iteration"] == fitted_ranker.best_iteration_
    assert logged_metrics["ndcg_at_10"] > logged_metrics["popularity_ndcg_at_10"]


def test_learning_curves_are_step_metrics(logged, fitted_ranker):
    client, run, _, _, _ = logged
    for dataset in ("train", "valid"):
        for k in (5, 10):
            history = client.get_metric_history(run.info.run_id, f"{dataset}_ndcg_at_{k}")
            expected = fitted_ranker.evals_result_[dataset][f"ndcg@{k}"]
            assert sorted(m.step for m in history) == list(range(1, len(expected) + 1))
            by_step = {m.step: m.value for m in history}
            assert [by_step[s] for s in range(1, len(expected) + 1)] == pytest.approx(expected)


def test_params_are_flat_and_never_hold_a_password(logged):
    _, run, _, _, _ = logged
    params = run.data.params
    assert params["ranker.learning_rate"] == "0.1"
    assert params["labels.levels"] == "10"
    assert params["features.windows_days"] == "[1, 7, 28]"
    assert params["source.uri"] == "postgresql://reader:***@db/app"
    assert params["source.dsn"] == "host=db user=reader password=*** dbname=app"
    assert "source.password" not in params
    assert not any("hunter2" in v for v in params.values())


def test_lineage_tags(logged):
    _, run, _, _, _ = logged
    tags = run.data.tags
    assert tags["feature_set"] == "ranker_default" and tags["feature_set_hash"] == "abc123"
    assert tags["window_start"] == "2026-10-12T00:00:00+00:00" and tags["window_end"] == "2026-11-16T00:00:00+00:00"
    assert tags["snapshot_digest"] == "sha256:feed" and tags["code_version"] == "deadbeef"
    assert tags["mlflow.runName"] == "ranker 2026-11-16 ranker_default"


def test_registered_model_version_one_exists(logged):
    client, run, info, _, _ = logged
    assert str(info.registered_model_version) == "1"
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.run_id == run.info.run_id


def test_model_artifact_is_lightgbm_text_not_pickle(logged, fitted_ranker, test_split):
    _, _, info, workdir, _ = logged
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(workdir / "model")))
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert "model.lgb" in files and not any(name.endswith((".pkl", ".pickle", ".skops", ".joblib")) for name in files)
    assert (local / "model.lgb").read_text(encoding="utf-8").startswith("tree")
    loaded = mlflow.lightgbm.load_model(f"models:/{MODEL_NAME}/1")
    assert np.allclose(loaded.predict(test_split.X.to_numpy(dtype=float)), fitted_ranker.predict(test_split.X))


def test_pyfunc_serves_the_feature_frame(logged, fitted_ranker, test_split):
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1")
    assert model.metadata.get_input_schema().input_names() == fitted_ranker.feature_names_
    assert np.allclose(np.asarray(model.predict(test_split.X)).ravel(), fitted_ranker.predict(test_split.X))


def test_run_artifacts_hold_text_model_feature_set_and_importance(logged, fitted_ranker):
    _, run, _, workdir, _ = logged
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(workdir / "run")))
    assert (local / "ranker" / "model.txt").read_text(encoding="utf-8") == fitted_ranker.model_to_string()
    feature_set = json.loads((local / "ranker" / "feature_set.json").read_text(encoding="utf-8"))
    assert feature_set == {"name": "ranker_default", "hash": "abc123", "features": fitted_ranker.feature_names_}
    importance = json.loads((local / "feature_importance.json").read_text(encoding="utf-8"))
    assert importance["columns"] == ["feature", "gain", "gain_share", "split"]
    assert importance["data"][0][0] == "emb_cos_user_profile"  # the planted signal
    assert (local / "feature_importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("int64", "long"), ("Int64", "long"), ("int32", "integer"), ("float32", "float"), ("float64", "double"),
     ("bool", "boolean"), (None, "double"), ("not-a-dtype", "double")],
)
def test_signature_column_types_follow_the_training_dtypes(dtype, expected):
    from models.tracking import _column_type

    assert _column_type(dtype) == expected
