"""The ``daily_bandit_refresh`` flow: refit only the Thompson bandit table from the newest logs.

Wiring only: extract and validate are the weekly flow's stages; the refit, off-policy judgement,
registration and gate are ``rankloop.tables``' (the same calls ``stages.fit_tables`` makes for
its first kind). The ranker, LinUCB and Q tables are left to the weekly retrain.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from core.settings import Settings
from flows.tasks import failed_stage, stage_task
from flows.weekly_tasks import recover
from rankloop import ops, recovery, stages

ACTOR = "daily-bandit-refresh"

extract = stage_task(stages.extract, "extract", transient_retries=2)
validate = stage_task(stages.validate, "validate")
promote = stage_task(stages.promote, "promote")


def _refit_bandit(settings: Settings, ctx: stages.RunContext, validated: stages.Validated) -> Any:
    """Refit the champion bandit with the impressions logged since its data end, judge, register, gate.

    Returns the table's ``rankloop.promotion.Candidate``, or None when nothing was logged after the
    champion's data end.
    """
    import mlflow
    import pandas as pd

    from core.runtime import ensure_experiment
    from models.policy import load_policy_table
    from models.rewards import impression_rewards
    from rankloop.tables import judge_bandit, record_table

    mlflow.set_experiment(experiment_id=ensure_experiment(settings))
    champion = stages.current_champion("bandit", settings)
    table = load_policy_table(champion.path) if champion is not None else None
    imps = impression_rewards(validated.load_events(), settings.rewards)
    if table is not None and table.data_end is not None and (
        imps.empty or pd.to_datetime(imps["ts"], utc=True).max() <= pd.Timestamp(table.data_end)
    ):
        return None
    judged = judge_bandit(imps, table, champion.version if champion else None, settings, ctx.end)
    return record_table(judged, settings, ctx.workdir, ctx.actor, (ctx.start, ctx.end), None,
                        champion)


refit_bandit = stage_task(_refit_bandit, "refit-bandit")


@flow(name="daily_bandit_refresh", log_prints=False)
def daily_bandit_refresh(
    window_end: date | None = None,
    source_uri: str | None = None,
    mapping: str | None = None,
) -> dict[str, Any]:
    """Refit the bandit table on the window ending ``window_end`` (default: today, 00:00 UTC).

    A day without new interactions since the champion's data end skips without registering.
    A failure or a failed gate is notified like the weekly retrain's.
    """
    end_date = window_end or datetime.now(UTC).date()
    settings = stages.settings_for_run(window_end=end_date, source_uri=source_uri, mapping=mapping)
    start, end = settings.window.resolve()
    ctx = replace(stages.RunContext.create(settings, start, end), actor=ACTOR, run_name=f"bandit {end:%Y-%m-%d}")
    recovery.claim(ctx.workdir, flow_run.get_id())
    logger = get_run_logger()
    logger.info("bandit refresh on [%s, %s) from %s", start.isoformat(), end.isoformat(), stages.redacted_source(settings))
    try:
        recover(settings)
        extracted = extract(settings, start, end)
        validated = validate(settings, extracted, start, end, ctx.workdir)
        candidate = refit_bandit(settings, ctx, validated)
        bandit = promote(settings, ctx, [candidate])["bandit"] if candidate is not None else None
        stages.discard_intermediates(ctx.workdir)
    except Exception as exc:
        _report_failure(settings, ctx, failed_stage(exc), exc)
        raise
    finally:
        recovery.release(ctx.workdir)
    return _publish(settings, ctx, bandit)


def _publish(settings: Settings, ctx: stages.RunContext, bandit: dict[str, Any] | None) -> dict[str, Any]:
    window = {"window_start": ctx.start.isoformat(), "window_end": ctx.end.isoformat()}
    if bandit is None:
        reason = "no interactions since the champion bandit's data end: nothing to refit"
        get_run_logger().info(reason)
        return {"status": "skipped", "reason": reason, **window}
    summary = {"status": "completed", **window, "tables": {"bandit": bandit}}
    get_run_logger().info("bandit v%s %s (%s)", bandit["version"], bandit["verdict"], bandit["headline"])
    create_markdown_artifact(ops.summary_markdown(summary, "daily bandit refresh"), key="daily-bandit-refresh-summary",
                             description="RankLoop daily bandit refresh")
    if ops.needs_attention(summary):
        ops.notify(settings, summary | {"flow": "daily_bandit_refresh"})
    return summary


def _report_failure(settings: Settings, ctx: stages.RunContext, stage: str, exc: BaseException) -> None:
    from sources.uri import scrub

    error = scrub(scrub(f"{type(exc).__name__}: {exc}", settings.source_uri), settings.tracking_uri)
    summary = {"status": "failed", "flow": "daily_bandit_refresh", "stage": stage, "error": error,
               "window_start": ctx.start.isoformat(), "window_end": ctx.end.isoformat()}
    get_run_logger().error("daily bandit refresh failed at stage %s: %s", stage, error)
    ops.notify(settings, summary)
