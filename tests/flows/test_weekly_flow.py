"""The weekly retrain under a real Prefect API, against a real (SQLite) MLflow store."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from rankloop.simulator import SimulationConfig

END = datetime(2026, 11, 16, tzinfo=UTC)
SMALL = SimulationConfig(n_users=400, n_items=120, weeks=5, requests_per_user_week=3.0, end=END, seed=5)

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weekly") / "home"


@pytest.fixture
def env(home: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None) -> Path:
    from core.settings import Settings
    from rankloop.demo import ensure_demo_source

    monkeypatch.setenv("RANKLOOP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RANKLOOP_OPS__NOTIFY_FILE", str(home / "notifications.jsonl"))
    monkeypatch.setenv("RANKLOOP_RANKER__N_ESTIMATORS", "120")
    ensure_demo_source(Settings(), SMALL)
    return home


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _versions(name: str) -> list[int]:
    return sorted(int(v.version) for v in _client().search_model_versions(f"name = '{name}'"))


def test_first_run_trains_logs_registers_and_promotes(env: Path) -> None:
    from flows.weekly import weekly_retrain

    summary = weekly_retrain(window_end=date(2026, 11, 16))
    assert summary["status"] == "completed" and summary["version"] == 1
    assert summary["champion_before"] is None and summary["champion_after"] == 1
    run = _client().get_run(summary["run_id"])
    for metric in ("ndcg_at_5", "ndcg_at_10", "popularity_ndcg_at_10", "map_at_10", "mrr"):
        assert metric in run.data.metrics, metric
    assert _client().get_experiment(run.info.experiment_id).name == "rankloop"
    curve = _client().get_metric_history(summary["run_id"], "valid_ndcg_at_10")
    assert len(curve) > 1 and [m.step for m in curve] == sorted(m.step for m in curve)
    assert "train_ndcg_at_5" in run.data.metrics
    assert run.data.metrics["ndcg_at_10"] > run.data.metrics["popularity_ndcg_at_10"]
    assert run.data.metrics["ndcg_at_10"] > run.data.metrics["similarity_ndcg_at_10"]
    assert int(_client().get_model_version_by_alias("rankloop.ranker", "champion").version) == 1
    assert run.data.tags["rankloop.snapshot_digest"] == summary["snapshot_digest"]
    # The snapshot is the run's dataset input (MLflow's Datasets tab), named by its digest.
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == summary["snapshot_digest"][:36]
    assert summary["snapshot_digest"] in inputs[0].dataset.source
    assert [t.value for t in inputs[0].tags if t.key == "mlflow.data.context"] == ["training"]
    # Every table kind was refit, judged off-policy and registered.
    for kind in ("bandit", "linucb", "qtable"):
        assert summary["tables"][kind]["version"] == 1
        assert _versions(f"rankloop.{kind}") == [1]
    # Artifacts live in the data home, not in ./mlruns.
    assert (env / "mlflow.db").exists()
    assert run.info.artifact_uri.startswith((env / "mlartifacts").as_uri())
    # The run's intermediate Parquet (valid events, split) is gone; its model stays in the workdir.
    workdirs = [p for p in (env / "runs" / "2026-11-16").iterdir() if (p / "model.txt").exists()]
    assert len(workdirs) == 1 and not (workdirs[0] / "data").exists()
    assert (workdirs[0] / "bandit").is_dir()


def test_same_window_again_returns_the_earlier_results(env: Path) -> None:
    from flows.weekly import weekly_retrain

    before = _versions("rankloop.ranker")
    summary = weekly_retrain(window_end=date(2026, 11, 16))
    assert summary["reused_run"] is True
    assert _versions("rankloop.ranker") == before


def test_forced_retrain_of_the_same_data_changes_nothing(env: Path) -> None:
    """No churn: the same data and settings give the champion's model again, recorded as unchanged."""
    from flows.weekly import weekly_retrain

    versions = {kind: _versions(f"rankloop.{kind}") for kind in ("ranker", "bandit", "linucb", "qtable")}
    aliases = {kind: _aliases(f"rankloop.{kind}") for kind in versions}
    summary = weekly_retrain(window_end=date(2026, 11, 16), force=True)
    assert summary["ranker_status"] == "unchanged" and summary["version"] is None
    assert "champion v1" in summary["reasons"][0]
    assert summary["champion_before"] == summary["champion_after"] == 1
    champions = [kind for kind in ("bandit", "linucb", "qtable") if "champion" in aliases[kind]]
    assert champions, "the first run promoted no table: nothing to compare with"
    for kind in champions:  # a table without a champion has nothing to be identical to
        assert summary["tables"][kind]["status"] == "unchanged", (kind, summary["tables"][kind])
        assert _versions(f"rankloop.{kind}") == versions[kind]  # nothing registered
    assert _versions("rankloop.ranker") == versions["ranker"]
    assert {kind: _aliases(f"rankloop.{kind}") for kind in versions} == aliases  # nothing moved
    assert _client().get_run(summary["run_id"]).data.tags["rankloop.verdict"] == "UNCHANGED"


def test_forced_retrain_never_promotes_a_worse_model(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.weekly import weekly_retrain

    # Another model, judged against champion 1: early stopping keeps about one tree on this small log, so
    # fewer rounds alone can train the very same model (then it is unchanged, not a version 2).
    monkeypatch.setenv("RANKLOOP_RANKER__N_ESTIMATORS", "4")
    monkeypatch.setenv("RANKLOOP_RANKER__NUM_LEAVES", "3")
    monkeypatch.setenv("RANKLOOP_RANKER__SEED", "7")
    tables_before = {kind: _aliases(f"rankloop.{kind}").get("champion") for kind in ("bandit", "linucb", "qtable")}
    summary = weekly_retrain(window_end=date(2026, 11, 16), force=True)
    assert summary["version"] == 2 and summary["champion_before"] == 1
    figures = _client().get_run(summary["run_id"]).data.metrics
    champion = int(_client().get_model_version_by_alias("rankloop.ranker", "champion").version)
    if summary["promoted"]:
        assert champion == 2 and summary["verdict"] == "PASS" and summary["ranker_status"] == "promoted"
        assert figures["gate.ndcg_diff_lower"] >= -figures["gate.tolerance"]
    else:
        assert champion == 1 and summary["verdict"] in {"HOLD", "FAIL"} and summary["ranker_status"] == "held"
    # Tables: a refit whose OPE lower bound is below the champion's estimate is not promoted.
    for kind, info in summary["tables"].items():
        alias = _aliases(f"rankloop.{kind}").get("champion")
        if info["promoted"]:
            run = _client().get_run(info["run_id"]).data.metrics
            estimator = "pdwis" if kind == "qtable" else "snips"
            assert alias == info["version"]
            if tables_before[kind] is not None:
                assert run[f"ope_{estimator}_low"] >= run["champion_ope_estimate"]
        else:
            assert alias == tables_before[kind], (kind, info)


def test_a_failed_run_reports_its_stage_and_moves_nothing(env: Path, tmp_path: Path) -> None:
    from flows.weekly import weekly_retrain

    before = _aliases()
    missing = tmp_path / "nope.db"
    with pytest.raises(Exception, match="nope.db does not exist"):
        weekly_retrain(window_end=date(2026, 11, 16), source_uri=f"sqlite:///{missing}")
    lines = (env / "notifications.jsonl").read_text().splitlines()
    report = json.loads(lines[-1])
    assert report["status"] == "failed" and report["stage"] == "extract"
    assert _aliases() == before


def _aliases(name: str = "rankloop.ranker") -> dict[str, int]:
    from mlflow.exceptions import MlflowException

    try:
        model = _client().get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: int(v) for alias, v in model.aliases.items()}
