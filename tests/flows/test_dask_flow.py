"""The weekly retrain on a 2-worker distributed.LocalCluster against the local run on the same demo data."""

from __future__ import annotations

import shutil
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
    return {"local": root / "local", "dask": root / "dask", "dask features": root / "dask-features"}


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    from core.settings import Settings
    from rankloop.demo import ensure_demo_source

    monkeypatch.setenv("RANKLOOP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RANKLOOP_RANKER__N_ESTIMATORS", "120")
    ensure_demo_source(Settings(), SMALL)


@pytest.fixture(scope="module")
def runs(homes: dict[str, Path], cluster: str, prefect_api: None) -> dict[str, dict]:
    """The weekly flow with the local and the dask executor, each on its own copy of the same simulated source."""
    from flows.weekly import weekly_retrain
    from rankloop import distributed

    discard = distributed.discard_intermediates

    def keep_features(workdir: Path) -> None:
        """The completed run's cleanup, after copying its day partitions' features aside (the
        feature comparison below reads them)."""
        shutil.copytree(workdir / "features", homes["dask features"])
        discard(workdir)

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        _use_home(mp, homes["local"])
        out["local"] = weekly_retrain(window_end=date(2026, 11, 16))
    with pytest.MonkeyPatch.context() as mp:
        _use_home(mp, homes["dask"])
        mp.setenv("RANKLOOP_EXECUTOR__KIND", "dask")
        mp.setenv("RANKLOOP_EXECUTOR__ADDRESS", cluster)
        mp.setattr(distributed, "discard_intermediates", keep_features)
        out["dask"] = weekly_retrain(window_end=date(2026, 11, 16))
    return out


def _completed_run_dir(home: Path) -> Path:
    found = [d for d in sorted(home.glob("runs/*/*")) if (d / "model.txt").is_file()]
    assert len(found) == 1, found
    return found[0]


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


def test_the_dask_run_measures_drift_and_replays_the_ranker_as_the_local_run(runs: dict[str, dict],
                                                                            homes: dict[str, Path],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """One flow: the Dask run goes through the same drift check and serve-ability replay before it
    promotes (the separate Dask flow promoted without either)."""
    from mlflow import MlflowClient

    from core.runtime import apply_environment
    from core.settings import Settings

    local, dask = runs["local"], runs["dask"]
    assert set(dask["drift"]) == set(local["drift"]) and dask["drift"]["held"] == local["drift"]["held"] == []
    # Same events, same valid and test weeks: the event-mix PSI is the same number.
    assert dask["drift"]["event_mix_psi"] == pytest.approx(local["drift"]["event_mix_psi"], abs=1e-12)
    monkeypatch.setenv("RANKLOOP_HOME", str(homes["dask"]))
    apply_environment(Settings())
    run = MlflowClient().get_run(dask["run_id"])
    assert "replay: serves" in run.data.tags["gate.reasons"]
    assert run.data.metrics["gate.replay_nonfinite_scores"] == 0
    assert run.data.metrics["drift.features_psi_max"] == pytest.approx(dask["drift"]["features_psi_max"])
    assert local["executor"] == {"kind": "local", "partitioning": "day", "feature_bucket_rows": 1_000_000}


def test_a_completed_run_keeps_what_the_local_run_keeps(runs: dict[str, dict], homes: dict[str, Path]) -> None:
    """The Dask run's per-day intermediates (valid rows, impressions, features, table rewards) are gone
    once it completes: its folder holds what the local run's holds (model and tables). The day
    snapshots, the combined manifest and the registered model stay, so a rerun and serving work."""
    from mlflow import MlflowClient

    from core.runtime import apply_environment
    from core.settings import Settings

    dask, local = _completed_run_dir(homes["dask"]), _completed_run_dir(homes["local"])
    assert len(list(homes["dask features"].glob("*.arrow"))) >= 30  # the cleanup ran after the features existed
    assert sorted(p.name for p in dask.iterdir()) == sorted(p.name for p in local.iterdir()) \
        == ["bandit", "linucb", "model.txt", "qtable"]
    assert not list(dask.rglob("*.tmp"))
    digest = runs["dask"]["snapshot_digest"]
    assert (homes["dask"] / "snapshots" / "partitioned" / digest / "manifest.json").is_file()
    # one snapshot per block of executor.days_per_task (7) days: 35 days, 5 blocks
    assert len(list((homes["dask"] / "snapshots" / "partitioned" / digest / "parts").glob("*.parquet"))) == 5
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKLOOP_HOME", str(homes["dask"]))
        apply_environment(Settings())
        version = MlflowClient().get_model_version_by_alias("rankloop.ranker", "champion")
    assert int(version.version) == runs["dask"]["version"] == 1


def test_executor_recorded_in_mlflow(runs: dict[str, dict], homes: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from core.runtime import apply_environment
    from core.settings import Settings

    monkeypatch.setenv("RANKLOOP_HOME", str(homes["dask"]))
    apply_environment(Settings())
    params = MlflowClient().get_run(runs["dask"]["run_id"]).data.params
    assert params["executor.kind"] == "dask"
    assert params["executor.address"].startswith("tcp://")
    assert params["executor.days_per_task"] == "7"


def test_feature_values_match_on_a_sample(runs: dict[str, dict], homes: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Features of the Dask run's day partitions equal the local build's for the same impressions."""
    import pyarrow.parquet as pq

    import data_contracts
    import features
    from core.settings import Settings
    from rankloop import stages

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
    files = sorted(homes["dask features"].glob("*.arrow"))  # copied aside before the run's cleanup
    assert len(files) >= 30  # one partition per day of the 35-day window that has queries
    dask = pd.concat([pd.read_feather(f) for f in files], ignore_index=True)
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
    """flows.weekly.weekly_retrain with the dask executor again finds the Dask run's key (the local
    path's snapshot digest differs), so the executor, not the entry point, chose the day partitions."""
    from flows.weekly import weekly_retrain

    _use_home(monkeypatch, homes["dask"])
    monkeypatch.setenv("RANKLOOP_EXECUTOR__KIND", "dask")
    monkeypatch.setenv("RANKLOOP_EXECUTOR__ADDRESS", cluster)
    again = weekly_retrain(window_end=date(2026, 11, 16))
    assert again["run_id"] == runs["dask"]["run_id"]
    assert again["snapshot_digest"] == runs["dask"]["snapshot_digest"] != runs["local"]["snapshot_digest"]


def _table_dir(home: Path, kind: str) -> Path:
    found = sorted(home.glob(f"runs/*/*/{kind}"))
    assert len(found) == 1, found
    return found[0]


def test_tables_from_partitioned_aggregates_equal_the_local_tables(runs: dict[str, dict], homes: dict[str, Path]) -> None:
    """The Dask run refits Thompson and LinUCB from per-request-day statistics and replays Q from the
    combined slates: the saved tables equal the local run's, and so do their OPE verdicts."""
    from models.linucb import LinUCB
    from models.qlearning import QTable
    from models.thompson import BetaTables

    local, dask = (BetaTables.load(_table_dir(homes[k], "bandit")) for k in ("local", "dask"))
    for name in ("items", "user_items"):
        assert len(getattr(local, name)) > 0
        pd.testing.assert_frame_equal(getattr(dask, name), getattr(local, name), rtol=1e-12, atol=1e-12)
    assert dask.data_end == local.data_end
    lin_local, lin_dask = (LinUCB.load(_table_dir(homes[k], "linucb")) for k in ("local", "dask"))
    assert lin_dask.arms == lin_local.arms and lin_dask.encoding == lin_local.encoding
    np.testing.assert_array_equal(lin_dask.a, lin_local.a)
    np.testing.assert_allclose(lin_dask.b, lin_local.b, rtol=1e-12, atol=1e-9)
    q_local, q_dask = (QTable.load(_table_dir(homes[k], "qtable")) for k in ("local", "dask"))
    np.testing.assert_array_equal(q_dask.states, q_local.states)
    np.testing.assert_allclose(q_dask.q, q_local.q, rtol=1e-12, atol=1e-12)
    for kind in ("bandit", "linucb", "qtable"):
        mine, theirs = runs["dask"]["tables"][kind], runs["local"]["tables"][kind]
        assert (mine["verdict"], mine["promoted"]) == (theirs["verdict"], theirs["promoted"]), kind


def test_a_contract_failure_on_dask_behaves_as_locally(runs: dict[str, dict], homes: dict[str, Path], cluster: str,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Too many bad rows: the Dask flow stops at the same stages.validate, leaves the report, the
    quarantine, a FAILED MLflow run and the notification, and the champion does not move.
    Runs on a copy of the Dask run's home (its champion is version 1)."""
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    from core.errors import ContractViolation
    from core.runtime import apply_environment
    from core.settings import Settings
    from flows.weekly import weekly_retrain
    from sources import write_table

    home = tmp_path / "home"
    shutil.copytree(homes["dask"], home)
    _use_home(monkeypatch, home)
    monkeypatch.setenv("RANKLOOP_EXECUTOR__KIND", "dask")
    monkeypatch.setenv("RANKLOOP_EXECUTOR__ADDRESS", cluster)
    monkeypatch.setenv("RANKLOOP_OPS__NOTIFY_FILE", str(home / "notifications.jsonl"))
    settings = Settings()
    apply_environment(settings)
    good = pa.concat_tables([pq.read_table(p).drop_columns(["source_errors"])  # snapshot-only, not a source column
                             for p in sorted((home / "snapshots").glob("*/data.parquet"))])
    assert good.num_rows == runs["dask"]["rows_in"]
    sample = good.filter(pc.equal(pc.bit_wise_and(pa.array(range(good.num_rows)), 31), 0))  # ~3%: above 1%
    bad = sample.set_column(0, "event_id", pc.binary_join_element_wise(sample["event_id"], "neg", "-"))
    bad = bad.set_column(bad.schema.get_field_index("event_type"), "event_type", pa.array(["dwell"] * bad.num_rows))
    bad = bad.set_column(bad.schema.get_field_index("value"), "value", pa.array([-5.0] * bad.num_rows))
    write_table(settings.source_uri, "interactions", bad, mode="append")
    client = MlflowClient()
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'rankloop.ranker'"))

    with pytest.raises(ContractViolation, match="max_quarantine_fraction"):
        weekly_retrain(window_end=date(2026, 11, 16), force=True)
    assert int(client.get_model_version_by_alias("rankloop.ranker", "champion").version) == 1
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'rankloop.ranker'")) == versions
    report = json.loads((home / "notifications.jsonl").read_text().splitlines()[-1])
    assert (report["status"], report["stage"], report["rows_quarantined"]) == ("failed", "validate", bad.num_rows)
    assert report["quarantined_reasons"] == {"dwell_out_of_range": bad.num_rows}
    assert report["executor"]["kind"] == "dask"
    assert Path(report["report_path"]).is_file() and Path(report["quarantine_path"]).is_file()
    failed = client.get_run(report["mlflow_run_id"])
    assert failed.info.status == "FAILED"
    assert failed.data.metrics["contract.quarantined.dwell_out_of_range"] == bad.num_rows
