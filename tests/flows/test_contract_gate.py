"""The contract gate under a real Prefect API: a bad batch stops the flow before training, the
champion stays, the report and counts are left in a FAILED MLflow run; a contract failure is never retried."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.errors import ContractViolation
from rankloop.simulator import SimulationConfig

END = datetime(2026, 11, 16, tzinfo=UTC)
SMALL = SimulationConfig(n_users=400, n_items=120, weeks=5, requests_per_user_week=3.0, end=END, seed=5)

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gate") / "home"


@pytest.fixture
def env(home: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None) -> Path:
    from core.settings import Settings
    from rankloop.demo import ensure_demo_source

    monkeypatch.setenv("RANKLOOP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RANKLOOP_OPS__NOTIFY_FILE", str(home / "notifications.jsonl"))
    monkeypatch.setenv("RANKLOOP_RANKER__N_ESTIMATORS", "60")
    ensure_demo_source(Settings(), SMALL)
    return home


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _champion() -> int:
    return int(_client().get_model_version_by_alias("rankloop.ranker", "champion").version)


def _task_runs(flow_run_id) -> dict[str, object]:
    import anyio
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return {t.name.rsplit("-", 1)[0]: t for t in anyio.run(read)}


def test_a_passing_run_carries_the_report_and_counts(env: Path) -> None:
    from flows.weekly import weekly_retrain

    summary = weekly_retrain(window_end=date(2026, 11, 16), refit_tables=False)
    assert summary["status"] == "completed" and _champion() == 1
    run = _client().get_run(summary["run_id"])
    metrics = run.data.metrics
    assert metrics["contract.rows_in"] == metrics["contract.rows_valid"] + metrics["contract.rows_quarantined"]
    assert metrics["contract.rows_lost"] == 0 and metrics["contract.passed"] == 1
    listed = [a.path for a in _client().list_artifacts(summary["run_id"], "data/contract")]
    assert any(p.endswith(".md") for p in listed) and "data/contract/summary.json" in listed
    profiles = list((env / "contracts" / "profiles").rglob("profile-*.json"))
    assert len(profiles) == 1 and json.loads(profiles[0].read_text())["rows"] == metrics["contract.rows_valid"]


def test_a_batch_over_the_threshold_stops_before_training_and_the_champion_stays(env: Path) -> None:
    from core.settings import Settings
    from flows.weekly import weekly_retrain
    from sources import write_table

    settings = Settings()
    snapshot = next(p for p in (env / "snapshots").glob("*/data.parquet"))
    good = pq.read_table(snapshot).drop_columns(["source_errors"])  # the snapshot-only column: not a source column
    sample = good.filter(pc.equal(pc.bit_wise_and(pa.array(range(good.num_rows)), 31), 0))  # ~3%: above 1%
    bad = sample.set_column(0, "event_id", pc.binary_join_element_wise(sample["event_id"], "neg", "-"))
    bad = bad.set_column(bad.schema.get_field_index("event_type"), "event_type", pa.array(["dwell"] * bad.num_rows))
    bad = bad.set_column(bad.schema.get_field_index("value"), "value", pa.array([-5.0] * bad.num_rows))
    write_table(settings.source_uri, "interactions", bad, mode="append")
    versions_before = sorted(int(v.version) for v in _client().search_model_versions("name = 'rankloop.ranker'"))

    state = weekly_retrain(window_end=date(2026, 11, 16), refit_tables=False, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ContractViolation)
    assert "max_quarantine_fraction" in str(error) and "dwell_in_range" in str(error)
    assert f"{bad.num_rows} of {good.num_rows + bad.num_rows} rows quarantined" in str(error)
    # stopped before training: no task after validate ran, nothing registered, the champion stayed
    runs = _task_runs(state.state_details.flow_run_id)
    assert set(runs) == {"recover", "extract", "validate"}  # recover: what earlier runs left behind
    assert runs["validate"].run_count == 1 and runs["validate"].state.is_failed()  # not retried
    assert _champion() == 1
    assert sorted(int(v.version) for v in _client().search_model_versions("name = 'rankloop.ranker'")) == versions_before
    # the report and counts are where a data scientist looks: the notification, the FAILED MLflow run
    report = json.loads((env / "notifications.jsonl").read_text().splitlines()[-1])
    assert (report["status"], report["stage"], report["rows_quarantined"]) == ("failed", "validate", bad.num_rows)
    assert report["quarantined_reasons"] == {"dwell_out_of_range": bad.num_rows}
    assert Path(report["report_path"]).is_file() and Path(report["quarantine_path"]).is_file()
    failed = _client().get_run(report["mlflow_run_id"])
    assert failed.info.status == "FAILED"
    assert failed.data.metrics["contract.quarantined.dwell_out_of_range"] == bad.num_rows
    assert failed.data.tags["rankloop.window_end"].startswith("2026-11-16")
    assert any(a.path.endswith(".md") for a in _client().list_artifacts(failed.info.run_id, "data/contract"))


def test_the_validate_task_is_never_retried() -> None:
    """Neither executor's contract task retries (a violation would be re-checked, never fixed), while
    their extractions do (a dropped connection is)."""
    from flows.executors import extract_block, validate_days
    from flows.weekly_tasks import extract, validate

    assert validate.retries == validate_days.retries == 0
    assert extract.retries == extract_block.retries == 2


def test_transient_only_retries_io_but_never_a_contract_violation(prefect_api: None) -> None:
    from prefect import flow, task

    from core.errors import Reason
    from flows.retry import transient_only

    calls = {"contract": 0, "io": 0}

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=transient_only)
    def contract() -> None:
        calls["contract"] += 1
        try:
            raise ConnectionError("the tracking server hiccuped while reading the snapshot")
        except ConnectionError as e:  # chained from a transient error: still not retried
            raise ContractViolation("bad batch", reason=Reason.CONTRACT) from e

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=transient_only)
    def io() -> None:
        calls["io"] += 1
        raise ConnectionError("database unreachable")

    @flow
    def both() -> None:
        for t in (contract, io):
            t(return_state=True)

    both()
    assert calls == {"contract": 1, "io": 4}
