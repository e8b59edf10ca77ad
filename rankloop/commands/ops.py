"""Operations commands: ``schedule`` (serve the flows on their crons from this process) and ``ui``
(the MLflow UI on the configured store)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from rankloop.settings import Settings

console = Console()

# The same schedules as prefect.yaml (tests/ops checks they agree).
WEEKLY = {"name": "weekly-retrain", "cron": "0 1 * * 1"}
DAILY_BANDIT = {"name": "daily-bandit-refresh", "cron": "0 2 * * *"}

HOME_OPTION = typer.Option(None, "--home", help="Data home (default: $RANKLOOP_HOME or ./.rankloop).")


def _settings(home: Path | None) -> Settings:
    from rankloop.settings import apply_environment

    if home is not None:
        os.environ["RANKLOOP_HOME"] = str(home)
    settings = Settings()
    apply_environment(settings)
    return settings


def served_deployments(settings: Settings, bandit: bool = True) -> list[Any]:
    """The runner deployments ``rankloop schedule`` serves: the weekly retrain and, optionally,
    the daily bandit refresh, on their crons in ``settings.ops.timezone``, one run at a time.

    Args:
        settings: where the timezone comes from.
        bandit: also serve the daily bandit refresh.

    Returns:
        Prefect ``RunnerDeployment`` objects for ``prefect.serve``.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    from flows.weekly import weekly_retrain

    tz = settings.ops.timezone
    out = [weekly_retrain.to_deployment(
        name=WEEKLY["name"], schedules=[Cron(WEEKLY["cron"], timezone=tz)], parameters={"scheduled": True},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=["rankloop", "weekly"],
    )]
    if bandit:
        from flows.bandit_refresh import daily_bandit_refresh

        out.append(daily_bandit_refresh.to_deployment(
            name=DAILY_BANDIT["name"], schedules=[Cron(DAILY_BANDIT["cron"], timezone=tz)],
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
            tags=["rankloop", "daily"],
        ))
    return out


def schedule(
    home: Path | None = HOME_OPTION,
    bandit: bool = typer.Option(True, "--bandit/--no-bandit", help="Also serve the daily bandit refresh (02:00)."),
) -> None:
    """Run the weekly retrain every Monday 01:00 (RANKLOOP_OPS__TIMEZONE) from this process, until Ctrl-C.

    No work pool or worker needed: this process creates the deployments and runs them itself.
    Its Prefect API is PREFECT_API_URL (default: a local one under <home>/prefect).
    """
    from prefect import serve

    settings = _settings(home)
    deployments = served_deployments(settings, bandit=bandit)
    for job in (WEEKLY, DAILY_BANDIT)[: len(deployments)]:
        console.print(f"serving {job['name']}: cron '{job['cron']}' ({settings.ops.timezone})")
    console.print(f"data home {settings.home_dir}; Ctrl-C stops (and pauses the schedules)")
    serve(*deployments, print_starting_message=False)


def ui_command(settings: Settings, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and environment for the configured store.

    The store URI travels in the environment (``MLFLOW_BACKEND_STORE_URI``), never on the
    command line where any user could read its password. For the embedded store, new
    experiments keep their artifacts under ``<home>/mlartifacts``. MLflow's background job runner
    (GenAI evaluation jobs) is off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` says otherwise:
    browsing runs needs none, and it slows start and stop.
    """
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1"]
    if not settings.mlflow_tracking_uri:
        root = settings.artifact_root.as_uri()
        command += ["--default-artifact-root", root, "--artifacts-destination", root]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_BACKEND_STORE_URI": settings.tracking_uri}
    return command, env


def ui(
    port: int = typer.Option(5000, "--port", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (keep 127.0.0.1 unless behind a proxy)."),
    home: Path | None = HOME_OPTION,
) -> None:
    """Start the MLflow UI on the configured tracking store and block until Ctrl-C."""
    from sources.uri import redact

    settings = _settings(home)
    if settings.tracking_uri.startswith(("http://", "https://")):
        console.print(f"MLflow runs on a tracking server: open {redact(settings.tracking_uri)}")
        return
    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    command, env = ui_command(settings, host, port)
    console.print(f"MLflow UI: http://{host}:{port}  (store {redact(settings.tracking_uri)}; Ctrl-C stops it)")
    # Its own process group, so that stopping it also stops the web workers it starts.
    process = subprocess.Popen(command, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        code = _stop(process)
    raise typer.Exit(code)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop(process: subprocess.Popen) -> int:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return 0
        except ProcessLookupError:
            return 0
        except subprocess.TimeoutExpired:
            continue
    return 0


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)
    app.command("ui")(ui)
