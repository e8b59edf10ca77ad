"""A run SIGKILLed in each stage leaves nothing half-done in use; one registry operation clears the
registry's debris, and the next run clears the rest and completes (real processes, a real Prefect
server, the SQLite MLflow store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import BIN, PrefectServer, make_demo_home

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

STAGES = ("recover", "extract", "validate", "labels-and-features", "train-ranker", "score-champion",
          "log-and-register", "gate-ranker", "refit-tables", "promote")
KINDS = ("ranker", "bandit", "linucb", "qtable")
RUN_TIMEOUT_S = 600
END = "2026-11-16"  # make_demo_home's data ends here


def _env(server: PrefectServer, home: Path, trees: int) -> dict[str, str]:
    return server.env(RANKLOOP_HOME=str(home), RANKLOOP_RANKER__N_ESTIMATORS=str(trees))


def _kill_at(stage: str, env: dict[str, str]) -> str:
    """``rankloop train --force -v``, SIGKILLed as soon as it logs that ``stage`` started; its log."""
    process = subprocess.Popen([str(BIN / "rankloop"), "-v", "train", "--force", "--end", END], env=env, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    seen: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        if f"rankloop.progress: {stage} started" in line:
            os.killpg(process.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "the run never reached the stage"
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"{stage}: the run ended by itself:\n{''.join(seen)[-3000:]}"
    return "".join(seen)


def _registry_state(home: Path) -> dict:
    """Pending ledger entries, RUNNING MLflow runs and the aliases, read straight from the store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{home / 'mlflow.db'}"
    # The registry URI too: without it MLflow takes the process's global one, which an earlier
    # in-process test may have pointed at another home (it read that home's aliases once in CI).
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    pending = client.search_runs(experiments, filter_string="tags.`ledger.status` = 'pending'")
    aliases = {}
    for kind in KINDS:
        try:
            aliases[kind] = {a: int(v) for a, v in client.get_registered_model(f"rankloop.{kind}").aliases.items()}
        except MlflowException:
            aliases[kind] = {}
    return {"running": [r.info.run_name for r in running], "pending": [r.info.run_id for r in pending],
            "aliases": aliases}


def _flow_runs(server: PrefectServer) -> dict[str, str]:
    async def read(client):  # noqa: ANN001, ANN202
        return await client.read_flow_runs()

    return {str(r.id): r.state.type.value for r in server.call(read)}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, prefect_server: PrefectServer) -> Path:
    home = tmp_path_factory.mktemp("kills") / "home"
    make_demo_home(home)
    done = subprocess.run([str(BIN / "rankloop"), "train", "--end", END, "--json"], env=_env(prefect_server, home, 40),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return home


def test_a_kill_in_any_stage_heals_at_the_next_operation(home: Path, prefect_server: PrefectServer) -> None:
    before = _registry_state(home)["aliases"]
    assert before["ranker"].get("champion") == 1
    for i, stage in enumerate(STAGES):
        _kill_at(stage, _env(prefect_server, home, 41 + i))  # another model each time: it is judged, never equal
        # One registry operation (on-call reading the history) clears the registry's debris.
        history = subprocess.run([str(BIN / "rankloop"), "history", "ranker", "--json"],
                                 env=_env(prefect_server, home, 40), capture_output=True, text=True, timeout=120)
        assert history.returncode == 0, history.stderr
        state = _registry_state(home)
        assert state["pending"] == [], stage
        assert state["running"] == [], (stage, state["running"])
        for kind, aliases in state["aliases"].items():
            if "previous" in aliases:
                assert aliases["previous"] != aliases["champion"], (stage, kind, aliases)
        # Nothing half-done is in use: every champion still loads and verifies.
        from core.settings import Settings
        from registry import load

        os.environ["RANKLOOP_HOME"] = str(home)
        try:
            for kind, aliases in state["aliases"].items():
                if "champion" in aliases:
                    assert load(kind, settings=Settings()).version == aliases["champion"]
        finally:
            del os.environ["RANKLOOP_HOME"]
    # The next run completes, and clears the rest: Prefect runs of the dead processes, old intermediates.
    done = subprocess.run([str(BIN / "rankloop"), "train", "--force", "--end", END, "--json"], env=_env(prefect_server, home, 39),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["status"] == "completed"
    states = _flow_runs(prefect_server)
    assert "RUNNING" not in states.values() and "PENDING" not in states.values(), states
    assert list(states.values()).count("CRASHED") == len(STAGES), states  # every killed run
    kept = [d for d in (home / "runs").glob("*/*/data") if d.is_dir()]
    assert len(kept) <= 2, kept  # ops.keep_failed_runs
    assert not list((home / "runs").rglob(".*.tmp")), "half-written temporaries left in the kept run folders"
    assert not list((home / "runs").glob("*/*/owner.json"))
    assert _registry_state(home)["running"] == []
