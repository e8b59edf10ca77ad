"""The ``weekly_retrain`` flow: wiring only. Each task wraps one stage in ``rankloop.stages``."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.retry import transient_only
from rankloop import stages

extract = task(stages.extract, name="extract", cache_policy=NONE, retries=2, retry_delay_seconds=10,
               retry_condition_fn=transient_only)
validate = task(stages.validate, name="validate", cache_policy=NONE)
build_dataset = task(stages.build_dataset, name="labels-and-features", cache_policy=NONE)
train_ranker = task(stages.train_ranker, name="train-ranker", cache_policy=NONE)
champion = task(stages.champion_per_query_ndcg, name="score-champion", cache_policy=NONE)
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
) -> dict[str, Any]:
    """Extract the window, validate, build features, train and judge the ranker, refit the tables."""
    settings = stages.settings_for_run(window_end=window_end, source_uri=source_uri, mapping=mapping)
    logger = get_run_logger()
    start, end = settings.window.resolve()
    logger.info("window [%s, %s) from %s", start.isoformat(), end.isoformat(), stages.redacted_source(settings))
    ctx = stages.RunContext.create(settings, start, end)
    extracted = extract(settings, start, end)
    validated = validate(settings, extracted, start, end)
    dataset = build_dataset(settings, validated, extracted, end)
    trained = train_ranker(settings, dataset, ctx.workdir)
    champion_version, champion_ndcg = champion(settings, dataset)
    recorded = record(settings, ctx, extracted, validated, dataset, trained)
    outcome = decide(settings, ctx, recorded, trained, champion_version, champion_ndcg)
    tables = fit_tables(settings, ctx, validated, recorded.run_id) if refit_tables else {}
    summary = stages.summarise(ctx, extracted, validated, dataset, trained, recorded, outcome, tables)
    logger.info("summary: %s", summary)
    return summary
