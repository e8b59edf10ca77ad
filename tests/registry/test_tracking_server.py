"""The registry against an MLflow tracking server backed by PostgreSQL (started and stopped here)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import pytest
import requests

from registry import history, load
from registry.promote import promote, rollback
from registry.store import aliases

from .conftest import feature_frame, point_mlflow_at, register_ranker

pytestmark = pytest.mark.postgres
STARTUP_TIMEOUT_S = 120


@dataclass
class Server:
    uri: str
    command: list[str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start (or restart, on the same port and database) and wait until healthy."""
        with open(self.log, "ab") as out:
            # no job runner (huey consumers): the registry needs none, and it slows start-up
            env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        _wait_healthy(self)

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()

    def stop(self) -> None:
        """Stop the server and its workers (its own process group) if still running."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_uri(postgres_uri: str, database: str, scheme: str) -> str:
    return urlparse(postgres_uri)._replace(scheme=scheme, path=f"/{database}").geturl()


def _admin(postgres_uri: str, statement: str) -> None:
    conn = psycopg2.connect(_database_uri(postgres_uri, "postgres", "postgresql"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process is None or server.process.poll() is not None:
            code = server.process.returncode if server.process else None
            pytest.fail(f"mlflow server exited with {code}:\n{server.log.read_text()[-3000:]}")
        try:
            if requests.get(f"{server.uri}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    pytest.fail(f"mlflow server not healthy after {STARTUP_TIMEOUT_S}s:\n{server.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_uri: str) -> Iterator[Server]:
    """``mlflow server`` on a fresh PostgreSQL database and a temporary artifact directory."""
    database = f"rankloop_registry_test_{uuid.uuid4().hex[:10]}"
    _admin(postgres_uri, f'CREATE DATABASE "{database}"')
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        # the explicit driver: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed
        "--backend-store-uri",
        _database_uri(postgres_uri, database, "postgresql+psycopg2"),
        "--artifacts-destination",
        str(tmp / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    srv = Server(f"http://127.0.0.1:{port}", command, tmp / "server.log")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        _admin(postgres_uri, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_promote_load_then_serve_from_cache_when_the_server_dies(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = point_mlflow_at(monkeypatch, tmp_path / "home", uri=server.uri)
    v1, v2 = register_ranker(store, 1), register_ranker(store, 2)
    promote("ranker", v1, decision=None, actor="t", reason="first", forced=True, client=store.client)
    rollback("ranker", to=v2, actor="t", reason="try v2", client=store.client)
    assert aliases(store.client, "ranker") == {"champion": v2, "previous": v1}
    assert [e.reason for e in history("ranker", client=store.client) if e.alias == "champion"] == [
        "first",
        "try v2",
    ]
    served = load("ranker", settings=store.settings)
    assert (served.version, served.from_cache) == (v2, False)

    server.stop()
    with caplog.at_level(logging.WARNING, logger="registry.loader"):
        offline = load("ranker", settings=store.settings, probe_timeout=2.0)
    assert (offline.version, offline.from_cache) == (v2, True)
    assert any(
        "serving ranker version" in r.getMessage() and "from cache" in r.getMessage() for r in caplog.records
    )
    assert offline.predict(feature_frame()).shape == (6,)


def _rankloop(args: list[str], home: Path, uri: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the ``rankloop`` script as on-call would; returns the process and its wall time."""
    env = {**os.environ, "RANKLOOP_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "rankloop"), *args], env=env, capture_output=True,
                          text=True, timeout=180)
    return done, time.monotonic() - started


def test_on_call_with_the_server_down_fails_fast_rolls_back_offline_and_reconciles_after_restart(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.ensure_running()
    home = tmp_path / "home"
    store = point_mlflow_at(monkeypatch, home, uri=server.uri)
    v1, v2 = register_ranker(store, 61), register_ranker(store, 62)
    for v in (v1, v2):  # each promotion verifies and caches its version on this host
        promote("ranker", v, decision=None, actor="t", reason="weekly", forced=True, client=store.client)
    served = load("ranker", settings=store.settings)
    assert served.version == v2

    server.stop()
    for args in (["rollback", "ranker", "--reason", "v2 is bad"], ["history", "ranker"], ["models"]):
        done, seconds = _rankloop(args, home, server.uri)
        print(f"rankloop {' '.join(args)}: exit {done.returncode} in {seconds:.1f} s")
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 7, done.stderr[-3000:]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert lines[0].startswith(f"error (unreachable): the registry at {server.uri} is unreachable")

    done, seconds = _rankloop(["rollback", "ranker", "--offline", "--reason", "v2 halves the CTR"], home, server.uri)
    print(f"rankloop rollback ranker --offline: exit {done.returncode} in {seconds:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"ranker version {v1} pinned on this host (was {v2})" in " ".join(done.stdout.split())
    assert served.refresh() is True and (served.version, served.from_cache) == (v1, True)

    server.start()
    assert served.refresh() is False and served.version == v1  # the pin holds until the registry has it
    assert aliases(store.client, "ranker") == {"champion": v2, "previous": v1}
    done, _ = _rankloop(["history", "ranker", "--json"], home, server.uri)  # the next registry operation
    assert done.returncode == 0, done.stderr[-3000:]
    assert aliases(store.client, "ranker") == {"champion": v1, "previous": v2}
    last = [m for m in json.loads(done.stdout) if m["alias"] == "champion"][-1]
    assert (last["action"], last["from_version"], last["to_version"], last["status"]) == ("rollback", v2, v1, "committed")
    assert last["reason"].startswith("v2 halves the CTR (offline rollback on")
    assert not (home / "registry" / "offline-ranker.json").exists()
    assert served.refresh() is False and (served.version, served.from_cache) == (v1, False)
