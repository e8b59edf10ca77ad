"""A canary password in the source URI and in the tracking URI is stored and printed nowhere: not in
the data home (Prefect's and MLflow's databases included), not in the tracking server's store or
artifacts, not in any command's output or ``--json``, not in a notification (a real PostgreSQL source
with a password, a real ``mlflow server``, Prefect's local API in the data home)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml

from core.settings import Settings
from rankloop.stages import resolve_source_uri

from .conftest import BIN, END, SMALL, Child, child_env, free_port, wait_http

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.postgres]

CANARY = f"Can@ry:{uuid.uuid4().hex[:12]}"  # an '@' and a ':' in the password: redaction must parse it
TRACKING_CANARY = f"trk{uuid.uuid4().hex[:12]}"


def _pg_source(postgres_uri: str, tmp_path: Path) -> tuple[str, Path, list[str]]:
    """The demo's tables in PostgreSQL under unique names; the URI with the canary password, a mapping."""
    from rankloop.simulator import items_table, make_world, simulate, users_table
    from sources import write_table

    suffix = uuid.uuid4().hex[:8]
    names = {"interactions": f"rl_secret_events_{suffix}", "items": f"rl_secret_items_{suffix}",
             "users": f"rl_secret_users_{suffix}"}
    for i, chunk in enumerate(simulate(SMALL)):
        write_table(postgres_uri, names["interactions"], chunk, mode="replace" if i == 0 else "append")
    world = make_world(SMALL)
    write_table(postgres_uri, names["items"], items_table(world))
    write_table(postgres_uri, names["users"], users_table(world))
    mapping = yaml.safe_load((Path(__file__).resolve().parents[2] / "sources/mappings/rankloop.yaml").read_text())
    mapping["table"] = names["interactions"]
    mapping["catalog"]["items"]["table"] = names["items"]
    mapping["catalog"]["users"]["table"] = names["users"]
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    # PostgreSQL here trusts local connections: any password is accepted, so the canary reaches the driver.
    user_and_host = postgres_uri.split("://", 1)[1]
    user, host = user_and_host.split("@", 1)
    return f"postgresql://{user}:{quote(CANARY, safe='')}@{host}", tmp_path / "mapping.yaml", list(names.values())


@pytest.fixture
def tracking_server(spawn: Callable[..., Child], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "tracking"
    root.mkdir()
    port = free_port()
    child = spawn("mlflow-server", [str(BIN / "mlflow"), "server", "--backend-store-uri",
                                    f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
                                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                  child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    try:
        wait_http(f"http://127.0.0.1:{port}/health", child)
        yield f"http://alice:{TRACKING_CANARY}@127.0.0.1:{port}", root
    finally:
        child.stop()


def _found(root: Path, secrets: list[str]) -> list[str]:
    """Files under ``root`` holding any of ``secrets`` (bytes, like grep -a -r)."""
    needles = [s.encode() for s in secrets]
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def test_no_canary_anywhere(postgres_uri: str, tmp_path: Path, tracking_server: tuple[str, Path]) -> None:
    tracking_uri, tracking_root = tracking_server
    source, mapping, tables = _pg_source(postgres_uri, tmp_path)
    home = tmp_path / "home"
    notify = home / "notifications.jsonl"
    env = child_env(RANKLOOP_HOME=str(home), MLFLOW_TRACKING_URI=tracking_uri, RANKLOOP_OPS__NOTIFY_FILE=str(notify),
                    RANKLOOP_RANKER__N_ESTIMATORS="40")
    env.pop("PREFECT_HOME")  # Prefect's local API and database: <home>/prefect, as for a user
    outputs: list[str] = []

    def rankloop(*args: str, code: int = 0) -> None:
        done = subprocess.run([str(BIN / "rankloop"), *args], env=env, capture_output=True, text=True, timeout=900)
        outputs.extend([done.stdout, done.stderr])
        assert done.returncode == code, (args, done.stdout[-2000:], done.stderr[-2000:])

    try:
        rankloop("train", "--source", source, "--mapping", str(mapping), "--end", END.date().isoformat(), "--json")
        # A failing run: its error, notification and Prefect state must be clean too.
        missing = mapping.with_name("missing.yaml")
        missing.write_text(mapping.read_text().replace(tables[0], tables[0] + "_gone"))
        rankloop("train", "--source", source, "--mapping", str(missing), "--end", END.date().isoformat(), code=2)
        for args in (("runs", "--json"), ("models", "--json"), ("history", "ranker", "--json"), ("runs",),
                     ("models",)):
            rankloop(*args)
    finally:
        import psycopg2

        with psycopg2.connect(postgres_uri) as conn, conn.cursor() as cur:
            for table in tables:
                cur.execute(f'DROP TABLE IF EXISTS "{table}"')
    secrets = [CANARY, quote(CANARY, safe=""), TRACKING_CANARY]
    assert notify.is_file() and "failed" in notify.read_text()
    assert (home / "prefect").is_dir(), "Prefect's local database should be in the data home"
    assert _found(home, secrets) == []
    assert _found(tracking_root, secrets) == []  # the tracking server's store and artifacts
    assert [o for o in outputs if any(s in o for s in secrets)] == []
    # The source the runs used is still recorded (run tags), without its password.
    assert _found(tracking_root, ["postgresql://postgres:***@127.0.0.1"]) != []


def test_a_password_in_a_flow_parameter_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.errors import ConfigError

    monkeypatch.delenv("RANKLOOP_SOURCE__URI", raising=False)
    with pytest.raises(ConfigError) as info:
        resolve_source_uri(Settings(), "postgresql://reader:s3cret@db/app", None)
    line = info.value.one_line()
    assert "s3cret" not in line and "postgresql://reader:***@db/app" in line
    assert "RANKLOOP_SOURCE__URI" in line and "Secret block" in line
    # A redacted parameter takes its password from the configured source, when it is the same source.
    monkeypatch.setenv("RANKLOOP_SOURCE__URI", "postgresql://reader:s3cret@db/app")
    assert resolve_source_uri(Settings(), "postgresql://reader:***@db/app", None) == "postgresql://reader:s3cret@db/app"
    with pytest.raises(ConfigError, match="not the same URI"):
        resolve_source_uri(Settings(), "postgresql://reader:***@other/app", None)
    assert resolve_source_uri(Settings(), "postgresql://reader@db/app", None) == "postgresql://reader@db/app"


def test_the_tracking_server_is_really_reached_with_the_userinfo(tracking_server: tuple[str, Path]) -> None:
    uri, _ = tracking_server
    assert httpx.get(f"{uri}/health", timeout=10).status_code == 200
