"""The ``weekly_retrain`` flow: wiring only. Each task wraps one stage in ``rankloop.stages``.

One flow whatever the executor: ``settings.executor.kind`` picks where the data stages run (this
process, or per-day tasks on a Dask cluster: ``flows/executors.py``); from scoring the champion on,
every run calls the same tasks. A run is a transaction: the ranker and each table are registered and
judged first; the last stage promotes what passed (``rankloop.promotion``). A run that fails anywhere
moves no alias.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from core.config.executor import executor_summary
from core.memory import use_arrow_pool
from flows.executors import dask_task_runner, on_dask_runner, record_executor, stages_for
from flows.reporting import publish, report_failure
from flows.tasks import failed_stage
from flows.weekly_tasks import champion, check_drift, judge, promote, record, recover, replay
from rankloop import distributed, ops, recovery, stages


@flow(name="weekly_retrain", log_prints=False)
def weekly_retrain(
    window_end: date | None = None,
    source_uri: str | None = None,
    mapping: str | None = None,
    refit_tables: bool = True,
    force: bool = False,
    scheduled: bool = False,
    source_secret: str | None = None,
) -> dict[str, Any]:
    """Extract the window, validate, build features, train and judge the ranker, refit and judge
    the tables, measure drift, replay the ranker that passed, then promote what passed.

    ``source_uri`` never carries a password (Prefect stores parameters): give it without one, or
    redacted (``postgresql://user:***@host/db``) to use the password of the configured
    ``RANKLOOP_SOURCE__URI``; or name a Prefect Secret block holding the URI in ``source_secret``.
    A run whose key (window end, source, snapshot digest, code version, configuration hash)
    already completed returns that run's summary unless ``force``. A ``scheduled`` run that
    starts more than ``ops.max_lateness_hours`` late skips.
    """
    settings = stages.settings_for_run(window_end=window_end, source_uri=source_uri, mapping=mapping,
                                       source_secret=source_secret)
    logger = get_run_logger()
    use_arrow_pool(settings.executor.arrow_memory_pool)  # this process's; a LocalCluster's workers get it too
    start, end = settings.window.resolve()
    late = _lateness_hours() if scheduled else 0.0
    if late > settings.ops.max_lateness_hours:
        reason = f"started {late:.1f} h after its schedule (limit {settings.ops.max_lateness_hours} h): skipped"
        logger.warning(reason)
        return {"status": "skipped", "reason": reason, "window_end": end.isoformat()}
    if settings.executor.kind == "dask" and not on_dask_runner():
        # The same flow with prefect-dask's task runner, as a subflow of this run (the deployment's flow
        # object has the default runner; the executor is configuration, read at run time).
        distributed.check_supported(settings)  # before a cluster starts
        return weekly_retrain.with_options(task_runner=dask_task_runner(settings))(
            window_end=window_end, source_uri=source_uri, mapping=mapping, refit_tables=refit_tables, force=force,
            source_secret=source_secret)
    run = stages_for(settings)
    executor = executor_summary(settings.executor)
    logger.info("window [%s, %s) from %s on %s", start.isoformat(), end.isoformat(), stages.redacted_source(settings),
                executor["kind"])
    ctx = stages.RunContext.create(settings, start, end)
    recovery.claim(ctx.workdir, flow_run.get_id())  # first: a kill from here on is found by the next run
    try:
        recover(settings)
        extracted = run.extract(settings, start, end)
        key = stages.run_key(settings, ctx, extracted)
        earlier = None if force else ops.find_completed_run(settings, key)
        if earlier is not None:
            logger.info("run key %s already completed in MLflow run %s: returning its results", key, earlier.get("run_id"))
            run.discard_intermediates(ctx.workdir)
            stages.discard_workdir(ctx.workdir)
            return stages.with_current_champions(settings, earlier)
        validated = run.validate(settings, extracted, start, end, ctx.workdir)
        dataset = run.build_dataset(settings, validated, extracted, end, ctx.workdir)
        trained = run.train_ranker(settings, dataset, ctx.workdir)
        scored = champion(settings, dataset)
        recorded = record(settings, ctx, extracted, validated, dataset, trained, scored)
        record_executor(recorded.run_id, executor)
        candidates = [judge(settings, recorded, trained, scored)]
        if refit_tables:
            candidates += run.fit_tables(settings, ctx, validated, recorded.run_id)
        candidates, drifted = check_drift(settings, ctx, validated, dataset, trained, candidates, recorded.run_id)
        candidates = replay(settings, candidates, dataset)
        outcomes = promote(settings, ctx, candidates, recorded.run_id)
        summary = stages.summarise(ctx, extracted, validated, dataset, trained, recorded, outcomes) | {
            "drift": drifted, "executor": executor}
        markdown = ops.publish_summary(recorded.run_id, summary)
        run.discard_intermediates(ctx.workdir)  # a failed run keeps them for inspection
    except Exception as exc:
        report_failure(settings, ctx, failed_stage(exc), exc, extra={"executor": executor})
        raise
    finally:
        recovery.release(ctx.workdir)
    publish(settings, summary, markdown)
    return summary


def _lateness_hours() -> float:
    scheduled = flow_run.get_scheduled_start_time()
    return max(0.0, (datetime.now(UTC) - scheduled).total_seconds() / 3600.0)
