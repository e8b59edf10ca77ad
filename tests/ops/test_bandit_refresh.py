"""The daily bandit refresh: only the bandit table is refit; a day with nothing new skips."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from .conftest import END, isolate_mlflow, make_demo_home

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None) -> Path:
    home = tmp_path / "home"
    make_demo_home(home)
    isolate_mlflow(monkeypatch, home)
    monkeypatch.setenv("RANKLOOP_OPS__NOTIFY_FILE", str(tmp_path / "notify.jsonl"))
    # The small simulated week logs ~50 top-slot impressions: let off-policy evaluation judge them.
    monkeypatch.setenv("RANKLOOP_OPE__MIN_ESS", "10")
    return home


def _models(home: Path) -> dict[str, list[int]]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    out: dict[str, list[int]] = {}
    for version in client.search_model_versions():
        out.setdefault(version.name, []).append(int(version.version))
    return {name: sorted(v) for name, v in out.items()}


def test_refits_registers_and_gates_only_the_bandit_then_skips_a_day_without_news(home: Path) -> None:
    from mlflow import MlflowClient

    from flows.bandit_refresh import daily_bandit_refresh

    first = daily_bandit_refresh(window_end=END.date())
    assert first["status"] == "completed"
    bandit = first["tables"]["bandit"]
    assert (bandit["version"], bandit["verdict"], bandit["promoted"]) == (1, "PASS", True), bandit
    assert _models(home) == {"rankloop.bandit": [1]}  # no ranker, LinUCB or Q table
    uri = f"sqlite:///{home / 'mlflow.db'}"
    assert int(MlflowClient(uri, uri).get_model_version_by_alias("rankloop.bandit", "champion").version) == 1
    # The simulated logs end at END: a later day brings nothing after the champion's data end.
    later = daily_bandit_refresh(window_end=date(2026, 11, 17))
    assert later["status"] == "skipped" and "nothing to refit" in later["reason"]
    assert _models(home) == {"rankloop.bandit": [1]}
