"""The serving loader: feature-set checks, the cache, serving from cache when the store is down, policy kinds."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core.errors import Reason, RegistryError
from core.settings import Settings
from registry import load
from registry.promote import promote
from registry.publish import publish

from .conftest import FEATURES, Store, experiment_id, feature_frame, register_ranker, tiny_booster


def _closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


@pytest.fixture(scope="module")
def champion(store: Store) -> int:
    v = register_ranker(store, 21)
    promote("ranker", v, decision=None, actor="t", reason="setup", forced=True, client=store.client)
    return v


def _offline(store: Store) -> Settings:
    return Settings(home=store.home, mlflow_tracking_uri=_closed_port_uri())


def test_ranker_predicts_like_its_booster_and_checks_columns(store: Store, champion: int) -> None:
    model = load("ranker", settings=store.settings)
    frame = feature_frame()
    np.testing.assert_allclose(
        model.predict(frame[FEATURES[::-1]]), tiny_booster(21).predict(frame[FEATURES].to_numpy())
    )
    with pytest.raises(ValueError, match=r"missing \['f_fresh'\], extra \['f_other'\]"):
        model.predict(frame.drop(columns="f_fresh").assign(f_other=1.0))
    with pytest.raises(TypeError, match="DataFrame"):
        model.predict(frame.to_numpy())
    with pytest.raises(AttributeError, match=r"offers \['predict'\]"):
        model.sample([1], None)
    assert model.manifest["feature_set"]["features"] == FEATURES and model.path.parent.name == "ranker"


def test_unreachable_store_serves_the_cached_champion_with_a_warning(
    store: Store, champion: int, caplog: pytest.LogCaptureFixture
) -> None:
    load("ranker", settings=store.settings)  # caches it and records the alias pointer
    with caplog.at_level(logging.WARNING, logger="registry.loader"):
        model = load("ranker", settings=_offline(store), probe_timeout=1.0)
    assert (model.version, model.from_cache) == (champion, True)
    assert any("from cache" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert model.predict(feature_frame()).shape == (6,)
    assert model.refresh() is False and model.version == champion


def test_unreachable_store_without_cache_is_unreachable_never_not_found(store: Store, champion: int) -> None:
    with pytest.raises(RegistryError, match="no cached ranker@staging") as info:
        load("ranker", "staging", settings=_offline(store), probe_timeout=1.0)
    assert info.value.reason is Reason.UNREACHABLE
    assert "is unreachable" in str(info.value) and "127.0.0.1" in str(info.value)


def test_tampered_cache_is_refused_offline_and_repaired_online(
    store: Store, champion: int, caplog: pytest.LogCaptureFixture
) -> None:
    model = load("ranker", settings=store.settings)
    original = (model.path / "model.txt").read_text()
    (model.path / "model.txt").write_text(original.replace("tree", "TREE", 1))
    with pytest.raises(RegistryError, match="fails its checksums") as info:
        load("ranker", settings=_offline(store), probe_timeout=1.0)
    assert info.value.reason is Reason.CHECKSUM
    with caplog.at_level(logging.ERROR, logger="registry.cache"):
        repaired = load("ranker", settings=store.settings)
    assert (repaired.path / "model.txt").read_text() == original and not repaired.from_cache
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_unknown_alias_is_not_found(store: Store, champion: int) -> None:
    with pytest.raises(RegistryError, match="no version with alias 'canary'"):
        load("ranker", "canary", settings=store.settings)
    with pytest.raises(ValueError, match="unknown model kind"):
        load("forest", settings=store.settings)


def test_bandit_tables_logged_by_policy_tracking_load_and_serve(store: Store, tmp_path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config.policy import BanditSettings
    from models.policy_tracking import log_policy_run
    from models.thompson import BetaTables

    items = pd.DataFrame({"item_id": ["a", "b"], "successes": [8.0, 1.0], "failures": [2.0, 9.0]})
    user_items = pd.DataFrame(
        {
            "user_id": pd.Series(dtype=object),
            "item_id": pd.Series(dtype=object),
            "successes": [],
            "failures": [],
        }
    )
    tables = BetaTables(
        items=items,
        user_items=user_items,
        settings=BanditSettings(),
        fitted_at=datetime(2026, 11, 16, tzinfo=UTC),
        data_end=None,
    )
    directory = tables.save(tmp_path / "bandit")
    # An experiment of its own with its artifacts here: MLflow's default experiment keeps them in ./mlruns.
    experiment = store.client.create_experiment(f"loader-{tmp_path.name}", artifact_location=(tmp_path / "art").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    version = log_policy_run("bandit", directory, metrics={"avg_reward": 0.5}, params={"p": 1}, ope=None)
    manifest = publish(
        "bandit", version, artifact_dir=directory, client=store.client, metrics={"avg_reward": 0.5}
    )
    assert set(manifest["files"]) == {p.name for p in directory.iterdir()}
    promote(
        "bandit", version, decision=None, actor="t", reason="first tables", forced=True, client=store.client
    )
    served = load("bandit", settings=store.settings)
    np.testing.assert_allclose(served.mean(["a", "b"]), [9 / 12, 2 / 12])
    assert served.sample(["a", "b"], np.random.default_rng(0)).shape == (2,)


def test_ranker_logged_by_models_tracking_publishes_and_serves(store: Store) -> None:
    import mlflow

    from core.config.ranker import RankerSettings
    from models.ranker import Ranker
    from models.tracking import log_ranker_run

    X = feature_frame(200, seed=5)
    y = (X["f_pop"] > 0).astype(int).to_numpy()
    ranker = Ranker.from_settings(RankerSettings(n_estimators=5, min_child_samples=5, num_leaves=4))
    ranker.fit(X, y, group=[10] * 20)
    window = (datetime(2026, 10, 12, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC))
    mlflow.set_experiment("rankloop")
    with mlflow.start_run():
        info = log_ranker_run(
            ranker,
            test_report={"ndcg_at_10": 0.5},
            baselines={},
            feature_set_name="tiny",
            feature_set_hash="h123",
            params={},
            window=window,
            snapshot_digest="d",
            code_version="c",
        )
    version = int(info.registered_model_version)
    manifest = publish(
        "ranker", version, client=store.client, window={"start": "2026-10-12", "end": "2026-11-16"}
    )
    assert manifest["feature_set"]["features"] == FEATURES and set(manifest["files"]) == {
        "model.txt",
        "feature_set.json",
    }
    promote(
        "ranker", version, decision=None, actor="t", reason="real ranker", forced=True, client=store.client
    )
    served = load("ranker", settings=store.settings)
    assert served.version == version
    np.testing.assert_allclose(served.predict(X.head(10)), ranker.predict(X.head(10)))


def _register_tables(store: Store, kind: str, directory) -> int:
    """Register a saved table dir as ``runs:/<run>/tables`` (fast; log_policy_run is covered above)."""
    import contextlib

    from mlflow.exceptions import MlflowException

    client = store.client
    run_id = client.create_run(experiment_id(client)).info.run_id
    client.log_artifacts(run_id, str(directory), "tables")
    with contextlib.suppress(MlflowException):
        client.create_registered_model(f"rankloop.{kind}")
    version = int(
        client.create_model_version(f"rankloop.{kind}", f"runs:/{run_id}/tables", run_id=run_id).version
    )
    publish(kind, version, artifact_dir=directory, artifact_uri=f"runs:/{run_id}/tables", client=client)
    promote(kind, version, decision=None, actor="t", reason="tables", forced=True, client=client)
    return version


def test_qtable_and_linucb_serve_their_verbs(store: Store, tmp_path) -> None:
    from core.config.policy import LinUCBSettings, QLearningSettings
    from models.linucb import ContextEncoding, LinUCB
    from models.qlearning import QTable

    now = datetime(2026, 11, 16, tzinfo=UTC)
    q = np.zeros((1, 27))
    q[0, 7] = 1.0
    qtable = QTable(
        states=np.array([5]),
        q=q,
        visits=np.ones((1, 27)),
        settings=QLearningSettings(),
        episodes=1,
        steps=1,
        fitted_at=now,
        data_end=None,
    )
    _register_tables(store, "qtable", qtable.save(tmp_path / "qtable"))
    served_q = load("qtable", settings=store.settings)
    assert served_q.best_action(5) == 7 and served_q.action_params(7) == qtable.action_params(7)

    encoding = ContextEncoding(features=("device",), vocab={"device": ["mobile"]})
    b = np.zeros((2, encoding.dim))
    b[0] = 1.0
    linucb = LinUCB(
        arms=("a", "b"),
        a=np.stack([np.eye(encoding.dim)] * 2),
        b=b,
        encoding=encoding,
        settings=LinUCBSettings(),
        fitted_at=now,
        data_end=None,
    )
    _register_tables(store, "linucb", linucb.save(tmp_path / "linucb"))
    served_l = load("linucb", settings=store.settings)
    np.testing.assert_allclose(
        served_l.scores({"device": "mobile"}, ["a", "b"]), linucb.scores({"device": "mobile"}, ["a", "b"])
    )
    assert (
        served_l.scores({"device": "mobile"}, ["a", "b"])[0]
        > served_l.scores({"device": "mobile"}, ["a", "b"])[1]
    )
