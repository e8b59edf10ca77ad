"""The registry against an MLflow tracking server backed by PostgreSQL (started and stopped here)."""

from __future__ import annotations

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
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """Stop the server and its workers (its own process group) if still running."""
        if self.process.poll() is None:
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
        if server.process.poll() is not None:
            pytest.fail(
                f"mlflow server exited with {server.process.returncode}:\n{server.log.read_text()[-3000:]}"
            )
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
    log = tmp / "server.log"
    with open(log, "wb") as out:
        # no job runner (huey consumers): the registry needs none, and it slows start-up
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    srv = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_healthy(srv)
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
