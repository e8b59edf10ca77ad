"""The deployments of prefect.yaml on a real Prefect server: deploy, run through a process worker,
find the MLflow run and the champion; the same window again trains nothing. Also `rankloop schedule`."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import BIN, END, REPO, Child, PrefectServer, make_demo_home

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

POOL = "rankloop-process"
RUN_TIMEOUT_S = 480
CLI_TIMEOUT_S = 180
SERVE_TIMEOUT_S = 120
LOG_TIMEOUT_S = 30


def _cli(server: PrefectServer, *args: str) -> str:
    done = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=REPO, env=server.env(),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _call(server: PrefectServer, coroutine: Callable[[Any], Any]) -> Any:
    """Run ``coroutine(client)`` against the test server (not the session's own Prefect API)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def main() -> Any:
        async with get_client() as client:
            return await coroutine(client)

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        return asyncio.run(main())


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("e2e") / "home"
    make_demo_home(home)
    return home


@pytest.fixture(scope="module")
def worker(prefect_server: PrefectServer, home: Path, spawn: Callable[..., Child]) -> Iterator[Child]:
    """The work pool, the deployment from prefect.yaml, and a process worker with the data home."""
    _cli(prefect_server, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    _cli(prefect_server, "deploy", "--name", "weekly-retrain")
    env = prefect_server.env(RANKLOOP_HOME=str(home), RANKLOOP_RANKER__N_ESTIMATORS="120",
                             PREFECT_WORKER_QUERY_SECONDS="2")
    child = spawn("worker", [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--limit", "1"], env)
    try:
        yield child
    finally:
        child.stop()


def _run(server: PrefectServer, worker: Child, **parameters: Any) -> Any:
    from prefect.deployments import run_deployment

    async def go(client: Any) -> Any:
        return await run_deployment("weekly_retrain/weekly-retrain", parameters=parameters, timeout=RUN_TIMEOUT_S,
                                    poll_interval=2, client=client)

    flow_run = _call(server, go)
    assert flow_run.state.is_completed(), f"flow run ended {flow_run.state!r}; worker log:\n{worker.tail()}"
    return flow_run


def _logs(server: PrefectServer, flow_run_id: Any) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def go(client: Any) -> Any:
        return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))

    return "\n".join(log.message for log in _call(server, go))


def _wait_for_log(server: PrefectServer, flow_run_id: Any, text: str) -> None:
    """Until the flow run's logs (shipped to the API in batches) contain ``text``; bounded."""
    deadline = time.monotonic() + LOG_TIMEOUT_S
    logs = ""
    while time.monotonic() < deadline:
        logs = _logs(server, flow_run_id)
        if text in logs:
            return
        time.sleep(1)
    pytest.fail(f"flow run {flow_run_id} never logged {text!r}; its logs:\n{logs}")


def _mlflow(home: Path) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_deployment_from_prefect_yaml(prefect_server: PrefectServer, worker: Child) -> None:
    async def go(client: Any) -> Any:
        return await client.read_deployment_by_name("weekly_retrain/weekly-retrain")

    deployment = _call(prefect_server, go)
    assert deployment.entrypoint == "flows/weekly.py:weekly_retrain"
    assert deployment.work_pool_name == POOL
    assert deployment.parameters["scheduled"] is True
    assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [("0 1 * * 1", "UTC")]
    assert deployment.global_concurrency_limit.limit == 1
    # The pull step runs the flow from this checkout, wherever the worker was started.
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]


def test_worker_runs_the_deployment_then_reuses_the_window(
    prefect_server: PrefectServer, worker: Child, home: Path
) -> None:
    first = _run(prefect_server, worker, window_end=END.date().isoformat(), refit_tables=False)
    client = _mlflow(home)
    experiment = client.get_experiment_by_name("rankloop")
    assert experiment is not None, f"no MLflow experiment 'rankloop' in {home}"
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`rankloop.completed` = 'true'")
    assert len(runs) == 1 and "ndcg_at_10" in runs[0].data.metrics
    assert runs[0].data.tags["rankloop.window_end"].startswith(END.date().isoformat())
    assert int(client.get_model_version_by_alias("rankloop.ranker", "champion").version) == 1

    second = _run(prefect_server, worker, window_end=END.date().isoformat(), refit_tables=False)
    assert second.id != first.id
    assert [int(v.version) for v in client.search_model_versions("name = 'rankloop.ranker'")] == [1]
    assert len(client.search_runs([experiment.experiment_id])) == 1
    _wait_for_log(prefect_server, second.id, "already completed")


def _served(server: PrefectServer, child: Child, paused: bool) -> Any:
    """The weekly deployment once its only schedule is in Europe/Paris and it is (not) ``paused``; bounded."""
    from prefect.exceptions import ObjectNotFound

    async def go(client: Any) -> Any:
        try:
            return await client.read_deployment_by_name("weekly_retrain/weekly-retrain")
        except ObjectNotFound:
            return None

    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _call(server, go)
        if found and [s.schedule.timezone for s in found.schedules] == ["Europe/Paris"] and found.paused is paused:
            return found
        time.sleep(1)
    pytest.fail(f"weekly-retrain never showed a {'paused' if paused else 'running'} Europe/Paris schedule; "
                f"`rankloop schedule` log:\n{child.tail()}")


def test_rankloop_schedule_serves_the_weekly_deployment(
    prefect_server: PrefectServer, spawn: Callable[..., Child], tmp_path: Path
) -> None:
    prefect_server.delete_deployment("weekly_retrain/weekly-retrain")  # a work pool's deployment is not served over
    env = prefect_server.env(RANKLOOP_HOME=str(tmp_path / "home"), RANKLOOP_OPS__TIMEZONE="Europe/Paris")
    child = spawn("schedule", [str(BIN / "rankloop"), "schedule", "--no-bandit", "--no-guard"], env)
    try:
        served = _served(prefect_server, child, paused=False)
        assert child.process.poll() is None, child.tail()
        assert served.schedules[0].schedule.cron == "0 1 * * 1"
        assert served.parameters["scheduled"] is True
        assert [s.active for s in served.schedules] == [True]
    finally:
        child.stop(timeout=90)  # Ctrl-C, then time to pause the deployment on a loaded machine
    # Ctrl-C pauses the schedule: nothing piles up while nobody serves it.
    _served(prefect_server, child, paused=True)
