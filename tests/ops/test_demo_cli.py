"""The quick start as a new user runs it: ``rankloop demo`` in an empty folder, then ``train`` with and
without ``--end`` (the same window: the same run key, nothing retrained), then ``runs``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import BIN, child_env

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

TIMEOUT_S = 900


def _rankloop(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # No RANKLOOP_HOME, PREFECT_HOME, PREFECT_API_URL or MLFLOW_TRACKING_URI: the defaults under ./.rankloop.
    environment = child_env(RANKLOOP_RANKER__N_ESTIMATORS="60", COLUMNS="80", **env)
    environment.pop("PREFECT_HOME", None)
    done = subprocess.run([str(BIN / "rankloop"), *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=environment)
    assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    assert "Traceback" not in done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quickstart")


@pytest.fixture(scope="module")
def demo(folder: Path) -> subprocess.CompletedProcess:
    return _rankloop(folder, "demo")


def test_demo_writes_nothing_outside_its_data_home(folder: Path, demo: subprocess.CompletedProcess) -> None:
    assert sorted(os.listdir(folder)) == [".rankloop"]
    home = folder / ".rankloop"
    assert (home / "mlflow.db").is_file() and (home / "mlartifacts").is_dir() and (home / "prefect").is_dir()
    assert not (home / "mlruns").exists()


def test_demo_prints_the_short_summary(demo: subprocess.CompletedProcess) -> None:
    lines = demo.stdout.splitlines()
    heads = [line.split()[0] for line in lines if line.strip()]
    assert heads == ["window", "data", "ranker", "ranker", "bandit", "linucb", "qtable", "took"], demo.stdout
    assert "promoted (champion - -> 1)" in lines[3]
    assert max(len(line) for line in lines) <= 200  # a short block, not a table dump
    assert demo.stderr == "" or all(not line.startswith("error") for line in demo.stderr.splitlines())


def test_train_with_and_without_end_is_the_demo_window(folder: Path, demo: subprocess.CompletedProcess) -> None:
    first = json.loads(_rankloop(folder, "runs", "--json").stdout)
    assert len(first) == 1
    end = first[0]["window_end"][:10]
    for args in (("train",), ("train", "--end", end)):
        again = _rankloop(folder, *args, "--json")
        summary = json.loads(again.stdout)
        assert summary["reused_run"] is True and summary["run_id"] == first[0]["run_id"], args
        assert summary["champion_now"] == 1
    assert len(json.loads(_rankloop(folder, "runs", "--json").stdout)) == 1  # no second run


def test_runs_reads_at_80_columns_with_numbers_as_numbers(folder: Path, demo: subprocess.CompletedProcess) -> None:
    rows = json.loads(_rankloop(folder, "runs", "--json").stdout)
    assert isinstance(rows[0]["rows"], int) and isinstance(rows[0]["ndcg_at_10"], float)
    text = _rankloop(folder, "runs").stdout
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert rows[0]["window_end"][:10] in text


@pytest.mark.parametrize("verbose", [False, True])
def test_third_party_warnings_show_only_with_verbose(verbose: bool) -> None:
    """MLflow forces its colour-coded 'Add type hints to the `predict` method' warning through its own
    simplefilter("once") when a PythonModel subclass is defined (ours, for the policy tables)."""
    code = (f"from cli.main import configure_output; configure_output({verbose}); "
            "import models.policy_tracking; print('imported')")
    done = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr[-2000:]
    assert ("Add type hints" in done.stderr) is verbose, done.stderr[-2000:]
    if not verbose:
        assert "\x1b[" not in done.stderr and "Warning" not in done.stderr
