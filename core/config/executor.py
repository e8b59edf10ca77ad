"""Where the weekly retrain's stages run: this process (``local``) or a Dask cluster (``dask``).

Examples::

    RANKLOOP_EXECUTOR__KIND=dask
    RANKLOOP_EXECUTOR__ADDRESS=tcp://scheduler.internal:8786      # an existing cluster
    RANKLOOP_EXECUTOR__LOCAL_CLUSTER_WORKERS=2                    # or: a LocalCluster RankLoop starts

See docs/scale-out.md. Results do not depend on the executor beyond LightGBM's data-parallel training
(each worker's bins and bagging come from its own share of the rows: the Dask model is the same on
every run with the same number of workers, close to but not equal to the local one); the executor is
recorded with every run (``executor_summary``), never its credentials.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator


class ExecutorSettings(BaseModel):
    """The executor of the weekly retrain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["local", "dask"] = Field(
        default="local", description="'local': every stage in this process. 'dask': the stages run on a Dask cluster."
    )
    address: str | None = Field(
        default=None,
        description="Scheduler address of an existing Dask cluster (tcp://host:8786, tls://...). "
        "Without it, kind 'dask' starts a distributed.LocalCluster of local_cluster_workers workers.",
    )
    local_cluster_workers: int = Field(default=2, ge=1, description="Workers of the LocalCluster started when no address is given.")
    threads_per_worker: int = Field(default=1, ge=1, description="Threads per worker of that LocalCluster.")
    memory_limit: str = Field(default="auto", description="Memory limit per worker of that LocalCluster (Dask syntax, e.g. '4GiB').")
    days_per_task: int = Field(
        default=7, ge=1, validation_alias=AliasChoices("days_per_task", "feature_days_per_task"),
        description="Consecutive UTC days one Dask task works on: the extraction snapshots a block of days in one "
        "query, the labels' cut by user (and item) reads a block, the features are joined per block of query days. "
        "More days per task: fewer queries, files and tasks; fewer: more tasks to spread over the workers and less "
        "memory per task. Results do not depend on it. Also read under its former name feature_days_per_task.",
    )
    label_buckets: int = Field(
        default=0, ge=0,
        description="Tasks the Dask labels run in: each labels the whole window's events of one share of the users "
        "(hashed user_id; every label is a function of one user's events). 0: one per days_per_task days of "
        "the window (a task holds about that many days of rows). Results do not depend on it.",
    )
    feature_bucket_rows: int = Field(
        default=1_000_000, ge=0,
        description="From 1.5x this many valid events in the window, the local labels + features stage runs the Dask "
        "flow's label and feature tasks one after the other in its own process, each bucket of users (items) about "
        "this many events of the window (hashed ids), each day joined alone, then the same time split: a step holds "
        "a bucket's or a day's rows, not the window's, so the stage's memory does not grow with the window. The "
        "split, hence the model, is the one-piece build's (tests/features/test_keyed_stage.py). A smaller window "
        "is built in one piece. 0: always in one piece, faster and larger: at 10M interactions "
        "84 s / 2,700 MB in one piece vs 139 s / ~1,500 MB by bucket (docs/performance.md, stop 42). The Dask flow "
        "cuts its label blocks at this many rows too. Windows those tasks do not build (no logged slates, "
        "co-occurrence features) keep the one-piece labels, with the features by bucket.",
    )
    arrow_memory_pool: Literal["jemalloc", "mimalloc", "system"] = Field(
        default="jemalloc",
        description="Arrow's memory pool in the processes that run the stages (core.memory.use_arrow_pool; the "
        "workers of a LocalCluster started here get ARROW_DEFAULT_MEMORY_POOL; an existing cluster's workers need it "
        "in their environment). jemalloc, as pyarrow configures it, hands freed pages back at once; with pyarrow's "
        "own default, mimalloc, the 10M run by bucket (feature_bucket_rows) kept ~0.3-0.5 GB more resident in "
        "every stage (peak 2,166 vs 1,792 MB); the one-piece run's peak is the same with either "
        "(docs/performance.md). A pyarrow built without the pool asked for keeps its default.",
    )
    partitioning: Literal["day"] = Field(
        default="day", description="How extraction, features and training partition the window: one partition per UTC day."
    )

    @model_validator(mode="after")
    def _address_only_for_dask(self) -> ExecutorSettings:
        if self.address is not None and self.kind != "dask":
            raise ValueError(f"executor.address is set ({_redacted(self.address)!r}) but executor.kind is {self.kind!r}; "
                             "set RANKLOOP_EXECUTOR__KIND=dask")
        if self.address is not None and "://" not in self.address:
            raise ValueError(f"executor.address must be a scheduler URL such as tcp://host:8786, got {_redacted(self.address)!r}")
        return self

    def task_runner_kwargs(self, api_url: str | None = None) -> dict[str, Any]:
        """Keyword arguments of prefect_dask.DaskTaskRunner for this executor.

        ``api_url``: the Prefect API the flow reports to, given to the workers of the LocalCluster started
        here (``PREFECT_API_URL`` in their environment). Without it a worker that cannot see the flow's API
        (a temporary one, or one set in a settings context rather than the environment) starts a
        temporary Prefect server of its own on first task, against the same database. An existing
        cluster's workers must be given the API by whoever runs them (docs/scale-out.md)."""
        if self.address:
            return {"address": self.address}
        cluster: dict[str, Any] = {"n_workers": self.local_cluster_workers, "threads_per_worker": self.threads_per_worker,
                                   "memory_limit": self.memory_limit, "processes": True}
        cluster["env"] = {"ARROW_DEFAULT_MEMORY_POOL": self.arrow_memory_pool}
        if api_url:
            cluster["env"]["PREFECT_API_URL"] = api_url
        return {"cluster_class": "distributed.LocalCluster", "cluster_kwargs": cluster}


def _redacted(address: str) -> str:
    """The address without any user:password@ part."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        return address.rsplit("@", 1)[-1]
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"


def feature_buckets(events: int, bucket_rows: int) -> int:
    """Key buckets of the local features stage for a window of ``events`` rows (``feature_bucket_rows``): the
    nearest whole number of buckets of ``bucket_rows`` (a window of 1.001M rows is one piece, not two buckets of
    half a million: the stage by bucket costs its cut and files for no smaller a peak)."""
    return 1 if bucket_rows <= 0 else max(1, (2 * events + bucket_rows) // (2 * bucket_rows))


def executor_summary(settings: ExecutorSettings) -> dict[str, Any]:
    """What a run records about its executor (params, tags, summary): no credentials."""
    out: dict[str, Any] = {"kind": settings.kind, "partitioning": settings.partitioning}
    if settings.kind == "local":
        out["feature_bucket_rows"] = settings.feature_bucket_rows
    if settings.kind == "dask":
        out["days_per_task"] = settings.days_per_task
        out["label_buckets"] = settings.label_buckets
        if settings.address:
            out["address"] = _redacted(settings.address)
        else:
            out["local_cluster_workers"] = settings.local_cluster_workers
            out["threads_per_worker"] = settings.threads_per_worker
    return out
