"""Operations commands: ``schedule`` (serve the flows on their crons from this process) and ``ui``
(the MLflow UI on the configured store)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from core.errors import ConfigError, RankLoopError, Reason
from core.settings import OpsSettings, Settings

console = Console(soft_wrap=True)

# The deployments and their default crons, as prefect.yaml declares them (tests/ops checks they agree).
WEEKLY = {"name": "weekly-retrain", "cron": OpsSettings().weekly_cron}
DAILY_BANDIT = {"name": "daily-bandit-refresh", "cron": OpsSettings().bandit_cron}
DAILY_AB = {"name": "daily-ab-report", "cron": OpsSettings().ab_cron}
GUARDRAIL = {"name": "guardrail", "cron": OpsSettings().guard_cron}

HOME_OPTION = typer.Option(None, "--home", help="Data home (default: $RANKLOOP_HOME or ./.rankloop).")


def _settings(home: Path | None) -> Settings:
    from core.runtime import apply_environment

    if home is not None:
        os.environ["RANKLOOP_HOME"] = str(home)
    settings = Settings()
    apply_environment(settings)
    return settings


def served_deployments(settings: Settings, bandit: bool = True, guard: bool = True) -> list[Any]:
    """The runner deployments ``rankloop schedule`` serves, as prefect.yaml declares them: the weekly
    retrain and, optionally, the daily bandit refresh, the daily A/B report and the guardrail, on
    ``settings.ops.weekly_cron``, ``bandit_cron``, ``ab_cron`` and ``guard_cron`` in
    ``settings.ops.timezone``, one run at a time.

    Args:
        settings: where the crons and their timezone come from.
        bandit: also serve the daily bandit refresh.
        guard: also serve the daily A/B report and the guardrail.

    Returns:
        Prefect ``RunnerDeployment`` objects for ``prefect.serve``.

    Raises:
        ConfigError: a cron or the timezone is not valid.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from flows.weekly import weekly_retrain

    out = [weekly_retrain.to_deployment(
        name=WEEKLY["name"], schedules=[_cron(settings.ops, "weekly_cron")], parameters={"scheduled": True},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=["rankloop", "weekly"],
    )]
    if bandit:
        from flows.bandit_refresh import daily_bandit_refresh

        out.append(daily_bandit_refresh.to_deployment(
            name=DAILY_BANDIT["name"], schedules=[_cron(settings.ops, "bandit_cron")],
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
            tags=["rankloop", "daily"],
        ))
    if guard:
        from flows.guardrail import daily_ab_report, guardrail

        for flow, spec, field in ((daily_ab_report, DAILY_AB, "ab_cron"), (guardrail, GUARDRAIL, "guard_cron")):
            out.append(flow.to_deployment(
                name=spec["name"], schedules=[_cron(settings.ops, field)],
                concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
                tags=["rankloop", "daily"],
            ))
    return out


def _cron(ops: OpsSettings, field: str) -> Any:
    """``ops.<field>`` as a Prefect cron schedule in ``ops.timezone``; a mistake names its variable."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.schedules import Cron

    try:
        ZoneInfo(ops.timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"RANKLOOP_OPS__TIMEZONE={ops.timezone!r} is not an IANA timezone", reason=Reason.BAD_CONFIG,
                          hint="give a name such as UTC or Europe/Paris") from e
    expression = getattr(ops, field)
    try:
        return Cron(expression, timezone=ops.timezone)
    except ValueError as e:
        raise ConfigError(f"RANKLOOP_OPS__{field.upper()}={expression!r} is not a cron expression",
                          reason=Reason.BAD_CONFIG,
                          hint="give five fields, minute hour day-of-month month day-of-week, e.g. '0 1 * * 1'") from e


def schedule(
    home: Path | None = HOME_OPTION,
    bandit: bool = typer.Option(True, "--bandit/--no-bandit", help="Also serve the daily bandit refresh."),
    guard: bool = typer.Option(True, "--guard/--no-guard", help="Also serve the daily A/B report and the guardrail."),
) -> None:
    """Run the weekly retrain (Monday 01:00), the daily bandit refresh (02:00), the A/B report (03:00)
    and the guardrail (03:30) from this process, until Ctrl-C.

    The crons are RANKLOOP_OPS__WEEKLY_CRON, __BANDIT_CRON, __AB_CRON and __GUARD_CRON in RANKLOOP_OPS__TIMEZONE.
    No work pool or worker needed: this process creates the deployments and runs them itself.
    Its Prefect API is PREFECT_API_URL; without one it starts a Prefect server of its own
    (database and server.log in <home>/prefect) and stops it on exit.
    """
    settings = _settings(home)  # first: Prefect reads PREFECT_HOME (<home>/prefect by default) once, at import
    from prefect import serve

    deployments = served_deployments(settings, bandit=bandit, guard=guard)
    with _prefect_api() as (api_url, own):
        refuse_pool_deployments(deployments)
        for deployment in deployments:
            console.print(f"serving {deployment.name}: cron '{deployment.schedules[0].schedule.cron}' "
                          f"({settings.ops.timezone})")
        console.print(f"Prefect API {api_url}" + (" (started for this process)" if own else ""))
        console.print(f"data home {settings.home_dir}; Ctrl-C stops (and pauses the schedules)")
        try:
            serve(*deployments, print_starting_message=False)
        finally:
            _pause(deployments)


def _pause(deployments: list[Any]) -> None:
    """Pause the served deployments' schedules. Prefect's runner pauses them on Ctrl-C only once it has
    started: a Ctrl-C in its first seconds (the deployments created, the runner not yet up) left them
    active with nobody serving them, so their runs piled up as Late. Paused twice is still paused."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            for deployment in deployments:
                try:
                    found = client.read_deployment_by_name(deployment.full_name)
                except ObjectNotFound:
                    continue
                if not found.paused:
                    client.pause_deployment(found.id)
    except Exception as e:  # noqa: BLE001 - stopping anyway: say what is left to do
        console.print(f"could not pause the schedules ({type(e).__name__}); pause them with "
                      "`prefect deployment pause <flow>/<deployment>` before nobody serves them")


@contextlib.contextmanager
def _prefect_api() -> Iterator[tuple[str, bool]]:
    """PREFECT_API_URL (or the profile's), else a Prefect server of our own in PREFECT_HOME: Prefect's
    ephemeral API runs no scheduler. Yields the URL and whether the server is ours."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from rankloop.ops import local_prefect_server

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured, False
        return
    with local_prefect_server(Path(PREFECT_HOME.value())) as url, temporary_settings({PREFECT_API_URL: url}):
        yield url, True


def refuse_pool_deployments(deployments: list[Any]) -> None:
    """Refuse to serve a deployment whose name a work pool already runs (``prefect deploy`` of prefect.yaml).

    Serving would take it over only in part (it keeps its pool and loses its code location), so
    its runs would crash and a worker of the pool would race this process for them.

    Raises:
        RankLoopError: such a deployment exists (``refused``).
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for deployment in deployments:
            try:
                existing = client.read_deployment_by_name(deployment.full_name)
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                raise RankLoopError(
                    f"deployment '{deployment.full_name}' already runs on work pool {existing.work_pool_name!r} "
                    "(prefect deploy); `rankloop schedule` would break its runs", reason=Reason.REFUSED,
                    hint=f"run it with a worker (`prefect worker start --pool {existing.work_pool_name}`), or delete "
                    f"it first (`prefect deployment delete '{deployment.full_name}'`)")


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
    ensure_can_listen(host, port)
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


def ensure_can_listen(host: str, port: int) -> None:
    """Fail now when nothing could listen on ``host:port``: MLflow's server would fail in the background.

    Raises:
        RankLoopError: the port is taken (``busy``), or the address cannot be bound (``invalid_input``).
    """
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--host {host!r} does not resolve: {e.strerror}", reason=Reason.INVALID_INPUT,
                          hint="give an address of this machine, e.g. 127.0.0.1") from e
    with socket.socket(family, kind) as probe:
        # As the web server binds: a port left in TIME_WAIT by an earlier run is free, a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise RankLoopError(f"port {port} on {host} is already in use", reason=Reason.BUSY,
                                    hint="choose another --port, or stop the process listening on it") from e
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}", reason=Reason.INVALID_INPUT,
                              hint="choose another --port (above 1023 without root) or --host") from e


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
