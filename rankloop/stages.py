"""The weekly retrain's stages as plain functions.

``flows/weekly.py`` wraps each one in a Prefect task and wires them; benchmarks call them
directly to measure orchestration overhead. Each stage takes the settings and what earlier
stages returned, and returns a small typed result: large data (the valid events, the split
feature matrix) is written as Parquet under the run's ``workdir/data`` and each stage reads only
the columns it needs, when it needs them, so nothing large stays alive between stages (or in
Prefect's task states). Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.config.ranker import split_starts
from core.memory import release_memory
from core.schema import CODED_ID_COLUMNS, FEW_VALUED_COLUMNS, INTERACTION_SCHEMA
from core.settings import Settings
from core.version import code_version

if TYPE_CHECKING:
    from data_contracts.validate import ContractResult
    from models.training import SplitParts
    from rankloop.promotion import Candidate
    from registry.loader import LoadedModel

log = logging.getLogger(__name__)

RANKER_MODEL = "rankloop.ranker"


@dataclass(frozen=True)
class Extracted:
    snapshot_path: Path
    digest: str
    rows: int
    reused: bool
    source: str
    items: pa.Table | None = None
    users: pa.Table | None = None
    changed: dict[str, Any] | None = None
    dataset_info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Validated:
    """The contract's verdict; the valid events are a Parquet file (``load_events`` reads them)."""

    events_path: Path
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    quarantine_path: Path | None
    suite_name: str
    suite_version: str
    reasons: dict[str, int] = field(default_factory=dict)
    report_path: Path | None = None  # the contract's Markdown report (logged with the run)
    contract: dict[str, Any] = field(default_factory=dict)  # ContractOutcome.summary()
    metrics: dict[str, float] = field(default_factory=dict)  # contract counts for MLflow

    def load_events(self, columns: Sequence[str] | None = None, *, categorical: Sequence[str] = (),
                    unless_null: Sequence[str] = ()) -> pd.DataFrame:
        """The valid events as pandas: all columns, or those of ``columns`` the file has;
        the ``categorical`` ones as pandas categoricals (codes + the few distinct values). A column of
        ``unless_null`` that holds no value (the file's statistics say so) is not read: for readers that take
        an absent column as all null (a log without the Big Five traits: 325 MB of NaN at 10M events)."""
        names = set(pq.read_schema(self.events_path).names) - null_columns(self.events_path, unless_null)
        if columns is not None:
            columns = [c for c in columns if c in names]
        table = pq.read_table(self.events_path, columns=columns,
                              read_dictionary=[c for c in categorical if c in names] or None)
        # Arrow's buffers are freed column by column as pandas takes them: the table and the frame
        # are never both whole in memory (~0.65 GB less at 10M rows).
        return table.to_pandas(self_destruct=True, split_blocks=True)


def null_columns(path: Path, names: Sequence[str]) -> set[str]:
    """The columns of ``names`` in the Parquet file at ``path`` whose every row group's statistics count only
    nulls (a row group without statistics counts as holding values)."""
    meta = pq.ParquetFile(path).metadata
    leaves = {meta.schema.column(i).path: i for i in range(meta.num_columns)}  # a flat column's leaf: its name
    found = set()
    for name in names:
        at = leaves.get(name)
        if at is None:
            continue
        groups = [meta.row_group(g).column(at).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_null_count and s.null_count == meta.row_group(g).num_rows
               for g, s in enumerate(groups)):
            found.add(name)
    return found


# The optional event columns that labels and features read as all null when absent (``features.labels``' optional
# columns, ``features.context.column_or_null`` and ``event_floats``, the trait features; implicit queries keep no
# column without a value): one whose every value is null (the file's statistics say so) is not read. A layout that
# lacks them (the e-commerce seed's: no value, request, position, propensity, policy, mood or time of day) held
# ~0.2 GB of NaN and null codes at 10M events, and ~0.3 GB more while read.
ABSENT_AS_NULL: tuple[str, ...] = tuple(f.name for f in INTERACTION_SCHEMA if f.nullable)


# Beside the features; position and propensity are the ranker's position-bias inputs, never features (implicit
# queries have neither: their split holds no such column).
SPLIT_KEY_COLUMNS = ("query_id", "user_id", "item_id", "ts", "position", "propensity", "label")


@dataclass(frozen=True)
class Dataset:
    """Impressions with labels and features, split by time (one Parquet file per part)."""

    split: SplitParts  # models.training.SplitFiles here, rankloop.distributed.PartitionedSplit on Dask
    feature_set: str
    feature_set_hash: str
    features: tuple[str, ...]
    impressions: int
    protocol: dict[str, Any] = field(default_factory=dict)  # features.implicit.QueryProtocol.as_dict()


@dataclass(frozen=True)
class TrainedRanker:
    model_path: Path
    report: dict[str, float]
    baselines: dict[str, dict[str, float]]
    per_query_ndcg: np.ndarray
    best_iteration: int
    evals_result: dict[str, Any]
    params: dict[str, Any]
    test_scores: np.ndarray | None = None  # in the test file's row order (the no-churn check compares them)


def extract(settings: Settings, start: datetime, end: datetime, *, catalog: bool = True) -> Extracted:
    """Snapshot the window ``[start, end)`` of the configured source (and, with ``catalog``, read its
    item and user catalogue)."""
    import sources

    snap = sources.extract_snapshot(
        settings.source_uri,
        settings.source.mapping,
        start,
        end,
        settings.snapshot_dir,
        batch_rows=settings.source.batch_rows,
        retries=settings.source.connect_retries,
        retry_delay_s=settings.source.retry_delay_s,
    )
    if snap.rows == 0:
        from core.errors import ContractViolation, Reason

        raise ContractViolation(
            f"the window [{start:%Y-%m-%d}, {end:%Y-%m-%d}) of {sources.redact(settings.source_uri)} "
            f"(mapping {settings.source.mapping}) holds no interactions", reason=Reason.EMPTY,
            details={"window": [start.isoformat(), end.isoformat()], "rows_in": 0},
            hint="choose an --end (a Monday) whose last 5 weeks hold data; `rankloop extract --start ... --end ...` "
                 "over a wide window shows where the data is")
    items, users = sources.read_catalog(settings.source_uri, settings.source.mapping) if catalog else (None, None)
    return Extracted(
        snapshot_path=Path(snap.path),
        digest=snap.digest,
        rows=snap.rows,
        reused=snap.reused,
        source=sources.redact(settings.source_uri),
        items=items,
        users=users,
        changed=snap.previous,
        dataset_info=sources.snapshot_dataset_info(snap),
    )


def validate(settings: Settings, extracted: Extracted, start: datetime, end: datetime, workdir: Path) -> Validated:
    """Run the interaction contract. Quarantine, report and summary go to ``<home>/quarantine/<digest>/``
    (beside the immutable snapshot folder, keyed by its digest); this window's profile to
    ``<home>/contracts/profiles/`` when it passes; the valid rows to ``<workdir>/data/events.parquet``.

    Raises:
        ContractViolation: the gate failed (too many quarantined rows, a batch-level check, too few
            rows); the report and counts are then logged to an MLflow run marked FAILED and the
            error's details name the report, the quarantine file and that run.
    """
    import data_contracts
    from data_contracts.tracking import contract_metrics

    # The snapshot is checked from its file, batch by batch (data_contracts.check_interactions_file):
    # memory holds its key columns, not the window; the valid rows are written as they are found.
    valid_path = workdir / "data" / "events.parquet"
    outcome = data_contracts.validate_snapshot(
        extracted.snapshot_path, window=(start, end), settings=settings.contracts,
        out_dir=settings.quarantine_dir / extracted.digest, profiles_dir=settings.home_dir / "contracts" / "profiles",
        source=extracted.source, mapping=settings.source.mapping, snapshot_digest=extracted.digest,
        extracted_rows=extracted.rows, valid_path=valid_path,
    )
    result, summary = outcome.result, outcome.summary()
    if not result.gate_passed:
        error = result.violation(settings.contracts)
        error.details.update(report_path=str(outcome.report_path), quarantine_path=summary["quarantine_path"],
                             report_markdown=outcome.report_markdown,
                             mlflow_run_id=_log_failed_contract(settings, extracted, start, end, outcome))
        raise error
    validated = Validated(
        events_path=valid_path,
        rows_in=summary["rows_in"],
        rows_valid=summary["rows_valid"],
        rows_quarantined=summary["rows_quarantined"],
        quarantine_path=outcome.quarantine_path,
        suite_name=result.suite_name,
        suite_version=result.suite_version,
        reasons=dict(summary["reasons"]),
        report_path=outcome.report_path,
        contract=summary,
        metrics=contract_metrics(outcome),
    )
    del result, outcome
    release_memory()
    return validated


def _log_failed_contract(settings: Settings, extracted: Extracted, start: datetime, end: datetime,
                         outcome: ContractResult) -> str | None:
    """The failed contract's report and counts in an MLflow run marked FAILED (None if MLflow is unreachable)."""
    from core.runtime import ensure_experiment
    from data_contracts.tracking import log_failed_contract_run

    try:
        return log_failed_contract_run(outcome, experiment_id=ensure_experiment(settings),
                                       run_name=f"weekly {end:%Y-%m-%d} contract failed",
                                       tags=run_tags(settings, start, end, extracted) | _owner_tags())
    except Exception as e:  # noqa: BLE001 - the ContractViolation is the error to raise; the report is on disk
        log.warning("could not log the failed contract to MLflow (%s); the report is at %s", e, outcome.report_path)
        return None


def _owner_tags() -> dict[str, str]:
    from registry import owner_tags

    return owner_tags()


def write_parquet(table: pa.Table, path: Path) -> Path:
    """Write ``table`` to ``path`` atomically; LZ4: these files are read back within the run, so fast beats small."""
    from core.atomic import write_parquet as write

    return write(table, path, compression="lz4")


def discard_intermediates(workdir: Path) -> None:
    """Remove a finished run's intermediate data (``<workdir>/data``); the model and tables stay."""
    shutil.rmtree(workdir / "data", ignore_errors=True)


def discard_workdir(workdir: Path) -> None:
    """Remove the folder of a run that did nothing (its key had already completed)."""
    shutil.rmtree(workdir, ignore_errors=True)
    with contextlib.suppress(OSError):  # the window's folder, when this was its only run
        workdir.parent.rmdir()


def with_current_champions(settings: Settings, summary: dict[str, Any]) -> dict[str, Any]:
    """An earlier run's summary with each kind's champion as it is now (``champion_now``), not as it was."""
    from registry.store import CHAMPION, aliases, make_client

    client = make_client(settings)
    now = {kind: aliases(client, kind).get(CHAMPION) for kind in ("ranker", *(summary.get("tables") or {}))}
    tables = {kind: info | {"champion_now": now.get(kind)} for kind, info in (summary.get("tables") or {}).items()}
    return summary | {"champion_now": now["ranker"], "tables": tables}


def build_dataset(settings: Settings, validated: Validated, extracted: Extracted, end: datetime,
                  workdir: Path) -> Dataset:
    """Graded labels -> point-in-time features -> time split, written to ``<workdir>/data/split/<part>.parquet``."""
    import features
    from core.config.executor import feature_buckets
    from features.implicit import IMPLICIT
    from features.labels import EVENT_COLUMNS as LABEL_COLUMNS
    from features.partitioned import implicit_query_buckets, iter_keyed_columns
    from models.day_split import write_split_from_days
    from models.training import spill, split_rows, unspill, write_split

    items = extracted.items.to_pandas() if extracted.items is not None else None
    users = extracted.users.to_pandas() if extracted.users is not None else None
    feature_columns = features.event_columns(users)
    release_memory()
    # Only what is read; the few-valued text columns and the ids as categoricals (labels and features read
    # them through codes of their values, the same for either dtype: tests/features/test_categorical_input.py).
    events = validated.load_events(list(dict.fromkeys([*LABEL_COLUMNS, *feature_columns])),
                                   categorical=(*FEW_VALUED_COLUMNS, *CODED_ID_COLUMNS),
                                   unless_null=ABSENT_AS_NULL)
    release_memory()  # the read's decompression and decoding pages (~0.5 GB at 10M rows)
    protocol = features.ranking_protocol(events, settings.labels)
    fset = features.get_feature_set(features.feature_set_for(protocol, settings.features))
    # One bucket of users (items) at a time past executor.feature_bucket_rows events (features.partitioned).
    buckets = feature_buckets(len(events), settings.executor.feature_bucket_rows)
    parked = workdir / "data" / "features"
    shutil.rmtree(parked, ignore_errors=True)  # what a killed run left
    parked.mkdir(parents=True, exist_ok=True)
    if protocol.name == IMPLICIT and buckets > 1:
        # Implicit queries made, featurised and split one bucket of users at a time: the window's query rows
        # (19.3M at 10M events of a log without slates) are never in memory together.
        queries = implicit_query_buckets(events, settings.labels, buckets=buckets, folder=parked / "queries",
                                         key_columns=SPLIT_KEY_COLUMNS, query_columns=features.QUERY_COLUMNS)
        n_impressions = queries.n
        check_split_coverage(pd.Series(pd.to_datetime(queries.days, unit="D", utc=True)), end=end,
                             valid_days=settings.ranker.valid_days, test_days=settings.ranker.test_days)
        events = events[[c for c in feature_columns if c in events.columns]]  # the label-only columns go
        columns = iter_keyed_columns(queries, events, fset.features, items=items, users=users,
                                     settings=settings.features, buckets=buckets, scratch=parked)
        del events, items, users  # the builder holds them now, and drops what it has cut
        saved = _saved_columns(columns, parked)
        kept = [k for k, n in zip(queries.keys, queries.rows, strict=True) if n]
        key_columns = [c for c in SPLIT_KEY_COLUMNS if c in queries.key_names()]
        # The split is decided after the features (models.day_split.plan_split): decided before them, with the
        # window's events in memory, the stage's peak (the co-occurrence walk) was ~270 MB higher at 10M events
        # of a log without slates, for no time gained (bench results weekly_10000000_ecommerce_stop49{,b}).
        split = write_split_from_days(kept, key_columns, {n: saved[n] for n in fset.features},
                                      workdir / "data" / "split", parked / "split-keys", end=end,
                                      valid_days=settings.ranker.valid_days, test_days=settings.ranker.test_days)
        if split is None:  # each bucket's queries are runs of rows with plain keys: not expected
            raise RuntimeError("the implicit queries' bucket files cannot be split by query (a query in two runs)")
    else:
        # Logged slates, or implicit queries (their ids as categoricals: 19.3M rows of a log without slates at 10M
        # are ~0.7 GB less than as text; the split's files hold the ids, models.training.write_split). Only the
        # columns the split and the features read, and of implicit queries not the ones no row has a value in
        # (position, propensity: the ranker reads them where the split has them; the features read an absent
        # position as null): grade, policy_version, position and propensity would be 0.6 GB more at that size.
        imps, _ = features.ranking_queries(events, settings.labels, categorical_ids=True,
                                           columns=(*SPLIT_KEY_COLUMNS, *features.QUERY_COLUMNS), null_columns=False,
                                           protocol=protocol)
        events = events[[c for c in feature_columns if c in events.columns]]  # the label-only columns go
        n_impressions = len(imps)
        # The split is decided (and an unsplittable window refused) before any feature is computed.
        check_split_coverage(imps["ts"], end=end, valid_days=settings.ranker.valid_days,
                             test_days=settings.ranker.test_days)
        rows, valid_start, test_start = split_rows(imps, end=end, valid_days=settings.ranker.valid_days,
                                                   test_days=settings.ranker.test_days)
        # The split's key columns and each feature column wait on disk (the key columns ~0.5 GB, the
        # matrix several GB at 10M rows): never in memory together with the builder's working set.
        keys_path = spill(imps[[c for c in SPLIT_KEY_COLUMNS if c in imps.columns]], parked / "keys.parquet")
        queries = imps[[c for c in features.QUERY_COLUMNS if c in imps.columns]]
        del imps  # the label column goes
        columns = iter_keyed_columns(queries, events, fset.features, items=items, users=users,
                                     settings=settings.features, buckets=buckets, scratch=parked)
        del events, queries, items, users  # the builder holds them now, and drops what it has coded
        saved = _saved_columns(columns, parked)
        keys = unspill(keys_path)
        split = write_split(rows, keys, {n: saved[n] for n in fset.features}, workdir / "data" / "split",
                            valid_start=valid_start, test_start=test_start)
        del keys, rows
    shutil.rmtree(parked, ignore_errors=True)
    release_memory()
    return Dataset(split=split, feature_set=fset.name, feature_set_hash=fset.hash, features=tuple(fset.features),
                   impressions=n_impressions, protocol=protocol.as_dict())


def _saved_columns(columns: Iterator[tuple[str, np.ndarray]], parked: Path) -> dict[str, Path]:
    """Each ``(name, values)`` of ``columns`` saved to ``<parked>/<name>.npy``, one at a time."""
    # The ids the builder coded and dropped were Arrow-backed strings: their pages go back to the OS before the
    # features' working set grows (mimalloc keeps freed pages: ~1.2 GB at 10M rows, resident to the end).
    release_memory()
    saved: dict[str, Path] = {}
    for name, values in columns:
        saved[name] = parked / f"{name}.npy"
        np.save(saved[name], values)
        del values
    release_memory()
    return saved


def check_split_coverage(ts: pd.Series, *, end: datetime, valid_days: int, test_days: int) -> None:
    """Refuse a window whose queries leave the train, valid or test part of the time split empty,
    naming the days each part needs and the days that hold data."""
    from core.errors import Reason, TrainingError

    valid_start, test_start = split_starts(end, valid_days=valid_days, test_days=test_days)
    # The days that hold a time, each once (not a day per row: 19.3M rows of a log without slates at 10M).
    stamps = pd.to_datetime(ts, utc=True)
    days = pd.DatetimeIndex(pd.unique(stamps.dt.tz_localize(None).to_numpy().astype("datetime64[D]")))
    del stamps
    days = pd.Series(days[days.notna()].sort_values().as_unit("us").tz_localize("UTC"))
    parts = {"train": days < pd.Timestamp(valid_start),
             "valid": (days >= pd.Timestamp(valid_start)) & (days < pd.Timestamp(test_start)),
             "test": (days >= pd.Timestamp(test_start)) & (days < pd.Timestamp(end))}
    empty = [name for name, mask in parts.items() if not mask.any()]
    if not empty:
        return
    held = list(days)
    span = (f"{len(held)} day(s) with impressions, {held[0]:%Y-%m-%d} .. {held[-1]:%Y-%m-%d}" if held
            else "no impressions")
    need = valid_days + test_days + 1
    first = held[0].date() if held else None
    suggestion = ""
    if first is not None:
        earliest = first + timedelta(days=need)
        earliest += timedelta(days=(7 - earliest.weekday()) % 7)  # a Monday
        suggestion = f", e.g. --end {earliest}"
    raise TrainingError(
        f"the window ending {end:%Y-%m-%d} cannot be split: {', '.join(empty)} part(s) empty (train before "
        f"{valid_start:%Y-%m-%d}, valid {valid_start:%Y-%m-%d} .. {test_start:%Y-%m-%d}, test {test_start:%Y-%m-%d} "
        f".. {end:%Y-%m-%d}); the window has {span}", reason=Reason.EMPTY,
        details={"empty": empty, "days": [f"{d:%Y-%m-%d}" for d in held]},
        hint=f"a weekly retrain needs data on at least {need} days before --end: choose an --end at least "
             f"{need} days after the first event{suggestion}")


def train_ranker(settings: Settings, dataset: Dataset, workdir: Path) -> TrainedRanker:
    """Fit LambdaRank with early stopping on validation NDCG@10; score it and the baselines on the test week.

    The test week is scored as serving scores: the saved model.txt opened by the registry's loader,
    given the feature set's request-time columns only (no logged slot)."""
    from models.ranker import Ranker
    from models.training import group_sizes, training_matrices

    release_memory()
    m = training_matrices(dataset.split, list(dataset.features), max_train_queries=settings.ranker.max_train_queries,
                          max_valid_queries=settings.ranker.max_valid_queries, seed=settings.ranker.seed)
    available, used = m.train_rows_available, len(m.train)
    valid_rows = {"valid_rows_used": len(m.valid), "valid_rows_available": m.valid_rows_available}
    # What the fit reads of the key columns, and then not the query ids (3.1M train and ~2.5M valid rows of text
    # at 10M events of a log without slates): LightGBM's Datasets are built without them.
    train = {"y": m.train["label"].to_numpy(), "group": group_sizes(m.train), "position": m.train.get("position"),
             "propensity": m.train.get("propensity")}
    valid = (m.valid["label"].to_numpy(), group_sizes(m.valid))
    X, X_valid, dtypes = m.X, m.X_valid, m.dtypes
    del m
    release_memory()
    ranker = Ranker.from_settings(settings.ranker)
    ranker.fit(X, train["y"], group=train["group"], eval_set=[(X_valid, valid[0])], eval_group=[valid[1]],
               position=train["position"], propensity=train["propensity"], feature_dtypes=dtypes)
    del X, X_valid, train, valid
    release_memory()
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = workdir / "model.txt"
    ranker.save(model_path)
    params = ranker.get_params() | {"max_train_queries": settings.ranker.max_train_queries,
                                    "train_rows_used": used, "train_rows_available": available,
                                    "max_valid_queries": settings.ranker.max_valid_queries, **valid_rows,
                                    "query_protocol": dataset.protocol.get("name", "logged_slates"),
                                    "position_bias_applied": ranker.position_bias_applied_}
    trained = score_test_week(dataset, model_path, best_iteration=int(ranker.best_iteration_),
                              evals_result=ranker.evals_result_, params=params)
    # What the fit and the scoring freed goes back to the OS, not under the next stages (~0.9 GB at 10M events
    # of a log without slates: the tables and drift stages' peaks stood on it).
    del ranker
    release_memory()
    return trained


def _positive_history(split: SplitParts, part: str) -> pd.DataFrame:
    """``item_id`` and ``label`` of the rows of ``part`` whose label is > 0: the labels read first, then the ids of
    those rows only (every train row's item id was ~0.6 GB of text at 34M rows, for the few that count)."""
    label = split.read(part, ["label"])["label"].to_numpy(dtype=np.float64, na_value=0.0)
    return split.read(part, ["item_id", "label"], rows=label > 0)


def _positive_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows ``models.baselines.popularity_scores`` counts: label > 0 (a missing label counts as 0)."""
    return frame[frame["label"].to_numpy(dtype=np.float64, na_value=0.0) > 0].reset_index(drop=True)


def score_test_week(dataset: Dataset, model_path: Path, *, best_iteration: int, evals_result: dict[str, Any],
                    params: dict[str, Any]) -> TrainedRanker:
    """The trained ranker's figures, however it was trained (here or on a cluster): the test week
    scored as serving scores it (the saved ``model_path`` opened by the registry's loader, given the
    feature set's request-time columns only), and the popularity and similarity baselines."""
    from models.baselines import SIMILARITY_FEATURE, popularity_scores, similarity_scores
    from models.metrics import per_query_ndcg, ranking_report
    from models.training import group_sizes, predict_in_batches, relevant
    from registry.loader import RankerAdapter

    cols = list(dataset.features)
    s = dataset.split
    test, positive = relevant(s, "test", ["query_id", "item_id", "label"])
    g = group_sizes(test)
    served = RankerAdapter(model_path.parent, {"feature_set": {"features": cols}})
    # The features as the model reads them, a batch of rows at a time: the week's matrix is never whole.
    kept = [SIMILARITY_FEATURE] if SIMILARITY_FEATURE in cols else []
    scores, X = predict_in_batches(served.predict, s.iter_matrix("test", cols, rows=positive), kept)
    # Only the rows popularity counts (label > 0), one part at a time: not every train and valid row's item id.
    history = pd.concat([_positive_rows(_positive_history(s, part)) for part in ("train", "valid")], ignore_index=True)
    baselines = {"popularity": ranking_report(test["label"], popularity_scores(history, test), g)}
    del history
    if SIMILARITY_FEATURE in cols:
        baselines["similarity"] = ranking_report(test["label"], similarity_scores(X[[SIMILARITY_FEATURE]]), g)
    else:
        log.warning("no %s feature in set %s: similarity baseline not computed", SIMILARITY_FEATURE, dataset.feature_set)
    return TrainedRanker(
        model_path=model_path,
        report=ranking_report(test["label"], scores, g),
        baselines=baselines,
        per_query_ndcg=per_query_ndcg(test["label"], scores, g, 10),
        best_iteration=best_iteration,
        evals_result=evals_result,
        params=params,
        test_scores=np.asarray(scores, dtype=np.float64),
    )


@dataclass(frozen=True)
class ChampionScores:
    """The ranker champion on this run's test week (all None when there is no champion)."""

    version: int | None = None
    per_query_ndcg: np.ndarray | None = None
    scores: np.ndarray | None = None  # in the test file's row order; None when it could not score
    model_sha256: str | None = None  # of its model.txt, from its manifest
    query_id: np.ndarray | None = None  # of the scored rows, in the same order
    saw_test: str | None = None  # why its figures on this test week are no evidence (it trained on that week)


def champion_per_query_ndcg(settings: Settings, dataset: Dataset) -> ChampionScores:
    """The current champion's per-query NDCG@10 and scores on this run's test week."""
    from models.metrics import per_query_ndcg
    from models.training import group_sizes, predict_in_batches, relevant

    champion = current_champion("ranker", settings)
    if champion is None:
        return ChampionScores()
    saw = champion_saw_test_week(champion.manifest, champion.version, dataset.split.test_start)
    wanted = list(champion.manifest["feature_set"]["features"])
    built = set(pq.read_schema(dataset.split.paths["test"]).names)
    # The test week's relevant queries, as score_test_week reads them for the challenger.
    test, positive = relevant(dataset.split, "test", ["query_id", "label"])
    sha = (champion.manifest.get("files") or {}).get("model.txt")
    missing = [c for c in wanted if c not in built]
    if missing:
        log.warning("champion v%s needs features %s this run did not build; judging it as broken", champion.version, missing)
        return ChampionScores(champion.version, np.zeros(test["query_id"].nunique()), None, sha, saw_test=saw)
    scores, _ = predict_in_batches(champion.predict, dataset.split.iter_matrix("test", wanted, rows=positive))
    return ChampionScores(champion.version, per_query_ndcg(test["label"], scores, group_sizes(test), 10), scores, sha,
                          test["query_id"].to_numpy(), saw_test=saw)


def champion_saw_test_week(manifest: dict[str, Any], version: int | None, test_start: datetime) -> str | None:
    """Why a champion's figures on a test week starting at ``test_start`` are no evidence, or None.

    A ranker learns from its window up to its own test week (train, then validation for early
    stopping). A champion whose learning data reaches past ``test_start`` (a backfill of a week
    older than the champion's window) has seen this test week's outcomes: it would win the
    comparison unfairly.
    """
    window = manifest.get("window") or {}
    if not window.get("end"):
        return None
    end = datetime.fromisoformat(window["end"])
    test_days = ((manifest.get("config") or {}).get("ranker") or {}).get("test_days", 7)
    learned_until = split_starts(end, valid_days=0, test_days=int(test_days))[1]  # the champion's own test start
    start = test_start if test_start.tzinfo else test_start.replace(tzinfo=UTC)
    if learned_until.tzinfo is None:
        learned_until = learned_until.replace(tzinfo=UTC)
    if learned_until <= start:
        return None
    return (f"champion v{version} learned from data up to {learned_until:%Y-%m-%d}, after this test week starts "
            f"({start:%Y-%m-%d}); retrain weeks in order, or promote by hand (`rankloop promote ranker VERSION --reason TEXT`)")


def same_as_champion(trained: TrainedRanker, champion: ChampionScores) -> str | None:
    """Why the challenger is the champion over again (same model bytes, or the same test-week
    scores), or None when it differs."""
    import hashlib

    from models.ranker import Ranker

    if champion.version is None:
        return None
    registered_text = Ranker.load(trained.model_path).model_to_string()  # what record_ranker would register
    if champion.model_sha256 == hashlib.sha256(registered_text.encode()).hexdigest():
        return f"the same model as champion v{champion.version} (identical model.txt)"
    if champion.scores is None or trained.test_scores is None or len(champion.scores) != len(trained.test_scores):
        return None
    if np.array_equal(champion.scores, trained.test_scores):
        return f"the same scores as champion v{champion.version} on every test-week row"
    if champion.query_id is not None and _same_order(champion.scores, trained.test_scores, champion.query_id):
        return f"the same ranking as champion v{champion.version} in every test-week request"
    return None


def _same_order(a: np.ndarray, b: np.ndarray, query_id: np.ndarray) -> bool:
    """Whether two score vectors rank the rows of every query in the same order (what serving shows)."""
    return bool(np.array_equal(np.lexsort((-a, query_id)), np.lexsort((-b, query_id))))


def run_tags(settings: Settings, start: datetime, end: datetime, extracted: Extracted) -> dict[str, str]:
    """Tags every weekly run carries (what the compare view and `rankloop runs` read)."""
    return {
        "rankloop.window_start": start.isoformat(),
        "rankloop.window_end": end.isoformat(),
        "rankloop.source": extracted.source,
        "rankloop.mapping": settings.source.mapping,
        "rankloop.snapshot_digest": extracted.digest,
        "rankloop.code_version": code_version(),
        "rankloop.config_hash": settings.config_hash(),
    }


# --- run context ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RunContext:
    """Where one run keeps its working files, and the window it covers."""

    start: datetime
    end: datetime
    workdir: Path
    run_name: str
    actor: str = "weekly-retrain"

    @classmethod
    def create(cls, settings: Settings, start: datetime, end: datetime) -> RunContext:
        stamp = datetime.now(start.tzinfo).strftime("%Y%m%dT%H%M%S%f")
        workdir = settings.home_dir / "runs" / f"{end:%Y-%m-%d}" / stamp
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(start=start, end=end, workdir=workdir, run_name=f"weekly {end:%Y-%m-%d}", actor=settings.ops.actor)


def settings_for_run(
    *, window_end: Any = None, source_uri: str | None = None, mapping: str | None = None,
    source_secret: str | None = None, now: datetime | None = None,
) -> Settings:
    """The environment's settings with the flow's parameters applied on top.

    The window end is always resolved to a date here (default: the most recent Monday), so a run
    with ``window_end=None`` and one naming that Monday have the same configuration hash and run key.

    Raises:
        ConfigError: the settings are invalid, or ``source_uri`` carries a password (flow parameters
            are stored by Prefect), or a redacted ``source_uri`` does not match the configured source.
    """
    from datetime import UTC

    from core.runtime import apply_environment
    from core.settings import last_monday, load_settings

    settings = load_settings()
    end = window_end or settings.window.end or last_monday(now or datetime.now(UTC)).date()
    updates: dict[str, Any] = {"window": settings.window.model_copy(update={"end": end})}
    source_updates: dict[str, Any] = {}
    uri = resolve_source_uri(settings, source_uri, source_secret)
    if uri is not None:
        source_updates["uri"] = uri
    if mapping is not None:
        source_updates["mapping"] = mapping
    if source_updates:
        updates["source"] = settings.source.model_copy(update=source_updates)
    settings = settings.model_copy(update=updates)
    apply_environment(settings)
    return settings


def resolve_source_uri(settings: Settings, source_uri: str | None, source_secret: str | None) -> str | None:
    """The source URI a run reads, from its parameters, without a password ever being a parameter.

    ``source_uri`` may carry no password, or a redacted one (``user:***@``): the password then comes
    from the configured source (``RANKLOOP_SOURCE__URI`` / the settings file) when that names the same
    source. ``source_secret`` names a Prefect Secret block whose value is the whole URI.
    """
    from core.errors import ConfigError, Reason
    from sources.uri import redact

    how = ("put the URI with its password in RANKLOOP_SOURCE__URI (the worker's environment) or in the "
           "settings file named by RANKLOOP_CONFIG, or in a Prefect Secret block named by --source-secret "
           "/ the source_secret parameter; then pass the URI without its password")
    if source_secret is not None:
        if source_uri is not None:
            raise ConfigError("give either source_uri or source_secret, not both", reason=Reason.BAD_CONFIG,
                              hint="the Secret block holds the whole URI")
        return _secret_value(source_secret)
    if source_uri is None:
        return None
    shown = redact(source_uri)
    if ":***@" in source_uri:
        configured = settings.source.uri
        if configured is not None and redact(configured) == shown:
            return configured
        raise ConfigError(f"source {shown} hides its password, and the configured source "
                          f"({redact(configured) if configured else 'none'}) is not the same URI",
                          reason=Reason.BAD_CONFIG, hint=how)
    if shown != source_uri:
        raise ConfigError(f"the source URI parameter {shown} carries a password, which Prefect would store "
                          "with the flow run", reason=Reason.BAD_CONFIG, hint=how)
    return source_uri


def _secret_value(name: str) -> str:
    from prefect.blocks.system import Secret

    from core.errors import ConfigError, Reason

    try:
        value = Secret.load(name).get()
    except ValueError as e:
        raise ConfigError(f"no Prefect Secret block named {name!r}", reason=Reason.BAD_CONFIG,
                          hint="create it with `prefect block create secret` or in the UI") from e
    if not isinstance(value, str):
        raise ConfigError(f"Prefect Secret block {name!r} does not hold a URI string", reason=Reason.BAD_CONFIG,
                          hint="store the whole source URI as the secret's value")
    return value


def redacted_source(settings: Settings) -> str:
    """The source URI with any password hidden."""
    from sources import redact

    return redact(settings.source_uri)


def current_champion(kind: str, settings: Settings) -> LoadedModel | None:
    """The loaded champion of ``kind``, or None when there is none yet."""
    from registry.loader import champion_or_none

    return champion_or_none(kind, settings)


# --- recording, gate and promotion -----------------------------------------------------------
@dataclass(frozen=True)
class Recorded:
    run_id: str
    version: int | None  # None: identical to the champion, nothing registered
    manifest: dict[str, Any] | None
    unchanged: str | None = None  # why the challenger is the champion over again


def record_ranker(settings: Settings, ctx: RunContext, extracted: Extracted, validated: Validated,
                  dataset: Dataset, trained: TrainedRanker, champion: ChampionScores | None = None) -> Recorded:
    """One MLflow run for the week: data lineage, the ranker, its metrics; register and attach the
    manifest, unless the ranker is the champion over again (then the run records it as unchanged)."""
    import mlflow

    from core.runtime import ensure_experiment
    from models.ranker import Ranker
    from models.tracking import log_ranker_run, run_name
    from registry.publish import publish

    unchanged = same_as_champion(trained, champion) if champion is not None else None
    mlflow.set_experiment(experiment_id=ensure_experiment(settings))
    tags = (run_tags(settings, ctx.start, ctx.end, extracted) | {"rankloop.run_key": run_key(settings, ctx, extracted)}
            | _owner_tags())
    with mlflow.start_run(run_name=run_name(ctx.end, dataset.feature_set), tags=tags) as run:
        _log_data_lineage(extracted, validated, dataset)
        ranker = Ranker.load(trained.model_path)
        ranker.evals_result_, ranker.best_iteration_ = trained.evals_result, trained.best_iteration  # the curves
        # the text model cannot say how it was trained (e.g. position_bias): its parameters as trained
        ranker.set_params(**{k: v for k, v in trained.params.items() if k in ranker.get_params()})
        info = log_ranker_run(
            ranker, test_report=trained.report, baselines=trained.baselines,
            feature_set_name=dataset.feature_set, feature_set_hash=dataset.feature_set_hash,
            params=settings.model_config_dict(), window=(ctx.start, ctx.end),
            snapshot_digest=extracted.digest, code_version=code_version(),
            registered_model_name=None if unchanged else RANKER_MODEL,
        )
        if info is None:
            mlflow.set_tags({"rankloop.unchanged": unchanged, "rankloop.version": str(champion.version)})
            return Recorded(run_id=run.info.run_id, version=None, manifest=None, unchanged=unchanged)
        version = int(info.registered_model_version)
        manifest = publish(
            "ranker", version, settings=settings,
            feature_set={"name": dataset.feature_set, "hash": dataset.feature_set_hash, "features": list(dataset.features)},
            window={"start": ctx.start.isoformat(), "end": ctx.end.isoformat()},
            snapshot_digest=extracted.digest, contract_suite_version=validated.suite_version,
            code_version=code_version(), params=trained.params,
            metrics=trained.report | {f"{b}_{k}": v for b, r in trained.baselines.items() for k, v in r.items()},
            config=settings.model_config_dict(),
        )
        mlflow.set_tag("rankloop.version", str(version))
    return Recorded(run_id=run.info.run_id, version=version, manifest=manifest)


def _log_data_lineage(extracted: Extracted, validated: Validated, dataset: Dataset) -> None:
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    info = extracted.dataset_info
    try:
        with warnings.catch_warnings():  # a local path matches several artifact sources; any is right
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(extracted.snapshot_path))
        mlflow.log_input(MetaDataset(source=source, name=info.get("name", "interactions"), digest=extracted.digest[:36]),
                         context="training")
    except Exception as e:  # noqa: BLE001 - lineage is informative; the digest tag is authoritative
        log.warning("could not log the snapshot as an MLflow dataset input (%s); digest is in the tags", e)
    mlflow.log_metrics({
        "rows_in": validated.rows_in, "rows_valid": validated.rows_valid,
        "rows_quarantined": validated.rows_quarantined, "impressions": dataset.impressions,
        **{f"split_{k}": v for k, v in dataset.split.sizes().items()},
        **validated.metrics,
    })
    if validated.report_path is not None and Path(validated.report_path).is_file():
        mlflow.log_artifact(str(validated.report_path), "data/contract")
        mlflow.log_dict(validated.contract, "data/contract/summary.json")
    mlflow.set_tags({"rankloop.contract_suite": f"{validated.suite_name}@{validated.suite_version}",
                     "rankloop.contract_passed": "true",
                     "rankloop.snapshot_reused": str(extracted.reused).lower()})
    mlflow.log_dict({"snapshot": info, "quarantine": validated.reasons}, "data/lineage.json")
    if dataset.protocol:  # which queries the ranker and the baselines were judged on
        mlflow.set_tag("rankloop.query_protocol", dataset.protocol["name"])
        mlflow.log_dict(dataset.protocol, "data/query_protocol.json")


def judge_ranker(settings: Settings, recorded: Recorded, trained: TrainedRanker,
                 champion: ChampionScores) -> Candidate:
    """Judge the new ranker against the champion on the same test week (nothing is promoted here:
    ``promote`` does it at the end of the run). Returns a ``rankloop.promotion.Candidate``."""
    import mlflow

    from rankloop.promotion import Candidate, Status, candidate_from_decision
    from registry.decision import log_decision
    from registry.gate import ranker_gate

    headline = f"test NDCG@10 {trained.report.get('ndcg_at_10', float('nan')):.4f}"
    if recorded.unchanged:
        with mlflow.start_run(run_id=recorded.run_id):
            mlflow.set_tags({"rankloop.verdict": "UNCHANGED", "rankloop.promoted": "false"})
        return Candidate("ranker", Status.UNCHANGED, champion.version, champion.version, (recorded.unchanged,),
                         headline=headline, run_id=recorded.run_id, verdict="UNCHANGED")
    decision = ranker_gate(trained.per_query_ndcg, champion.per_query_ndcg, settings=settings.gate,
                           challenger_version=recorded.version, champion_version=champion.version,
                           champion_saw_test=champion.saw_test)
    with mlflow.start_run(run_id=recorded.run_id):
        log_decision(decision, run_id=recorded.run_id)
        if champion.per_query_ndcg is not None:
            mlflow.log_metric("champion_ndcg_at_10", float(np.mean(champion.per_query_ndcg)))
        mlflow.set_tags({"rankloop.verdict": decision.verdict.value, "rankloop.promoted": "false"})
    return candidate_from_decision("ranker", decision, version=recorded.version, champion_before=champion.version,
                                   headline=headline, run_id=recorded.run_id,
                                   figures={k: v for k, v in decision.figures.items()})


def promote(settings: Settings, ctx: RunContext, candidates: list[Candidate],
            run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The run's last stage: promote every kind that passed (all or none; ``rankloop.promotion``)."""
    import mlflow

    from rankloop.promotion import promote_candidates

    outcomes = promote_candidates(settings, candidates, actor=ctx.actor, end=ctx.end)
    ranker = outcomes.get("ranker")
    if ranker is not None and run_id is not None:
        with mlflow.start_run(run_id=run_id):
            mlflow.set_tag("rankloop.promoted", str(ranker["promoted"]).lower())
    return outcomes


def run_key(settings: Settings, ctx: RunContext, extracted: Extracted) -> str:
    """Identity of a run: window end, source, snapshot digest, code version, configuration hash."""
    import hashlib

    parts = [ctx.end.isoformat(), extracted.source, settings.source.mapping, extracted.digest,
             code_version(), settings.config_hash()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def summarise(ctx: RunContext, extracted: Extracted, validated: Validated, dataset: Dataset,
              trained: TrainedRanker, recorded: Recorded, outcomes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run's summary: what the CLI prints and the artifacts publish. ``outcomes``: each kind's
    final entry (``promote``'s result): promoted, held, unchanged or skipped, with its reasons."""
    base = {f"{b}_{k}": v for b, r in trained.baselines.items() for k, v in r.items()}
    ranker = outcomes["ranker"]
    figures = ranker.get("figures") or {}
    return {
        "status": "completed",
        "window_start": ctx.start.isoformat(), "window_end": ctx.end.isoformat(),
        "rows_in": validated.rows_in, "rows_quarantined": validated.rows_quarantined,
        "snapshot_digest": extracted.digest, "snapshot_reused": extracted.reused,
        "impressions": dataset.impressions, "feature_set": dataset.feature_set, "features": len(dataset.features),
        "query_protocol": dataset.protocol.get("name", "logged_slates"), "query_protocol_detail": dataset.protocol,
        **trained.report, **base,
        "champion_ndcg_at_10": figures.get("champion_ndcg_at_10"),
        "best_iteration": trained.best_iteration,
        "run_id": recorded.run_id, "version": recorded.version,
        "verdict": ranker["verdict"], "reasons": ranker["reasons"], "promoted": ranker["promoted"],
        "ranker_status": ranker["status"],
        "champion_before": ranker["champion_before"], "champion_after": ranker["champion_after"],
        "tables": {kind: info for kind, info in outcomes.items() if kind != "ranker"},
    }


def fit_tables(settings: Settings, ctx: RunContext, validated: Validated, parent_run_id: str | None) -> list[Candidate]:
    """Refit, judge, register and gate the bandit, LinUCB and Q tables (promotion comes at the run's end):
    :func:`rankloop.tables.fit_tables_by_day` over the valid rows cut into day files, one request day
    at a time in this process (the Dask flow runs the same function on its cluster).

    Returns:
        One ``rankloop.promotion.Candidate`` per kind.
    """
    from rankloop.partitions import InProcess, split_by_day
    from rankloop.tables import fit_tables_by_day

    release_memory()
    # The local features stage may have cut the same rows into the same folder already (by bucket): reused then.
    day_paths = split_by_day(validated.events_path, ctx.workdir / "data" / "days", reuse=True)
    candidates = fit_tables_by_day(settings, day_paths, InProcess(), end=ctx.end, workdir=ctx.workdir,
                                   actor=ctx.actor, window=(ctx.start, ctx.end), parent_run_id=parent_run_id)
    # What the refits freed goes back to the OS, not under the next stage (~0.6 GB at 10M events of a log without
    # slates stood under drift's peak).
    release_memory()
    return candidates
