"""A run is a transaction: a failure in any stage, even after the ranker passed its gate, moves no alias."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from rankloop.simulator import SimulationConfig

END = datetime(2026, 11, 16, tzinfo=UTC)
SMALL = SimulationConfig(n_users=300, n_items=100, weeks=5, requests_per_user_week=3.0, end=END, seed=11)

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _aliases(name: str) -> dict[str, int]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        model = MlflowClient().get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: int(v) for alias, v in model.aliases.items()}


def test_a_crash_in_the_tables_stage_leaves_every_alias_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None
) -> None:
    from core.settings import Settings
    from flows.weekly import weekly_retrain
    from rankloop import tables
    from rankloop.demo import ensure_demo_source

    home = tmp_path / "home"
    monkeypatch.setenv("RANKLOOP_HOME", str(home))
    monkeypatch.setenv("RANKLOOP_OPS__NOTIFY_FILE", str(home / "notifications.jsonl"))
    monkeypatch.setenv("RANKLOOP_RANKER__N_ESTIMATORS", "40")
    ensure_demo_source(Settings(), SMALL)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the Q table could not be refit")

    monkeypatch.setattr(tables, "judge_qtable", broken)
    with pytest.raises(RuntimeError, match="could not be refit"):
        weekly_retrain(window_end=date(2026, 11, 16))
    report = json.loads((home / "notifications.jsonl").read_text().splitlines()[-1])
    assert report["status"] == "failed" and report["stage"] == "refit-tables"
    # The ranker was registered and passed its gate (first version), the bandit and LinUCB tables too:
    # none of them became champion, because the run failed before its promotion stage.
    from mlflow import MlflowClient

    registered = MlflowClient().search_model_versions("name = 'rankloop.ranker'")
    assert len(registered) == 1
    for kind in ("ranker", "bandit", "linucb", "qtable"):
        assert _aliases(f"rankloop.{kind}") == {}, kind
