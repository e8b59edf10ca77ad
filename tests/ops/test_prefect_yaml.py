"""prefect.yaml, `rankloop schedule` and `rankloop ui` agree with the flows and the settings (no server)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.commands.ops import DAILY_BANDIT, WEEKLY, served_deployments, ui_command
from core.settings import OpsSettings, Settings

from .conftest import REPO

FLOWS = {WEEKLY["name"]: ("flows/weekly.py:weekly_retrain", WEEKLY["cron"]),
         DAILY_BANDIT["name"]: ("flows/bandit_refresh.py:daily_bandit_refresh", DAILY_BANDIT["cron"]),
         "daily-ab-report": ("flows/guardrail.py:daily_ab_report", OpsSettings().ab_cron),
         "guardrail": ("flows/guardrail.py:guardrail", OpsSettings().guard_cron)}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def _deployment(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in config["deployments"] if d["name"] == name)


def _flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_prefect_reads_the_file_with_its_own_model(config: dict[str, Any]) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    model = PrefectYamlModel.model_validate(config)
    assert sorted(d.name for d in model.deployments) == sorted(FLOWS)
    for deployment in model.deployments:
        assert deployment.concurrency_limit.limit == 1
        ConcurrencyLimitStrategy(deployment.concurrency_limit.collision_strategy)  # a valid strategy
        assert deployment.work_pool.name == "rankloop-process"


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_entrypoints_crons_and_parameters_mirror_the_flows(config: dict[str, Any], name: str) -> None:
    entrypoint, cron = FLOWS[name]
    deployment = _deployment(config, name)
    assert deployment["entrypoint"] == entrypoint
    assert [(s["cron"], s["timezone"]) for s in deployment["schedules"]] == [(cron, OpsSettings().timezone)]
    signature = inspect.signature(_flow(entrypoint).fn)
    unknown = sorted(set(deployment["parameters"]) - set(signature.parameters))
    assert not unknown, f"{name} passes parameters its flow does not take: {unknown}"
    documented = {k: v for k, v in deployment["parameters"].items() if k != "scheduled"}
    assert documented == {k: signature.parameters[k].default for k in documented}
    assert sorted(documented) == sorted(k for k in signature.parameters if k != "scheduled")


def test_weekly_runs_are_marked_scheduled_and_run_from_the_checkout(config: dict[str, Any]) -> None:
    assert _deployment(config, WEEKLY["name"])["parameters"]["scheduled"] is True
    step_id = config["build"][0]["prefect.deployments.steps.run_shell_script"]["id"]
    pull = config["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == f"{{{{ {step_id}.stdout }}}}"


def test_schedule_serves_both_flows_in_the_configured_timezone() -> None:
    settings = Settings(ops=OpsSettings(timezone="America/New_York"))
    weekly, daily, ab_report, guardrail = served_deployments(settings)
    assert (weekly.name, daily.name, ab_report.name, guardrail.name) == (WEEKLY["name"], DAILY_BANDIT["name"],
                                                                         "daily-ab-report", "guardrail")
    assert [(s.schedule.cron, s.schedule.timezone) for s in weekly.schedules] == [(WEEKLY["cron"], "America/New_York")]
    assert [(s.schedule.cron, s.schedule.timezone) for s in daily.schedules] == [(DAILY_BANDIT["cron"], "America/New_York")]
    assert weekly.parameters == {"scheduled": True}
    assert weekly.concurrency_limit == 1 and daily.concurrency_limit == 1
    assert all(d.concurrency_limit == 1 for d in (ab_report, guardrail))
    assert [d.name for d in served_deployments(settings, bandit=False, guard=False)] == [WEEKLY["name"]]
    assert [d.name for d in served_deployments(settings, guard=False)] == [WEEKLY["name"], DAILY_BANDIT["name"]]


def test_ui_serves_the_embedded_store_with_artifacts_in_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(home=tmp_path / "home")
    command, env = ui_command(settings, "127.0.0.1", 5123)
    assert command[command.index("--port") + 1] == "5123" and command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--default-artifact-root") + 1] == (tmp_path / "home" / "mlartifacts").resolve().as_uri()
    assert env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{(tmp_path / 'home').resolve() / 'mlflow.db'}"


def test_ui_keeps_a_database_password_off_the_command_line(tmp_path: Path) -> None:
    uri = "postgresql://mlflow:s3cret-pw@db.internal:5432/mlflow"
    command, env = ui_command(Settings(home=tmp_path, mlflow_tracking_uri=uri), "127.0.0.1", 5000)
    assert not any("s3cret-pw" in part for part in command)
    assert "--default-artifact-root" not in command  # the server's own artifact configuration applies
    assert env["MLFLOW_BACKEND_STORE_URI"] == uri
