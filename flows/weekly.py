"""The ``weekly_retrain`` flow: wiring only. Each task wraps one stage in ``rankloop.stages``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from flows.reporting import publish, report_failure
from flows.retry import transient_only
from rankloop import ops, stages

extract = task(stages.extract, name="extract", cache_policy=NONE, retries=2, retry_delay_seconds=10,
               retry_condition_fn=transient_only)
validate = task(stages.validate, name="validate", cache_policy=NONE, retries=0)  # a contract failure is never retried
build_dataset = task(stages.build_dataset, name="labels-and-features", cache_policy=NONE)
train_ranker = task(stages.train_ranker, name="train-ranker", cache_policy=NONE)
champion = task(stages.champion_per_query_ndcg, name="score-champion", cache_policy=NONE, retries=2,
                retry_delay_seconds=10, retry_condition_fn=transient_only)
record = task(stages.record_ranker, name="log-and-register", cache_policy=NONE, retries=2,
              retry_delay_seconds=10, retry_condition_fn=transient_only)
decide = task(stages.gate_and_promote, name="gate-and-promote", cache_policy=NONE)
fit_tables = task(stages.fit_tables, name="refit-tables", cache_policy=NONE)


@flow(name="weekly_retrain", log_prints=False)
def weekly_retrain(
    window_end: date | None = None,
    source_uri: str | None = None,
    mapping: str | None = None,
    refit_tables: bool = True,
    force: bool = False,
    scheduled: bool = False,
) -> dict[str, Any]:
    """Extract the window, validate, build features, train and judge the ranker, refit the tables.

    A run whose key (window end, source, snapshot digest, code version, configuration hash)
    already completed returns that run's summary unless ``force``. A ``scheduled`` run that
    starts more than ``ops.max_lateness_hours`` late skips.
    """
    settings = stages.settings_for_run(window_end=window_end, source_uri=source_uri, mapping=mapping)
    logger = get_run_logger()
    start, end = settings.window.resolve()
    late = _lateness_hours() if scheduled else 0.0
    if late > settings.ops.max_lateness_hours:
        reason = f"started {late:.1f} h after its schedule (limit {settings.ops.max_lateness_hours} h): skipped"
        logger.warning(reason)
        return {"status": "skipped", "reason": reason, "window_end": end.isoformat()}
    if settings.executor.kind == "dask":  # the executor hook (docs/scale-out.md): the same run on a Dask cluster
        from flows.weekly_dask import run as run_on_dask

        return run_on_dask(window_end=window_end, source_uri=source_uri, mapping=mapping,
                           refit_tables=refit_tables, force=force)
    logger.info("window [%s, %s) from %s", start.isoformat(), end.isoformat(), stages.redacted_source(settings))
    ctx = stages.RunContext.create(settings, start, end)
    stage = "extract"
    try:
        extracted = extract(settings, start, end)
        key = stages.run_key(settings, ctx, extracted)
        earlier = None if force else ops.find_completed_run(settings, key)
        if earlier is not None:
            logger.info("run key %s already completed in MLflow run %s: returning its results", key, earlier.get("run_id"))
            return earlier
        stage = "validate"
        validated = validate(settings, extracted, start, end, ctx.workdir)
        stage = "labels-and-features"
        dataset = build_dataset(settings, validated, extracted, end, ctx.workdir)
        stage = "train-ranker"
        trained = train_ranker(settings, dataset, ctx.workdir)
        stage = "score-champion"
        champion_version, champion_ndcg = champion(settings, dataset)
        stage = "log-and-register"
        recorded = record(settings, ctx, extracted, validated, dataset, trained)
        stage = "gate-and-promote"
        outcome = decide(settings, ctx, recorded, trained, champion_version, champion_ndcg)
        stage = "refit-tables"
        tables = fit_tables(settings, ctx, validated, recorded.run_id) if refit_tables else {}
        stage = "summary"
        summary = stages.summarise(ctx, extracted, validated, dataset, trained, recorded, outcome, tables)
        markdown = ops.publish_summary(recorded.run_id, summary)
        stages.discard_intermediates(ctx.workdir)  # a failed run keeps them for inspection
    except Exception as exc:
        report_failure(settings, ctx, stage, exc)
        raise
    publish(settings, summary, markdown)
    return summary


def _lateness_hours() -> float:
    scheduled = flow_run.get_scheduled_start_time()
    return max(0.0, (datetime.now(UTC) - scheduled).total_seconds() / 3600.0)
