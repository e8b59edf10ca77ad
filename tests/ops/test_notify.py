"""Notifications: a held gate or a failed run reaches the webhook and the file, as JSON."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from .conftest import Webhook, free_port, isolate_mlflow

HELD = {"status": "completed", "window_end": "2026-11-16T00:00:00+00:00", "verdict": "HOLD",
        "reasons": ["inconclusive: lower bound of NDCG@10 difference -0.0132 (mean +0.0011, 412 queries) < -0.0"], "version": 4, "promoted": False}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook) -> Path:
    home = tmp_path / "home"
    isolate_mlflow(monkeypatch, home)
    monkeypatch.setenv("RANKLOOP_OPS__NOTIFY_WEBHOOK", webhook.url)
    monkeypatch.setenv("RANKLOOP_OPS__NOTIFY_FILE", str(tmp_path / "notify" / "runs.jsonl"))
    return tmp_path / "notify" / "runs.jsonl"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_held_gate_reaches_the_webhook_and_the_file(env: Path, webhook: Webhook) -> None:
    from core.settings import Settings
    from rankloop import ops

    assert ops.needs_attention(HELD)
    sent = ops.notify(Settings(), HELD)
    assert sent == [str(env), "webhook"]
    for payload in (webhook.received[-1], _lines(env)[-1]):
        assert payload["event"] == "rankloop.run"
        assert payload["verdict"] == "HOLD" and payload["reasons"] == HELD["reasons"]


def test_an_unreachable_webhook_is_logged_not_raised(
    env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from core.settings import Settings
    from rankloop import ops

    monkeypatch.setenv("RANKLOOP_OPS__NOTIFY_WEBHOOK", f"http://127.0.0.1:{free_port()}/nobody")
    sent = ops.notify(Settings(), {"status": "failed", "stage": "extract", "error": "boom"})
    assert sent == [str(env)]
    assert _lines(env)[-1]["stage"] == "extract"
    assert "could not deliver the notification to the webhook" in caplog.text


@pytest.mark.prefect
def test_a_failed_weekly_run_notifies_its_stage_and_error(
    env: Path, webhook: Webhook, tmp_path: Path, prefect_api: None
) -> None:
    from flows.weekly import weekly_retrain

    missing = tmp_path / "gone.db"
    with pytest.raises(Exception, match="gone.db"):
        weekly_retrain(window_end=date(2026, 11, 16), source_uri=f"sqlite:///{missing}")
    for payload in (webhook.received[-1], _lines(env)[-1]):
        assert payload["status"] == "failed" and payload["stage"] == "extract"
        assert "gone.db" in payload["error"]
        assert payload["window_end"].startswith("2026-11-16")


@pytest.mark.prefect
def test_a_failed_bandit_refresh_notifies_too(env: Path, webhook: Webhook, tmp_path: Path, prefect_api: None) -> None:
    from flows.bandit_refresh import daily_bandit_refresh

    with pytest.raises(Exception, match="gone.db"):
        daily_bandit_refresh(window_end=date(2026, 11, 17), source_uri=f"sqlite:///{tmp_path / 'gone.db'}")
    payload = webhook.received[-1]
    assert payload["flow"] == "daily_bandit_refresh"
    assert payload["status"] == "failed" and payload["stage"] == "extract" and "gone.db" in payload["error"]
    assert _lines(env)[-1] == payload
