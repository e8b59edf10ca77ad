"""Operations fixtures: child processes stopped by their own process group, a real Prefect server,
small simulated data homes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from rankloop.simulator import SimulationConfig

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
END = datetime(2026, 11, 16, tzinfo=UTC)
SMALL = SimulationConfig(n_users=400, n_items=120, weeks=5, requests_per_user_week=3.0, end=END, seed=5)
STARTUP_TIMEOUT_S = 120
CLI_TIMEOUT_S = 180
# Variables of the test session that must not leak into a child (they point at the session's own stores).
_PRIVATE = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "RANKLOOP_CONFIG")


@dataclass
class Child:
    """A process started by a test, in its own process group, its output in ``log``."""

    name: str
    process: subprocess.Popen
    log: Path

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        """SIGINT (graceful), then SIGTERM, then SIGKILL to the whole group; bounded."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=timeout)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        _kill_group(self.process.pid)


def _kill_group(pgid: int) -> None:
    """Children the group leader left behind (a server's workers) go too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The session's environment without its private store pointers, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _PRIVATE}
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false",
                "PYTHONUNBUFFERED": "1", **extra})
    return env


def wait_http(url: str, child: Child, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Until ``url`` answers 200; fails with the child's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            pytest.fail(f"{child.name} exited with {child.process.returncode}:\n{child.tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{child.name} did not answer {url} within {timeout:.0f} s:\n{child.tail()}")


@pytest.fixture(scope="session")
def spawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Child]]:
    """Start processes for the session's tests; any still running at the end are stopped."""
    children: list[Child] = []
    logs = tmp_path_factory.mktemp("logs")

    def start(name: str, args: list[str], env: dict[str, str], cwd: Path = REPO) -> Child:
        log = logs / f"{name}-{len(children)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        children.append(Child(name, process, log))
        return children[-1]

    try:
        yield start
    finally:
        for child in reversed(children):
            child.stop(timeout=10)


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    home: Path
    log: Path | None = None  # the server's own output (its services log there)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a client, worker or served process of this server."""
        return child_env(PREFECT_API_URL=self.api_url, PREFECT_HOME=str(self.home), **extra)

    def cli(self, *args: str, cwd: Path = REPO) -> str:
        """``prefect --no-prompt ARGS`` against this server; fails the test on a non-zero exit."""
        done = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=cwd, env=self.env(),
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def call(self, coroutine: Callable[[Any], Any]) -> Any:
        """Run ``coroutine(client)`` against this server (not the session's own Prefect API)."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        async def main() -> Any:
            async with get_client() as client:
                return await coroutine(client)

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            return asyncio.run(main())

    def delete_deployment(self, name: str) -> None:
        """Delete the deployment ``flow/deployment`` if it exists (`rankloop schedule` serves no pool's deployment)."""
        from prefect.exceptions import ObjectNotFound

        async def go(client: Any) -> None:
            with contextlib.suppress(ObjectNotFound):
                await client.delete_deployment((await client.read_deployment_by_name(name)).id)

        self.call(go)

    def scheduler_errors(self) -> list[str]:
        """The records of the server's log that report a failure of its scheduler services."""
        return scheduler_errors(self.log.read_text(errors="replace") if self.log else "")


def scheduler_errors(log: str) -> list[str]:
    """The records of a Prefect server's log that report a failure of its scheduler services.

    Told by the record's first line (level, logger, message: ``prefect.server.services.scheduler - Error
    scheduling deployment ...``), not by anything its traceback or SQL parameters mention: a transient SQLite
    lock while another service writes a run's state (``'type': 'SCHEDULED'`` among the parameters) is retried
    by Prefect and is not the scheduler failing.
    """
    failed = []
    for record in _log_records(log):
        first = record.split("\n", 1)[0]
        if "Can't evaluate bulk DML" in record or (
                ("| ERROR" in first or "| CRITICAL" in first or "Traceback" in first) and "schedul" in first.lower()):
            failed.append(record)
    return failed


def _log_records(text: str) -> list[str]:
    """A log split at its timestamped lines (``HH:MM:SS.mmm | LEVEL | ...``), a traceback staying with its record."""
    records: list[str] = []
    for line in text.splitlines():
        if not records or (len(line) > 13 and line[2] == ":" and line[12:15] == " | "):
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


@pytest.fixture(scope="module")
def prefect_server(spawn: Callable[..., Child], tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real ``prefect server start`` on a free local port with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    server = PrefectServer(f"http://127.0.0.1:{port}/api", home)
    child = spawn("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                     "--port", str(port)], server.env())
    try:
        wait_http(f"{server.api_url}/health", child)
        yield dataclasses.replace(server, log=child.log)
    finally:
        child.stop()


def make_demo_home(home: Path, config: SimulationConfig = SMALL) -> dict:
    """Simulate ``config`` into ``<home>/interactions.db``; returns the demo's metadata."""
    from core.settings import Settings
    from rankloop.demo import ensure_demo_source

    return ensure_demo_source(Settings(home=home), config)


# --- a backfilled data home (the backfill test asserts on it; the browser test shows it) -------
BACKFILL_ENDS = ("2026-11-02", "2026-11-09", "2026-11-16")
# Seven weeks ending at the last window end: the first window's 35 days of history are covered.
BACKFILL_SOURCE = SimulationConfig(n_users=300, n_items=100, weeks=7, requests_per_user_week=3.0, end=END, seed=11)
FAST_RANKER = {"RANKLOOP_RANKER__N_ESTIMATORS": "40"}


def isolate_mlflow(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Point RANKLOOP_HOME at ``home``; undo, with ``mp``, what apply_environment() sets globally."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    uri = f"sqlite:///{home.resolve() / 'mlflow.db'}"
    mp.setenv("RANKLOOP_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        mp.setenv(name, uri)
        mp.delenv(name)
    mp.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    mp.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)


@dataclass(frozen=True)
class Backfilled:
    home: Path
    exit_code: int
    output: str


@pytest.fixture(scope="session")
def backfilled(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> Backfilled:
    """``rankloop backfill`` over three missed weekly windows of a fresh simulated source."""
    from typer.testing import CliRunner

    from cli.main import app

    home = tmp_path_factory.mktemp("backfill") / "home"
    make_demo_home(home, BACKFILL_SOURCE)
    with pytest.MonkeyPatch.context() as mp:
        isolate_mlflow(mp, home)
        for key, value in FAST_RANKER.items():
            mp.setenv(key, value)
        result = CliRunner().invoke(app, ["backfill", "--from", "2026-10-27", "--to", BACKFILL_ENDS[-1],
                                          "--home", str(home), "--no-tables"])
    return Backfilled(home, result.exit_code, result.output + (repr(result.exception) if result.exception else ""))


# --- a local webhook receiver ------------------------------------------------------------------
@dataclass
class Webhook:
    url: str
    received: list[dict]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """An HTTP server on 127.0.0.1 that records every JSON body POSTed to it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Webhook(f"http://127.0.0.1:{server.server_address[1]}/hook", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
