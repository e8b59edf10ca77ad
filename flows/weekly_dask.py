"""The weekly retrain on a Dask cluster (``RANKLOOP_EXECUTOR__KIND=dask``): wiring only.

The per-day stages (``rankloop.distributed``) run as mapped tasks on the cluster through
prefect-dask's ``DaskTaskRunner``; the ranker trains with ``lightgbm.dask`` on the same cluster;
the tables' rewards and sufficient statistics are computed per request day on the workers and
combined into the local refit; scoring the champion, registry, gate, promotion and the tables'
judging are the local code, called exactly as ``flows/weekly.py`` calls it. See docs/scale-out.md.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run

from core.config.executor import executor_summary
from flows.reporting import publish, report_failure
from flows.tasks import failed_stage, stage_task
from flows.weekly_tasks import (  # the same tasks: one registry/gate path
    champion,
    judge,
    promote,
    record,
    recover,
)
from rankloop import distributed, ops, recovery, stages

extract_day = stage_task(distributed.extract_day, "extract-day", transient_retries=2)
combine = stage_task(distributed.combine_extracts, "combine-extracts", transient_retries=2)
validate = stage_task(distributed.validate_partitioned, "validate")
label = stage_task(distributed.label_partitions, "labels")
featurise = stage_task(distributed.featurise_day, "features-day")
split = stage_task(distributed.partitioned_dataset, "time-split")


def _train_ranker(settings: Any, dataset: stages.Dataset, workdir: Path, scheduler: str) -> stages.TrainedRanker:
    """``distributed.train_ranker_distributed`` driven from the flow's process with a client of the
    cluster at ``scheduler``. Not submitted to a worker: a task there holds one of that worker's
    threads while it waits for the training, and LightGBM needs every worker's (a LocalCluster of
    1-thread workers deadlocked, or trained on the other workers only)."""
    from distributed import Client

    with Client(scheduler) as client:
        return distributed.train_ranker_distributed(settings, dataset, workdir, client)


train_ranker = stage_task(_train_ranker, "train-ranker-dask")


def _fit_tables(settings: Any, ctx: stages.RunContext, validated: distributed.PartitionedValidated,
                parent_run_id: str | None, scheduler: str) -> list[Any]:
    """``distributed.fit_tables_distributed`` (rewards and table statistics per request day on the
    cluster at ``scheduler``); runs in the flow's process, where the registry and MLflow are reached."""
    from distributed import Client

    with Client(scheduler) as client:
        return distributed.fit_tables_distributed(settings, ctx, validated, parent_run_id, client)


fit_tables = stage_task(_fit_tables, "refit-tables-dask")


def _scheduler_address() -> str:
    """The scheduler of the flow's task runner (an existing cluster, or the LocalCluster it started)."""
    from prefect_dask import get_dask_client

    with get_dask_client() as client:
        return client.scheduler.address


def task_runner(settings: Any) -> Any:
    """prefect-dask's task runner for ``settings.executor`` (an existing scheduler, or a LocalCluster)."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(**settings.executor.task_runner_kwargs())


def run(window_end: date | None = None, source_uri: str | None = None, mapping: str | None = None,
        refit_tables: bool = True, force: bool = False, source_secret: str | None = None) -> dict[str, Any]:
    """The Dask flow on the cluster the settings name (the executor hook of ``flows/weekly.py`` calls it)."""
    settings = stages.settings_for_run(window_end=window_end, source_uri=source_uri, mapping=mapping,
                                       source_secret=source_secret)
    distributed.check_supported(settings)  # before a cluster starts
    return weekly_retrain_dask.with_options(task_runner=task_runner(settings))(
        window_end=window_end, source_uri=source_uri, mapping=mapping, refit_tables=refit_tables, force=force,
        source_secret=source_secret)


@flow(name="weekly_retrain_dask", log_prints=False)
def weekly_retrain_dask(window_end: date | None = None, source_uri: str | None = None, mapping: str | None = None,
                        refit_tables: bool = True, force: bool = False,
                        source_secret: str | None = None) -> dict[str, Any]:
    """Extract by day, validate, label, featurise by day, train on the cluster, judge; refit the
    tables; promote what passed at the end (as ``flows/weekly.py``)."""
    settings = stages.settings_for_run(window_end=window_end, source_uri=source_uri, mapping=mapping,
                                       source_secret=source_secret)
    distributed.check_supported(settings)
    logger = get_run_logger()
    start, end = settings.window.resolve()
    executor = executor_summary(settings.executor)
    logger.info("window [%s, %s) from %s on %s", start.isoformat(), end.isoformat(), stages.redacted_source(settings),
                executor)
    ctx = stages.RunContext.create(settings, start, end)
    recovery.claim(ctx.workdir, flow_run.get_id())
    try:
        recover(settings)
        windows = distributed.day_windows(start, end)
        days = extract_day.map(unmapped(settings), [w[0] for w in windows], [w[1] for w in windows])
        combined = combine(settings, [f.result() for f in days], start, end)
        extracted = combined.extracted
        key = stages.run_key(settings, ctx, extracted)
        earlier = None if force else ops.find_completed_run(settings, key)
        if earlier is not None:
            logger.info("run key %s already completed in MLflow run %s: returning its results", key, earlier.get("run_id"))
            distributed.discard_intermediates(ctx.workdir)
            stages.discard_workdir(ctx.workdir)
            return stages.with_current_champions(settings, earlier)
        validated = validate.submit(settings, combined, start, end, ctx.workdir).result()
        labelled = label.submit(settings, validated.valid_paths, extracted, ctx.workdir).result()
        day_list = sorted(labelled.impression_paths)
        parts = featurise.map(unmapped(settings), day_list, unmapped(labelled), unmapped(validated.valid_paths),
                                 unmapped(ctx.workdir))
        dataset = split(settings, [f.result() for f in parts], labelled, end, ctx.workdir)
        trained = train_ranker(settings, dataset, ctx.workdir, _scheduler_address())
        scored = champion(settings, dataset)
        recorded = record(settings, ctx, extracted, validated.validated, dataset, trained, scored)
        _record_executor(recorded.run_id, executor)
        candidates = [judge(settings, recorded, trained, scored)]
        if refit_tables:
            candidates += fit_tables(settings, ctx, validated, recorded.run_id, _scheduler_address())
        outcomes = promote(settings, ctx, candidates, recorded.run_id)
        summary = stages.summarise(ctx, extracted, validated.validated, dataset, trained, recorded, outcomes)
        summary["executor"] = executor
        markdown = ops.publish_summary(recorded.run_id, summary)
        distributed.discard_intermediates(ctx.workdir)  # a failed run keeps them for inspection
    except Exception as exc:
        report_failure(settings, ctx, failed_stage(exc), exc, extra={"executor": executor},
                       label="weekly retrain (Dask)")
        raise
    finally:
        recovery.release(ctx.workdir)
    publish(settings, summary, markdown, description="RankLoop weekly retrain (Dask)")
    return summary


def _record_executor(run_id: str, executor: dict[str, Any]) -> None:
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({f"executor.{k}": v for k, v in executor.items()})
        mlflow.set_tag("rankloop.executor", executor["kind"])
