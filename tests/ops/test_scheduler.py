"""The schedules fire: a real Prefect server's scheduler creates the runs of every deployment in
prefect.yaml, and a run that the scheduler (not a hand trigger) created is completed by a process
worker, and by `rankloop schedule`. The server's log must show no scheduler error (SQLAlchemy 2.1
breaks prefect 3.8's scheduler: it creates no run at all, see pyproject.toml)."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cli.commands.ops import (
    DAILY_AB,
    DAILY_BANDIT,
    GUARDRAIL,
    WEEKLY,
    ensure_can_listen,
    served_deployments,
)
from core.errors import ConfigError, Reason
from core.settings import OpsSettings, Settings

from .conftest import BIN, END, REPO, Child, PrefectServer, child_env, make_demo_home, scheduler_errors

POOL = "rankloop-process"
EVERY_MINUTE = "* * * * *"
CLI_TIMEOUT_S = 120
# A copy of the weekly deployment on its own queue, so only this test's worker runs it.
MINUTELY = {"name": "weekly-retrain-every-minute", "queue": "every-minute"}
# The recent-deployments loop schedules a new deployment within seconds; the main loop runs each minute.
SCHEDULED_TIMEOUT_S = 150
# The next minute's slot, then extract, validate, features, ranker and tables on the small home.
RUN_TIMEOUT_S = 720
WORKER_ENV = {"RANKLOOP_WINDOW__END": END.date().isoformat(), "RANKLOOP_RANKER__N_ESTIMATORS": "40",
              "PREFECT_WORKER_QUERY_SECONDS": "2"}


# --- no server: the crons are settings, and prefect.yaml says the same -----------------------------
def test_prefect_yaml_schedules_are_the_settings_defaults() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    crons = {d["name"]: [(s["cron"], s["timezone"], s["active"]) for s in d["schedules"]] for d in config["deployments"]}
    ops = OpsSettings()
    assert crons == {WEEKLY["name"]: [(ops.weekly_cron, ops.timezone, True)],
                     DAILY_BANDIT["name"]: [(ops.bandit_cron, ops.timezone, True)],
                     DAILY_AB["name"]: [(ops.ab_cron, ops.timezone, True)],
                     GUARDRAIL["name"]: [(ops.guard_cron, ops.timezone, True)]}
    # Monday 01:00; daily 02:00, 03:00, 03:30
    assert (ops.weekly_cron, ops.bandit_cron, ops.ab_cron, ops.guard_cron) == ("0 1 * * 1", "0 2 * * *", "0 3 * * *",
                                                                               "30 3 * * *")
    # rankloop schedule serves the same four, on the same crons
    served = {d.name: [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] for d in served_deployments(Settings())}
    assert served == {name: [(cron, tz)] for name, [(cron, tz, _)] in crons.items()}


def test_schedule_takes_its_crons_from_the_settings() -> None:
    ops = OpsSettings(weekly_cron="30 4 * * 2", bandit_cron="15 3 * * *", timezone="Europe/Paris")
    weekly, daily = served_deployments(Settings(ops=ops), guard=False)
    assert [(s.schedule.cron, s.schedule.timezone) for s in weekly.schedules] == [("30 4 * * 2", "Europe/Paris")]
    assert [(s.schedule.cron, s.schedule.timezone) for s in daily.schedules] == [("15 3 * * *", "Europe/Paris")]


@pytest.mark.parametrize(("ops", "variable"), [
    ({"weekly_cron": "every monday"}, "RANKLOOP_OPS__WEEKLY_CRON"),
    ({"bandit_cron": "61 2 * * *"}, "RANKLOOP_OPS__BANDIT_CRON"),
    ({"timezone": "Mars/Olympus_Mons"}, "RANKLOOP_OPS__TIMEZONE"),
])
def test_a_bad_cron_or_timezone_names_its_variable(ops: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        served_deployments(Settings(ops=OpsSettings(**ops)))
    assert caught.value.reason is Reason.BAD_CONFIG
    assert caught.value.one_line().startswith(f"error (bad_config): {variable}=")


def test_ui_on_a_taken_port_fails_at_once_with_one_line(tmp_path: Path) -> None:
    """Not MLflow's server failing in the background while the command waits (it would block until the timeout)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([str(BIN / "rankloop"), "ui", "--port", str(port), "--home", str(tmp_path / "home")],
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=child_env(), cwd=tmp_path)
    assert done.returncode == 8, done.stderr  # busy
    assert done.stderr == (f"error (busy): port {port} on 127.0.0.1 is already in use - "
                           "choose another --port, or stop the process listening on it\n")
    assert "MLflow UI" not in done.stdout
    ensure_can_listen("127.0.0.1", port)  # released by the test: free again


_LOCKED_LATE = """14:36:20.000 | ERROR   | prefect.server - Encountered error during state validation
Traceback (most recent call last):
  File "aiosqlite/core.py", line 63, in _connection_worker_thread
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked
[SQL: INSERT INTO flow_run_state (flow_run_id, type, name) VALUES (:flow_run_id, :type, :name)]
[parameters: {'flow_run_id': '01a2', 'type': 'SCHEDULED', 'name': 'Late'}]"""
_SCHEDULER_FAILED = """01:00:02.125 | ERROR   | prefect.server.services.scheduler - Error scheduling deployment 'abc'.
Traceback (most recent call last):
  File "prefect/server/services/scheduler.py", line 186, in _collect_flow_runs
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked"""
_BULK_DML = """01:00:02.125 | ERROR   | docket.worker - insert_scheduled_flow_runs failed
sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement"""
_INFO = "01:00:01.000 | INFO    | prefect.server.services.scheduler - Scheduled 4 runs."


def test_the_health_check_tells_a_scheduler_failure_from_a_retried_lock() -> None:
    """A state write that hit a SQLite lock (Prefect retries it) is no scheduler failure, though its SQL
    parameters say SCHEDULED; the scheduler's own error, and SQLAlchemy 2.1's bulk DML one, are."""
    log = "\n".join([_INFO, _LOCKED_LATE, _SCHEDULER_FAILED, _INFO, _BULK_DML, _INFO])
    assert scheduler_errors(log) == [_SCHEDULER_FAILED, _BULK_DML]
    assert scheduler_errors("\n".join([_INFO, _LOCKED_LATE, _INFO])) == []


# --- a real server: the scheduler creates the runs, a worker completes one ---------------------------
def _deployment(server: PrefectServer, name: str) -> Any:
    async def go(client: Any) -> Any:
        return await client.read_deployment_by_name(name)

    return server.call(go)


def _flow_runs(server: PrefectServer, name: str) -> list[Any]:
    """The flow runs of the deployment ``name`` (none while it does not exist yet)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
    )

    flow, deployment = name.split("/")

    async def go(client: Any) -> Any:
        return await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
                                           deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))

    return server.call(go)


def _assert_scheduler_healthy(server: PrefectServer) -> None:
    errors = server.scheduler_errors()
    assert not errors, "the Prefect server's scheduler failed:\n" + "\n".join(e[-2500:] for e in errors[:2])


def _wait_for_scheduled_runs(server: PrefectServer, name: str) -> list[Any]:
    """The deployment's runs once the scheduler created some; bounded, failing early on a scheduler error."""
    deadline = time.monotonic() + SCHEDULED_TIMEOUT_S
    while time.monotonic() < deadline:
        _assert_scheduler_healthy(server)
        runs = _flow_runs(server, name)
        if runs:
            return runs
        time.sleep(2)
    _assert_scheduler_healthy(server)
    pytest.fail(f"the scheduler created no run of {name} within {SCHEDULED_TIMEOUT_S} s")


def _next(after: datetime, hour: int, weekday: int | None = None, minute: int = 0) -> datetime:
    """The first ``hour``:``minute`` UTC (on ``weekday``, Monday 0) strictly after ``after``."""
    slot = after.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    while slot <= after or (weekday is not None and slot.weekday() != weekday):
        slot += timedelta(days=1)
    return slot


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer) -> datetime:
    """The work pool and every deployment of prefect.yaml, as docs/operations.md says; returns when."""
    prefect_server.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
    at = datetime.now(UTC)
    prefect_server.cli("deploy", "--all")
    return at


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.parametrize(("name", "hour", "minute", "weekday", "step"), [
    (f"weekly_retrain/{WEEKLY['name']}", 1, 0, 0, timedelta(days=7)),
    (f"daily_bandit_refresh/{DAILY_BANDIT['name']}", 2, 0, None, timedelta(days=1)),
    (f"daily_ab_report/{DAILY_AB['name']}", 3, 0, None, timedelta(days=1)),
    (f"guardrail/{GUARDRAIL['name']}", 3, 30, None, timedelta(days=1)),
])
def test_the_scheduler_creates_the_upcoming_runs_of_every_deployment(
    prefect_server: PrefectServer, deployed: datetime, name: str, hour: int, minute: int, weekday: int | None,
    step: timedelta,
) -> None:
    runs = _wait_for_scheduled_runs(prefect_server, name)
    assert all(run.auto_scheduled for run in runs), "a run of the deployment was not created by the scheduler"
    assert {run.state.type.value for run in runs} == {"SCHEDULED"}
    starts = sorted(run.expected_start_time for run in runs)
    assert len(starts) >= 3  # the scheduler keeps at least min_runs upcoming
    assert starts[0] == _next(deployed, hour, weekday, minute)
    assert all(b - a == step for a, b in pairwise(starts))
    _assert_scheduler_healthy(prefect_server)


def _minutely_copy(tmp_path: Path) -> Path:
    """prefect.yaml with only the weekly deployment, renamed, every minute, on its own queue."""
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    weekly = next(d for d in config["deployments"] if d["name"] == WEEKLY["name"])
    weekly["name"] = MINUTELY["name"]
    weekly["schedules"] = [{**weekly["schedules"][0], "cron": EVERY_MINUTE}]
    weekly["work_pool"]["work_queue_name"] = MINUTELY["queue"]
    path = tmp_path / "prefect-every-minute.yaml"
    path.write_text(yaml.safe_dump({**config, "deployments": [weekly]}, sort_keys=False))
    return path


def _wait_for_completed_run(server: PrefectServer, name: str, runner: Child) -> Any:
    """The first completed run of ``name``; fails when one fails or crashes, or the time runs out."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        _assert_scheduler_healthy(server)
        runs = _flow_runs(server, name)
        ended = [run for run in runs if run.state.type.value in {"FAILED", "CRASHED"}]
        assert not ended, (f"run {ended[0].name} ended {ended[0].state!r}; its log:\n{_run_log(server, ended[0].id)}\n"
                           f"{runner.name} log:\n{runner.tail()}")
        done = [run for run in runs if run.state.is_completed()]
        if done:
            assert all(run.auto_scheduled for run in runs), "a run of the deployment was not created by the scheduler"
            return done[0]
        time.sleep(3)
    pytest.fail(f"no run of {name} completed within {RUN_TIMEOUT_S} s; {runner.name} log:\n{runner.tail()}")


def _run_log(server: PrefectServer, flow_run_id: Any) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def go(client: Any) -> Any:
        return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))

    return "\n".join(log.message for log in server.call(go))[-6000:]


def _summary_artifact(server: PrefectServer, flow_run_id: Any) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    async def go(client: Any) -> Any:
        return await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            key=ArtifactFilterKey(any_=["weekly-retrain-summary"])))

    artifacts = server.call(go)
    assert len(artifacts) == 1, f"flow run {flow_run_id} published {len(artifacts)} summaries"
    return artifacts[0].data


def _assert_trained(server: PrefectServer, run: Any, home: Path) -> None:
    """The run trained and promoted a first ranker: its summary, and the MLflow run and champion in ``home``."""
    from mlflow import MlflowClient

    summary = _summary_artifact(server, run.id)
    assert "**status:** completed" in summary and "| new version | 1 |" in summary, summary
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("rankloop")
    assert experiment is not None, f"no MLflow experiment 'rankloop' in {home}"
    completed = client.search_runs([experiment.experiment_id], filter_string="tags.`rankloop.completed` = 'true'")
    assert [r.data.tags["rankloop.window_end"][:10] for r in completed] == [END.date().isoformat()]
    assert "ndcg_at_10" in completed[0].data.metrics
    assert int(client.get_model_version_by_alias("rankloop.ranker", "champion").version) == 1


@pytest.mark.prefect
@pytest.mark.slow
def test_a_worker_completes_a_run_the_scheduler_created(
    prefect_server: PrefectServer, deployed: datetime, spawn: Callable[..., Child], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    make_demo_home(home)
    prefect_server.cli("deploy", "--prefect-file", str(_minutely_copy(tmp_path)), "--name", MINUTELY["name"])
    name = f"weekly_retrain/{MINUTELY['name']}"
    deployment = _deployment(prefect_server, name)
    assert [s.schedule.cron for s in deployment.schedules] == [EVERY_MINUTE]
    assert deployment.parameters["scheduled"] is True  # the lateness check runs, as in the weekly deployment
    worker = spawn("worker", [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--work-queue",
                              MINUTELY["queue"], "--limit", "1"], prefect_server.env(RANKLOOP_HOME=str(home), **WORKER_ENV))
    try:
        run = _wait_for_completed_run(prefect_server, name, worker)
    finally:
        worker.stop()
    assert run.auto_scheduled and run.work_queue_name == MINUTELY["queue"]
    _assert_trained(prefect_server, run, home)
    _assert_scheduler_healthy(prefect_server)


def _schedule_env(home: Path, **extra: str) -> dict[str, str]:
    make_demo_home(home)
    return {"RANKLOOP_HOME": str(home), "RANKLOOP_OPS__WEEKLY_CRON": EVERY_MINUTE, **WORKER_ENV, **extra}


@pytest.mark.prefect
@pytest.mark.slow
def test_rankloop_schedule_refuses_a_deployment_a_work_pool_runs(
    prefect_server: PrefectServer, deployed: datetime, tmp_path: Path
) -> None:
    name = f"weekly_retrain/{WEEKLY['name']}"
    done = subprocess.run([str(BIN / "rankloop"), "schedule", "--no-bandit"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=SCHEDULED_TIMEOUT_S, env=prefect_server.env(RANKLOOP_HOME=str(tmp_path)))
    assert done.returncode == 6, done.stderr[-3000:]  # refused
    assert done.stderr.startswith(f"error (refused): deployment '{name}' already runs on work pool '{POOL}'")
    assert done.stderr.count("\n") == 1 and f"prefect deployment delete '{name}'" in done.stderr
    kept = _deployment(prefect_server, name)
    assert kept.work_pool_name == POOL and [s.schedule.cron for s in kept.schedules] == [WEEKLY["cron"]]


@pytest.mark.prefect
@pytest.mark.slow
def test_rankloop_schedule_completes_a_run_the_scheduler_created(
    prefect_server: PrefectServer, spawn: Callable[..., Child], tmp_path: Path
) -> None:
    prefect_server.delete_deployment(f"weekly_retrain/{WEEKLY['name']}")  # as the refusal above says
    home = tmp_path / "home"
    # --no-guard: the A/B report and guardrail deployments of prefect.yaml stay on their work pool
    serving = spawn("schedule", [str(BIN / "rankloop"), "schedule", "--no-bandit", "--no-guard"],
                    prefect_server.env(**_schedule_env(home)))
    try:
        run = _wait_for_completed_run(prefect_server, f"weekly_retrain/{WEEKLY['name']}", serving)
    finally:
        serving.stop()
    assert f"serving {WEEKLY['name']}: cron '{EVERY_MINUTE}' (UTC)" in serving.tail(100_000)
    assert f"Prefect API {prefect_server.api_url}\n" in serving.tail(100_000)
    assert run.auto_scheduled and run.work_queue_name is None  # served: no work pool
    _assert_trained(prefect_server, run, home)
    _assert_scheduler_healthy(prefect_server)


def _own_server(serving: Child, home: Path) -> PrefectServer:
    """The Prefect server `rankloop schedule` started for itself, from the address it printed; bounded."""
    deadline = time.monotonic() + SCHEDULED_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"Prefect API (\S+) \(started for this process\)", serving.tail(100_000))
        if found:
            return PrefectServer(found.group(1), home / "prefect", home / "prefect" / "server.log")
        assert serving.process.poll() is None, f"rankloop schedule exited:\n{serving.tail()}"
        time.sleep(1)
    pytest.fail(f"rankloop schedule printed no Prefect API within {SCHEDULED_TIMEOUT_S} s:\n{serving.tail()}")


@pytest.mark.prefect
@pytest.mark.slow
def test_rankloop_schedule_without_a_server_completes_a_run_the_scheduler_created(
    spawn: Callable[..., Child], tmp_path: Path
) -> None:
    """Without PREFECT_API_URL Prefect would give an ephemeral API, which runs no scheduler."""
    home = tmp_path / "home"
    env = {k: v for k, v in child_env(**_schedule_env(home)).items() if k != "PREFECT_HOME"}
    serving = spawn("schedule-own-server", [str(BIN / "rankloop"), "schedule", "--no-bandit"], env, cwd=tmp_path)
    try:
        server = _own_server(serving, home)
        run = _wait_for_completed_run(server, f"weekly_retrain/{WEEKLY['name']}", serving)
        assert run.auto_scheduled
        served = serving.tail(100_000)
        assert all(f"serving {name}: cron" in served for name in (WEEKLY["name"], DAILY_AB["name"], GUARDRAIL["name"]))
        assert f"serving {DAILY_BANDIT['name']}" not in served
        _assert_trained(server, run, home)
        _assert_scheduler_healthy(server)
    finally:
        serving.stop(timeout=60)  # Ctrl-C: pause the schedule, then stop its server
    assert serving.process.returncode == 0, serving.tail()
    assert (home / "prefect" / "prefect.db").is_file()  # the server's database is in the data home
    with pytest.raises(httpx.TransportError):  # and the server stopped with the command
        httpx.get(f"{server.api_url}/health", timeout=5)


@pytest.mark.prefect
@pytest.mark.slow
def test_the_checks_read_the_servers_own_log(prefect_server: PrefectServer) -> None:
    """A missing or wrong log would pass the scheduler checks above vacuously."""
    assert prefect_server.log is not None
    assert prefect_server.api_url.removesuffix("/api") in prefect_server.log.read_text(errors="replace")
