"""log_policy_run against a throwaway sqlite MLflow store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest

from core.config.policy import BanditSettings, OPESettings, QLearningSettings
from models.ope import evaluate_policy
from models.policy import load_policy_table
from models.policy_tracking import download_policy_tables, log_policy_run, table_manifest
from models.qlearning import QTable
from models.qlearning import refit as q_refit
from models.thompson import BetaTables, refit

NOW = datetime(2026, 2, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One sqlite store for the module (creating its tables takes seconds); tests use distinct model names."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.create_experiment("policies-test", artifact_location=(root / "art").as_uri())
        mlflow.set_experiment(experiment_id=experiment)
        yield root
    mlflow.set_tracking_uri(previous)


def _bandit(tmp_path) -> BetaTables:
    imps = pd.DataFrame({"user_id": ["u1", "u2", "u1"], "item_id": ["a", "a", "b"],
                         "ts": [NOW - timedelta(hours=h) for h in (1, 2, 3)], "success": [True, False, True]})
    tables = refit(None, imps, BanditSettings(), NOW)
    tables.save(tmp_path / "bandit")
    return tables


def test_log_policy_run_registers_version_1_and_tables_round_trip(mlflow_store):
    tables = _bandit(mlflow_store)
    ope = evaluate_policy(np.ones(200), np.full(200, 0.5), np.full(200, 0.5), settings=OPESettings(
        bootstrap_samples=50, min_ess=10))
    version = log_policy_run("bandit", mlflow_store / "bandit", metrics={"average_reward": 1.5, "like_rate": 0.2},
                             params={"half_life_days": None}, ope=ope, registered_model_name="test.bandit")
    assert version == 1
    mv = mlflow.MlflowClient().get_model_version("test.bandit", "1")
    run = mlflow.get_run(mv.run_id)
    assert run.data.metrics["average_reward"] == 1.5 and run.data.metrics["ope_ips"] == pytest.approx(1.0)
    assert run.data.tags["ope_verdict"] == "ok"
    local = download_policy_tables("models:/test.bandit/1", mlflow_store / "dl")
    back = load_policy_table(local)
    assert isinstance(back, BetaTables)
    pd.testing.assert_frame_equal(back.items, tables.items)
    pd.testing.assert_frame_equal(back.user_items, tables.user_items)
    assert table_manifest(local) == table_manifest(mlflow_store / "bandit")
    assert not list((mlflow_store / "dl").rglob("*.pkl"))  # models from code: nothing pickled
    model = mlflow.pyfunc.load_model("models:/test.bandit/1")
    assert model.predict(pd.DataFrame({"item_id": ["a", "b"]})) == pytest.approx(tables.mean(["a", "b"]))


def test_second_run_is_version_2_and_qtable_predicts_actions(mlflow_store):
    slates = pd.DataFrame({"user_id": ["u1"], "request_id": ["r1"], "ts": [NOW - timedelta(hours=1)],
                           "action_id": [5], "reward": [1.0], "content_type": ["music"], "mood": ["happy"],
                           "time_of_day": ["night"]})
    table = q_refit(None, slates, QLearningSettings(), NOW)
    table.save(mlflow_store / "q")
    first = log_policy_run("qtable", mlflow_store / "q", metrics={"steps": table.steps}, params={}, ope=None, registered_model_name="test.q")
    second = log_policy_run("qtable", mlflow_store / "q", metrics={}, params={}, ope=None,
                            registered_model_name="test.q")
    assert (first, second) == (1, 2)
    model = mlflow.pyfunc.load_model("models:/test.q/2")
    assert model.predict(slates).tolist() == [5]
    assert isinstance(load_policy_table(mlflow_store / "q"), QTable)


def test_bad_arguments_are_refused(tmp_path):
    mlflow_store = tmp_path
    _bandit(mlflow_store)
    with pytest.raises(ValueError, match="kind must be one of"):
        log_policy_run("ranker", mlflow_store / "bandit", metrics={}, params={}, ope=None)
    with pytest.raises(FileNotFoundError, match="linucb.json"):
        log_policy_run("linucb", mlflow_store / "bandit", metrics={}, params={}, ope=None)
    with pytest.raises(TypeError, match=r"\{'coverage': 'dict'\}"):
        log_policy_run("bandit", mlflow_store / "bandit", metrics={"coverage": {}}, params={}, ope=None)


def test_pyfunc_wrapper_serves_linucb_scores(tmp_path):
    from types import SimpleNamespace

    from core.config.policy import LinUCBSettings
    from models.linucb import refit as lin_refit
    from models.policy_tracking import PolicyTablesModel

    imps = pd.DataFrame({"item_id": ["a", "b"], "device": ["tv", "tv"], "success": [1.0, 0.0],
                         "ts": [NOW - timedelta(hours=1)] * 2})
    table = lin_refit(None, imps, LinUCBSettings(context_features=("device",)), NOW)
    table.save(tmp_path / "lin")
    wrapper = PolicyTablesModel()
    wrapper.load_context(SimpleNamespace(artifacts={"tables": str(tmp_path / "lin")}))
    scores = wrapper.predict(None, pd.DataFrame({"item_id": ["a", "b"], "device": ["tv", "tv"]}))
    assert scores == pytest.approx([table.scores({"device": "tv"}, ["a"])[0], table.scores({"device": "tv"}, ["b"])[0]])
    assert scores[0] > scores[1]
