"""The weekly retrain's stages as Prefect tasks, declared once (``flows/weekly.py``; the per-day tasks of
a Dask run are in ``flows/executors.py``)."""

from __future__ import annotations

from flows.tasks import stage_task
from rankloop import checks, distributed, drift, recovery, stages

recover = stage_task(recovery.heal, "recover", transient_retries=2)
extract = stage_task(stages.extract, "extract", transient_retries=2)
validate = stage_task(stages.validate, "validate")  # a contract failure is never retried
build_dataset = stage_task(distributed.local_build_dataset, "labels-and-features")
train_ranker = stage_task(stages.train_ranker, "train-ranker")
champion = stage_task(stages.champion_per_query_ndcg, "score-champion", transient_retries=2)
record = stage_task(stages.record_ranker, "log-and-register", transient_retries=2)
judge = stage_task(stages.judge_ranker, "gate-ranker")
fit_tables = stage_task(stages.fit_tables, "refit-tables")
check_drift = stage_task(drift.check_drift, "drift")
replay = stage_task(checks.replay_ranker, "replay")
promote = stage_task(stages.promote, "promote")
