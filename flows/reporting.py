"""What a weekly flow run leaves behind when it ends: the summary artifact and, when the gate needs
attention or the run failed, the notification. Used by ``flows/weekly.py``."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from core.settings import Settings
from rankloop import ops, stages


def publish(settings: Settings, summary: dict[str, Any], markdown: str, description: str = "RankLoop weekly retrain") -> None:
    """Log the verdict, publish the summary artifact and notify when the gate needs attention."""
    logger = get_run_logger()
    logger.info("ranker v%s %s (test NDCG@10 %.4f, champion %s -> %s)", summary["version"], summary["verdict"],
                summary["ndcg_at_10"], summary["champion_before"], summary["champion_after"])
    create_markdown_artifact(markdown, key="weekly-retrain-summary", description=description)
    if ops.needs_attention(summary):
        logger.warning("gate %s: %s", summary["verdict"], "; ".join(summary["reasons"]))
        ops.notify(settings, summary)


def report_failure(settings: Settings, ctx: stages.RunContext, stage: str, exc: BaseException,
                   extra: dict[str, Any] | None = None) -> None:
    """The failed run's summary (credentials scrubbed; a failed contract's report, quarantine and MLflow
    run) as an artifact and a notification; ``extra`` joins the summary (the run's executor)."""
    from core.errors import ContractViolation
    from sources.uri import scrub

    error = scrub(scrub(f"{type(exc).__name__}: {exc}", settings.source_uri), settings.tracking_uri)
    summary = {"status": "failed", "stage": stage, "error": error, **(extra or {}),
               "window_start": ctx.start.isoformat(), "window_end": ctx.end.isoformat()}
    details = exc.details if isinstance(exc, ContractViolation) else {}
    if details.get("report_path"):  # the failed contract: where its report, quarantine and MLflow run are
        summary.update(details.get("counts") or {}, quarantined_reasons=details.get("reasons"),
                       **{k: details.get(k) for k in ("failed_expectations", "report_path", "quarantine_path",
                                                      "mlflow_run_id")})
    get_run_logger().error("weekly retrain failed at stage %s: %s", stage, summary["error"])
    try:
        create_markdown_artifact(ops.summary_markdown(summary), key="weekly-retrain-summary",
                                 description="RankLoop weekly retrain (failed)")
        if details.get("report_markdown"):
            create_markdown_artifact(details["report_markdown"], key="contract-report",
                                     description="RankLoop data contract report (failed)")
    finally:
        ops.notify(settings, summary)
