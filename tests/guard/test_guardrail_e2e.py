"""The issue's drill end to end, as on-call would run it: a deliberately bad ranker is force-promoted
(`rankloop demo --bad-release`), the simulator serves 3 days, and the guardrail reverts it with
ledger actor 'guardrail'. Also: an equal-quality release is never reverted over 3 seeds, the daily
flows (A/B report to MLflow, guardrail), and the drift section of the weekly run's MLflow page."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from registry.ledger import history
from registry.store import aliases

from .conftest import Store, point_mlflow_at

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _cli(*args: str) -> dict | list:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (args, result.output, repr(result.exception))
    # CliRunner mixes in the libraries' own lines (the real CLI quiets them): the JSON is the last document.
    return json.loads(next(line for line in reversed(result.output.splitlines()) if line.startswith(("{", "["))))


def test_a_forced_bad_ranker_is_reverted_by_the_guardrail_after_3_served_days(home_copy: Store,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = str(home_copy.home)
    monkeypatch.setenv("RANKLOOP_OPS__NOTIFY_FILE", str(home_copy.home / "notify.jsonl"))
    first = _cli("demo", "--bad-release", "--serve-days", "1", "--home", home)
    assert first["bad_release"] == 2 and first["served"]["days"] == 1
    assert set(first["served"]["requests"]) == {"ranker:2@2/1", "ranker:1@2/1"}
    drill = history("ranker", client=home_copy.client)[-1]
    assert (drill.actor, drill.forced, drill.to_version) == ("drill", True, 2) and drill.reason.startswith("drill:")
    day1 = {v["kind"]: v for v in _cli("guard", "--home", home)}
    assert day1["ranker"]["status"] == "insufficient_traffic", day1["ranker"]
    assert aliases(home_copy.client, "ranker") == {"champion": 2, "previous": 1}
    more = _cli("demo", "--serve-days", "2", "--home", home)
    assert more["served"]["start"][:10] == "2026-11-17" and more["served"]["end"][:10] == "2026-11-19"
    verdicts = {v["kind"]: v for v in _cli("guard", "--home", home)}
    ranker = verdicts["ranker"]
    assert ranker["status"] == "reverted", ranker
    assert ranker["figures"]["champion_rate"] < ranker["figures"]["previous_rate"] - 0.01
    assert aliases(home_copy.client, "ranker") == {"champion": 1, "previous": 2}
    last = history("ranker", client=home_copy.client)[-1]
    assert (last.actor, last.action, last.to_version) == ("guardrail", "rollback", 1)
    notes = [json.loads(line) for line in (home_copy.home / "notify.jsonl").read_text().splitlines()]
    assert [(n["flow"], n["status"], n["from_version"], n["to_version"]) for n in notes] == [("guardrail", "reverted", 2, 1)]
    report = _cli("ab", "--from", "2026-11-16", "--to", "2026-11-19", "--home", home)
    release = next(r for r in report["kinds"]["ranker"] if r["release"] == "2/1")
    diff = release["difference"]["click_rate"]
    assert diff["diff"] < 0 and diff["high"] < 0 and diff["p_value"] < 0.001
    assert release["arms"]["previous"]["requests"] >= 50
    # The next look respects the guardrail's own rollback: v2 is not judged again.
    assert {v["kind"]: v for v in _cli("guard", "--kind", "ranker", "--home", home)}["ranker"]["status"] == "respected"


def test_an_equal_release_is_not_reverted_over_3_seeds(home_copy: Store, tmp_path: Path) -> None:
    from rankloop import demo
    from rankloop.guard import run_guard
    from rankloop.serving_sim import ServeConfig, serve

    ranker, feature_set = demo.copy_of_champion(home_copy.settings)
    version = demo.register_ranker(home_copy.settings, ranker, feature_set, note="test: equal release")
    demo.force_release(home_copy.settings, version, reason="drill: equal-quality release")
    statuses = []
    for seed in range(3):
        copy = tmp_path / f"seed{seed}"
        shutil.copytree(home_copy.home, copy)
        with pytest.MonkeyPatch.context() as mp:
            store = point_mlflow_at(mp, copy)
            for _ in range(3):
                serve(store.settings, 1, ServeConfig(seed=seed))
                statuses.append(run_guard(store.settings, ("ranker",), dry_run=True)[0].status)
    assert "would_revert" not in statuses, statuses
    assert statuses.count("keep") >= 3, statuses  # it judged, not only waited for traffic


def test_the_daily_flows_write_the_ab_report_and_revert(home_copy: Store) -> None:
    from flows.guardrail import daily_ab_report, guardrail
    from rankloop import demo
    from rankloop.serving_sim import serve

    demo.bad_release(home_copy.settings)
    serve(home_copy.settings, 3)
    report = daily_ab_report(end=date(2026, 11, 19), days=3)
    run = home_copy.client.get_run(report["mlflow_run_id"])
    assert run.data.metrics["ranker.v2.champion.click_rate"] < run.data.metrics["ranker.v1.previous.click_rate"]
    assert {a.path for a in home_copy.client.list_artifacts(run.info.run_id, "ab")} == {"ab/report.json", "ab/report.md"}
    verdicts = {v["kind"]: v for v in guardrail()}
    assert verdicts["ranker"]["status"] == "reverted"
    assert history("ranker", client=home_copy.client)[-1].actor == "guardrail"


def test_the_weekly_run_carries_drift_on_its_mlflow_page(trained_home: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{trained_home / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name("rankloop")
    run = client.search_runs([experiment.experiment_id], "tags.`rankloop.completed` = 'true'")[0]
    metrics = run.data.metrics
    for name in ("drift.features_psi_max", "drift.event_mix_psi", "drift.action_mix_psi", "drift.score_psi",
                 "drift.label_rate_current", "drift.click_rate_current"):
        assert name in metrics, name
    assert metrics["drift.event_mix_psi"] < 0.1  # the simulated world is stationary
    assert {a.path for a in client.list_artifacts(run.info.run_id, "drift")} == {"drift/drift.json", "drift/drift.png"}
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json")).read_text())
    drift = summary["drift"]
    assert drift["held"] == [] and len(drift["top_movers"]) == 5
    assert drift["top_movers"][0]["psi"] == pytest.approx(metrics["drift.features_psi_max"])
    assert "replay: serves" in run.data.tags["gate.reasons"]
    assert run.data.metrics["gate.replay_nonfinite_scores"] == 0
