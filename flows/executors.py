"""Where the weekly retrain's data stages run: in the flow's process (:class:`LocalStages`) or as per-day
tasks on a Dask cluster (:class:`DaskStages`, through prefect-dask's ``DaskTaskRunner``). Wiring only.

Both take and return the same typed results (``stages.Extracted``, ``stages.Validated``,
``stages.Dataset``, ``stages.TrainedRanker``, the tables' candidates), so ``flows/weekly.py`` is one flow
whatever the executor: everything from scoring the champion on (registry, gate, drift, replay,
promotion, summary) is the same tasks called the same way. See docs/scale-out.md.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import unmapped

from core.settings import Settings
from flows.tasks import stage_task
from flows.weekly_tasks import build_dataset, extract, fit_tables, train_ranker, validate
from rankloop import distributed, stages

if TYPE_CHECKING:
    from rankloop.promotion import Candidate


class LocalStages:
    """Each data stage once over the whole window, in this process (the tables one request day at a time)."""

    def extract(self, settings: Settings, start: datetime, end: datetime) -> stages.Extracted:
        return extract(settings, start, end)

    def validate(self, settings: Settings, extracted: stages.Extracted, start: datetime, end: datetime,
                 workdir: Path) -> stages.Validated:
        return validate(settings, extracted, start, end, workdir)

    def build_dataset(self, settings: Settings, validated: stages.Validated, extracted: stages.Extracted,
                      end: datetime, workdir: Path) -> stages.Dataset:
        return build_dataset(settings, validated, extracted, end, workdir)

    def train_ranker(self, settings: Settings, dataset: stages.Dataset, workdir: Path) -> stages.TrainedRanker:
        return train_ranker(settings, dataset, workdir)

    def fit_tables(self, settings: Settings, ctx: stages.RunContext, validated: stages.Validated,
                   parent_run_id: str | None) -> list[Candidate]:
        return fit_tables(settings, ctx, validated, parent_run_id)

    def discard_intermediates(self, workdir: Path) -> None:
        stages.discard_intermediates(workdir)


# The per-day stages on the cluster (rankloop.distributed): mapped tasks the DaskTaskRunner sends to workers.
extract_block = stage_task(distributed.extract_block, "extract-days", transient_retries=2)
combine_days = stage_task(distributed.combine_extracts, "combine-extracts", transient_retries=2)
validate_days = stage_task(distributed.validate_partitioned, "validate")  # a contract failure is never retried
cut_by_key = stage_task(distributed.bucket_days, "labels-cut")
label_users = stage_task(distributed.label_bucket, "labels")
combine_labels = stage_task(distributed.combine_labels, "labels-combine")
featurise_users = stage_task(distributed.featurise_users, "features-users")
featurise_items = stage_task(distributed.featurise_items, "features-items")
combine_features = stage_task(distributed.combine_features, "features-days")
split_days = stage_task(distributed.partitioned_dataset, "time-split")


def _train_on_cluster(settings: Settings, dataset: stages.Dataset, workdir: Path, scheduler: str) -> stages.TrainedRanker:
    """``distributed.train_ranker_distributed`` driven from the flow's process with a client of the
    cluster at ``scheduler``. Not submitted to a worker: a task there holds one of that worker's
    threads while it waits for the training, and LightGBM needs every worker's (a LocalCluster of
    1-thread workers deadlocked, or trained on the other workers only)."""
    from distributed import Client

    with Client(scheduler) as client:
        return distributed.train_ranker_distributed(settings, dataset, workdir, client)


def _tables_on_cluster(settings: Settings, ctx: stages.RunContext, validated: distributed.PartitionedValidated,
                       parent_run_id: str | None, scheduler: str) -> list[Candidate]:
    """``distributed.fit_tables_distributed`` (rewards and table statistics per request day on the
    cluster at ``scheduler``); runs in the flow's process, where the registry and MLflow are reached."""
    from distributed import Client

    with Client(scheduler) as client:
        return distributed.fit_tables_distributed(settings, ctx, validated, parent_run_id, client)


train_on_cluster = stage_task(_train_on_cluster, "train-ranker-dask")
tables_on_cluster = stage_task(_tables_on_cluster, "refit-tables-dask")


class DaskStages:
    """The data stages by UTC day on the flow's Dask cluster: extraction, features and the tables' statistics
    per day, the labels per bucket of users, the contract once over the window's day files, the ranker with
    ``lightgbm.dask``.

    One instance serves one run: it keeps the run's day partitions (the combined extract, the valid rows per
    day) between the stages, which take and return the same results as :class:`LocalStages`.
    """

    def __init__(self) -> None:
        self._extract: distributed.PartitionedExtract | None = None
        self._valid: distributed.PartitionedValidated | None = None

    def extract(self, settings: Settings, start: datetime, end: datetime) -> stages.Extracted:
        windows = distributed.block_windows(start, end, settings.executor.days_per_task)
        blocks = extract_block.map(unmapped(settings), [w[0] for w in windows], [w[1] for w in windows])
        self._extract = combine_days(settings, [f.result() for f in blocks], start, end)
        return self._extract.extracted

    def validate(self, settings: Settings, extracted: stages.Extracted, start: datetime, end: datetime,
                 workdir: Path) -> stages.Validated:
        combined = self._partitions("_extract", extracted, "extracted")
        self._valid = validate_days.submit(settings, combined, start, end, workdir).result()
        return self._valid.validated

    def build_dataset(self, settings: Settings, validated: stages.Validated, extracted: stages.Extracted,
                      end: datetime, workdir: Path) -> stages.Dataset:
        valid = self._partitions("_valid", validated, "validated")
        columns = distributed.label_columns(valid.valid_paths)
        buckets = distributed.label_bucket_count(settings, len(valid.valid_paths))
        cut = cut_by_key.map(distributed.cut_blocks(valid.valid_paths, settings.executor.days_per_task,
                                                    settings.executor.feature_bucket_rows),
                             unmapped(valid.valid_paths), unmapped(buckets), unmapped(columns), unmapped(workdir),
                             item_buckets=unmapped(buckets), settings=unmapped(settings))
        cuts = [f.result() for f in cut]
        inputs = distributed.bucket_inputs(cuts)
        labels = label_users.map(unmapped(settings), list(inputs), list(inputs.values()), unmapped(workdir))
        labelled = combine_labels(settings, [f.result() for f in labels], extracted, workdir)
        # Features per bucket of users, then per bucket of items, each from its bucket's events and the window's
        # day parts (features.window); then each block of query days joins the two.
        windows = [c.window for c in cuts]
        blocks = distributed.feature_blocks(list(labelled.impression_paths), settings.executor.days_per_task)
        users = featurise_users.map(unmapped(settings), list(inputs), list(inputs.values()), unmapped(labelled),
                                    unmapped(windows), unmapped(buckets), unmapped(blocks), unmapped(workdir))
        users = [f.result() for f in users]
        by_item = distributed.item_inputs(cuts)
        items = featurise_items.map(unmapped(settings), list(by_item), list(by_item.values()),
                                    [[u.items[b] for u in users if b in u.items] for b in by_item],
                                    unmapped(labelled), unmapped(windows), unmapped(blocks), unmapped(workdir))
        items = [f.result() for f in items]
        parts = combine_features.map(unmapped(settings), blocks, unmapped(labelled), unmapped(users), unmapped(items),
                                     unmapped(workdir))
        return split_days(settings, [part for f in parts for part in f.result()], labelled, end, workdir)

    def train_ranker(self, settings: Settings, dataset: stages.Dataset, workdir: Path) -> stages.TrainedRanker:
        return train_on_cluster(settings, dataset, workdir, scheduler_address())

    def fit_tables(self, settings: Settings, ctx: stages.RunContext, validated: stages.Validated,
                   parent_run_id: str | None) -> list[Candidate]:
        valid = self._partitions("_valid", validated, "validated")
        return tables_on_cluster(settings, ctx, valid, parent_run_id, scheduler_address())

    def discard_intermediates(self, workdir: Path) -> None:
        distributed.discard_intermediates(workdir)

    def _partitions(self, name: str, result: Any, attribute: str) -> Any:
        """This run's partitions behind ``result`` (the stage before made both)."""
        held = getattr(self, name)
        if held is None or getattr(held, attribute) is not result:
            raise RuntimeError(f"DaskStages: {attribute} is not the one this run's previous stage returned")
        return held


def stages_for(settings: Settings) -> LocalStages | DaskStages:
    """The data stages of ``settings.executor.kind``.

    Raises:
        ConfigError: a setting the Dask stages do not honour yet (``distributed.check_supported``).
    """
    if settings.executor.kind == "dask":
        distributed.check_supported(settings)
        return DaskStages()
    return LocalStages()


def scheduler_address() -> str:
    """The scheduler of the flow's task runner (an existing cluster, or the LocalCluster it started)."""
    from prefect_dask import get_dask_client

    with get_dask_client() as client:
        return client.scheduler.address


def dask_task_runner(settings: Settings) -> Any:
    """prefect-dask's task runner for ``settings.executor`` (an existing scheduler, or a LocalCluster whose
    workers report to this process's Prefect API: ``ExecutorSettings.task_runner_kwargs``)."""
    from prefect.client.orchestration import get_client
    from prefect_dask import DaskTaskRunner

    api_url = None
    if not settings.executor.address:
        with get_client(sync_client=True) as client:  # the API in use: configured, a test harness's, or temporary
            api_url = str(client.api_url).rstrip("/")
    return DaskTaskRunner(**settings.executor.task_runner_kwargs(api_url=api_url))


def on_dask_runner() -> bool:
    """Whether the current flow run's tasks go to a Dask cluster."""
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    return context is not None and isinstance(context.task_runner, DaskTaskRunner)


def record_executor(run_id: str, executor: dict[str, Any]) -> None:
    """The executor (no credentials) as the run's ``executor.*`` params and ``rankloop.executor`` tag."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({f"executor.{k}": v for k, v in executor.items()})
        mlflow.set_tag("rankloop.executor", executor["kind"])


__all__ = ["DaskStages", "LocalStages", "dask_task_runner", "on_dask_runner", "record_executor", "scheduler_address",
           "stages_for"]
