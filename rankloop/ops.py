"""Operations around a run: idempotency by run key, summaries, notifications, weekly windows, and
the Prefect server behind ``rankloop schedule``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from core.errors import RankLoopError, Reason
from core.runtime import ensure_experiment
from core.settings import Settings

log = logging.getLogger(__name__)

SUMMARY_ARTIFACT = "summary.json"


def find_completed_run(settings: Settings, key: str) -> dict[str, Any] | None:
    """The summary of an earlier completed run with the same run key, or None."""
    import mlflow

    experiment_id = ensure_experiment(settings)
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`rankloop.run_key` = '{key}' and tags.`rankloop.completed` = 'true'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    summary = mlflow.artifacts.load_dict(f"runs:/{run_id}/{SUMMARY_ARTIFACT}")
    return summary | {"reused_run": True}


def publish_summary(run_id: str, summary: dict[str, Any]) -> str:
    """Attach the summary (JSON + Markdown) to the MLflow run and mark the run completed."""
    import mlflow

    markdown = summary_markdown(summary)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_dict(summary, SUMMARY_ARTIFACT)
        mlflow.log_text(markdown, "summary.md")
        mlflow.set_tag("rankloop.completed", "true")
    return markdown


def _f(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def summary_markdown(summary: dict[str, Any], title: str = "weekly retrain") -> str:
    """A short Markdown report of a run (or of its failure)."""
    lines = [f"# RankLoop {title}, window ending {str(summary.get('window_end', ''))[:10]}", "",
             f"**status:** {summary.get('status')}", ""]
    if summary.get("status") == "failed":
        lines += [f"**failed stage:** {summary.get('stage')}", "", f"**error:** {summary.get('error')}", ""]
    rows = [
        ("rows in", summary.get("rows_in")), ("rows quarantined", summary.get("rows_quarantined")),
        ("features", summary.get("features")), ("test NDCG@10", summary.get("ndcg_at_10")),
        ("champion NDCG@10 (same test week)", summary.get("champion_ndcg_at_10")),
        ("popularity NDCG@10", summary.get("popularity_ndcg_at_10")),
        ("gate verdict", summary.get("verdict")), ("reasons", "; ".join(summary.get("reasons") or [])),
        ("new version", summary.get("version")), ("promoted", summary.get("promoted")),
        ("champion before -> after", f"{_f(summary.get('champion_before'))} -> {_f(summary.get('champion_after'))}"),
    ]
    lines += ["| what | value |", "| --- | --- |", *(f"| {k} | {_f(v)} |" for k, v in rows if v is not None)]
    for kind, info in (summary.get("tables") or {}).items():
        lines.append(f"| {kind} table | v{info.get('version')} {info.get('verdict')} ({info.get('headline')}) |")
    return "\n".join(lines) + "\n"


def needs_attention(summary: dict[str, Any]) -> bool:
    """A failed run, or a gate that held or failed (ranker or any table)."""
    if summary.get("status") == "failed" or summary.get("verdict") in {"HOLD", "FAIL"}:
        return True
    return any(t.get("verdict") == "FAIL" for t in (summary.get("tables") or {}).values())


def notify(settings: Settings, summary: dict[str, Any]) -> list[str]:
    """Send the summary to the configured webhook and/or file; returns where it went.

    A notification that cannot be delivered is logged, never raised: it must not mask the
    failure it reports.
    """
    sent: list[str] = []
    payload = {"event": "rankloop.run", "at": datetime.now(UTC).isoformat(), **summary}
    if settings.ops.notify_file:
        path = Path(settings.ops.notify_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(payload, default=str) + "\n")
            sent.append(str(path))
        except OSError as e:
            log.error("could not write the notification to %s: %s", path, e)
    if settings.ops.notify_webhook:
        import httpx

        try:
            httpx.post(settings.ops.notify_webhook, json=json.loads(json.dumps(payload, default=str)),
                       timeout=10).raise_for_status()
            sent.append("webhook")
        except httpx.HTTPError as e:
            log.error("could not deliver the notification to the webhook: %s", type(e).__name__)
    return sent


def weekly_ends(start: date, end: date) -> list[date]:
    """Every Monday in ``[start, end]``: the window ends of the weekly runs between two dates."""
    if end < start:
        raise ValueError(f"--to ({end}) is before --from ({start})")
    first = start + timedelta(days=(7 - start.weekday()) % 7)
    out = []
    while first <= end:
        out.append(first)
        first += timedelta(days=7)
    return out


SERVER_START_TIMEOUT_S = 120


@contextlib.contextmanager
def local_prefect_server(prefect_home: Path, timeout_s: float = SERVER_START_TIMEOUT_S) -> Iterator[str]:
    """A ``prefect server start`` of our own on a free local port, its database and log
    (``server.log``) in ``prefect_home``; yields its API URL and stops it on exit.

    Prefect's ephemeral API, what a process without ``PREFECT_API_URL`` gets, runs no scheduler
    service: served deployments would never get a scheduled run.

    Raises:
        RankLoopError: the server exited or did not answer within ``timeout_s`` (``unreachable``).
    """
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    prefect_home.mkdir(parents=True, exist_ok=True)
    log_path = prefect_home / "server.log"
    # The CLI quiets Prefect's console for itself; the server's log keeps Prefect's levels (its services' errors).
    env = {k: v for k, v in os.environ.items() if k not in {"PREFECT_API_URL", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"}}
    env.update(PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with open(log_path, "ab") as log_file:
        # Its own session: Ctrl-C reaches only us, and the server outlives serve()'s pausing of the schedules.
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(httpx, f"{url}/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                what = f"exited with code {server.returncode}" if server.poll() is not None else \
                    f"did not answer within {timeout_s:.0f} s"
                raise RankLoopError(f"the local Prefect server {what} (its log: {log_path})", reason=Reason.UNREACHABLE,
                                    hint="read its log, or start one (`prefect server start`) and set PREFECT_API_URL")
            time.sleep(0.5)
        log.info("Prefect server %s (log %s)", url, log_path)
        yield url
    finally:
        _stop_group(server)


def _answers(httpx: Any, url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process's group (the server's web and service workers go too)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
