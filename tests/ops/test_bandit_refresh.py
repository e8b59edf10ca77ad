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
    # The same window again brings nothing after the champion's data end: skipped, nothing registered.
    again = daily_bandit_refresh(window_end=END.date())
    assert again["status"] == "skipped" and "nothing to refit" in again["reason"]
    assert _models(home) == {"rankloop.bandit": [1]}


def test_a_day_with_no_interactions_stops_the_refresh_and_keeps_the_champion(home: Path, tmp_path: Path) -> None:
    """The simulated logs end at END: the next day's window holds an empty day, which is an outage
    (the contract's day-volume check), not "nothing new": the run fails, says which day, notifies,
    and the champion stays."""
    import json

    from mlflow import MlflowClient

    from core.errors import ContractViolation
    from flows.bandit_refresh import daily_bandit_refresh

    assert daily_bandit_refresh(window_end=END.date())["status"] == "completed"
    with pytest.raises(ContractViolation, match=r"day_volume_in_window.*2026-11-16 0 rows"):
        daily_bandit_refresh(window_end=date(2026, 11, 17))
    assert _models(home) == {"rankloop.bandit": [1]}
    uri = f"sqlite:///{home / 'mlflow.db'}"
    assert int(MlflowClient(uri, uri).get_model_version_by_alias("rankloop.bandit", "champion").version) == 1
    notes = [json.loads(line) for line in (tmp_path / "notify.jsonl").read_text().splitlines()]
    failed = [n for n in notes if n.get("status") == "failed"]
    assert failed and failed[-1]["stage"] == "validate" and "2026-11-16" in failed[-1]["error"]
