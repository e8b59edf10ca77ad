"""The daily flows that watch live releases: ``daily_ab_report`` (the A/B report of live arms, to
MLflow) and ``guardrail`` (revert a champion its own traffic shows worse). Wiring only: the work is
``rankloop.ab`` and ``rankloop.guard``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.tasks import failed_stage, stage_task
from rankloop import ab, guard, ops, stages

read_requests = stage_task(ab.read_requests, "read-requests", transient_retries=2)
log_report = stage_task(ab.log_report, "log-ab-report", transient_retries=2)
run_guard = stage_task(guard.run_guard, "guard")


@flow(name="daily_ab_report", log_prints=False)
def daily_ab_report(end: date | None = None, days: int = 7) -> dict[str, Any]:
    """The A/B report of the ``days`` days before ``end`` (default: today, 00:00 UTC), logged to MLflow
    (experiment ``<experiment>-ab``) and as the Prefect artifact ``ab-report``."""
    settings = stages.settings_for_run()
    last = end or datetime.now(UTC).date()
    stop = datetime(last.year, last.month, last.day, tzinfo=UTC)
    start = stop - timedelta(days=days)
    try:
        report = ab.ab_report(read_requests(settings, start, stop))
        run_id = log_report(settings, report, start, stop)
    except Exception as exc:
        ops.notify(settings, {"status": "failed", "flow": "daily_ab_report", "stage": failed_stage(exc),
                              "error": f"{type(exc).__name__}: {exc}"})
        raise
    create_markdown_artifact(ab.markdown(report, start, stop), key="ab-report", description="RankLoop A/B report")
    get_run_logger().info("A/B report %s .. %s: %d requests (MLflow run %s)", start.date(), stop.date(),
                          report["requests"], run_id)
    return report | {"mlflow_run_id": run_id}


@flow(name="guardrail", log_prints=False)
def guardrail(kind: str | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Judge each kind's champion (or only ``kind``) on its live traffic since the promotion and revert it
    when it is worse beyond the margin; every revert is notified and recorded in the ledger."""
    settings = stages.settings_for_run()
    logger = get_run_logger()
    try:
        verdicts = run_guard(settings, (kind,) if kind else guard.KINDS, dry_run=dry_run)
    except Exception as exc:
        ops.notify(settings, {"status": "failed", "flow": "guardrail", "stage": failed_stage(exc),
                              "error": f"{type(exc).__name__}: {exc}"})
        raise
    lines = [guard.verdict_line(v) for v in verdicts]
    for v, line in zip(verdicts, lines, strict=True):
        (logger.warning if v.status == "reverted" else logger.info)(line)
    create_markdown_artifact("# RankLoop guardrail\n\n" + "\n".join(f"- {line}" for line in lines), key="guardrail",
                             description="RankLoop guardrail verdicts")
    return [v.to_dict() for v in verdicts]
