"""The LightGBM LambdaRank ranker, with the scikit-learn estimator contract.

``Ranker(...)`` only stores its parameters; ``fit`` checks every ranking invariant up front and
reports all problems in one message, trains with early stopping on validation NDCG@10 and keeps
the learned state in attributes ending in ``_``; ``save``/``load`` use LightGBM's native text
format (never pickle).

The logged slot of a training row is never a feature (serving ranks before there is a slot): the
``position_bias`` parameter puts it in the objective instead, with LightGBM's position-bias
treatment (``position`` in the Dataset; the model keeps only the slot-free relevance part) or
with inverse-propensity weights. Either way ``predict`` takes the features alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import lightgbm as lgb
import numpy as np
import pandas as pd
from lightgbm.basic import _ConfigAliases
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from core.config.ranker import RANKER_PARAM_NAMES, PositionBias, RankerSettings
from models.training import FLOAT32_INT_LIMIT, MatrixRows

logger = logging.getLogger(__name__)

# The validation rows LightGBM reads in batches (models.training does not import LightGBM itself).
lgb.Sequence.register(MatrixRows)

# LightGBM parameters the Ranker sets itself; extra_params may not name them (or an alias).
_OWNED_LGB_PARAMS: tuple[str, ...] = (
    "objective", "metric", "eval_at", "verbosity", "num_iterations", "early_stopping_round",
    "first_metric_only", "learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction",
    "bagging_fraction", "bagging_freq", "lambdarank_truncation_level", "num_threads", "seed",
    "deterministic", "force_row_wise", "force_col_wise", "lambdarank_position_bias_regularization",
    "position_column",
)
_DEFAULT_LABEL_GAIN_SIZE = 31  # LightGBM's default label_gain covers labels 0..30
_BAD_NAME_CHARS = frozenset('",:[]{}')
_EXAMPLES = 5


class _StopOnMetric:
    """Run ``lightgbm.early_stopping(first_metric_only=True)`` on ``metric`` of ``dataset`` only.

    LightGBM sorts ``eval_at``, so ``ndcg@5`` would otherwise be the "first metric" that drives
    stopping. The inner callback sees only ``dataset``'s results with ``metric`` moved to the
    front, so validation NDCG@10 decides; the recorded history keeps LightGBM's order.
    """

    def __init__(self, metric: str, stopping_rounds: int, dataset: str = "valid"):
        self.metric = metric
        self.dataset = dataset
        self.inner = lgb.early_stopping(stopping_rounds, first_metric_only=True, verbose=False)
        self.order = self.inner.order
        self.before_iteration = False

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        results = [r for r in env.evaluation_result_list or [] if r[0] == self.dataset]  # r[0]: dataset name
        front = sorted(results, key=lambda r: r[1] != self.metric)  # stable; r[1] is the metric name
        if dataclasses.is_dataclass(env):
            self.inner(dataclasses.replace(env, evaluation_result_list=front))
        else:  # lightgbm < 4.7: CallbackEnv is a namedtuple
            self.inner(env._replace(evaluation_result_list=front))


class Ranker(BaseEstimator):
    """LightGBM LambdaRank over a pandas feature frame; parameters as in :class:`RankerSettings`."""

    def __init__(
        self,
        *,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        n_estimators: int = 400,
        early_stopping_rounds: int | None = 30,
        feature_fraction: float = 0.9,
        bagging_fraction: float = 0.9,
        bagging_freq: int = 1,
        lambdarank_truncation_level: int = 20,
        num_threads: int = 0,
        seed: int = 42,
        extra_params: dict[str, Any] | None = None,
        position_bias: PositionBias = "none",
        position_bias_regularization: float = 0.0,
        propensity_floor: float = 0.05,
    ):
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.bagging_freq = bagging_freq
        self.lambdarank_truncation_level = lambdarank_truncation_level
        self.num_threads = num_threads
        self.seed = seed
        self.extra_params = extra_params
        self.position_bias = position_bias
        self.position_bias_regularization = position_bias_regularization
        self.propensity_floor = propensity_floor

    @classmethod
    def from_settings(cls, settings: RankerSettings) -> Ranker:
        """A Ranker with the parameters of ``settings`` (the split fields are not Ranker parameters)."""
        return cls(**settings.ranker_params())

    # --- training ------------------------------------------------------------------------
    def fit(
        self,
        X: pd.DataFrame | MatrixRows,
        y: Any,
        *,
        group: Any,
        eval_set: Sequence[tuple[pd.DataFrame | MatrixRows, Any]] | None = None,
        eval_group: Sequence[Any] | None = None,
        eval_at: Sequence[int] = (5, 10),
        callbacks: Sequence[Callable[..., Any]] | None = None,
        position: Any = None,
        propensity: Any = None,
        feature_dtypes: Mapping[str, str] | None = None,
    ) -> Self:
        """Train on ``X`` (rows of one query contiguous, in ``group`` order).

        Args:
            X: numeric feature frame, one row per impression; or a ``models.training.MatrixRows`` (a split
                part's rows, read in batches as LightGBM bins them: the same Dataset, bins and model).
            y: non-negative integer relevance labels, one per row.
            group: query (slate) sizes in row order; they add up to ``len(X)``.
            eval_set: validation ``(X, y)`` pairs; the first drives early stopping on NDCG@max(eval_at)
                (unless ``early_stopping_rounds`` is None). ``X`` a frame, or a
                ``models.training.MatrixRows`` (a split part's rows, read in batches as LightGBM bins them).
            eval_group: the group sizes of each validation pair.
            eval_at: NDCG cut-offs recorded per iteration; the largest (10) drives early stopping.
            callbacks: extra LightGBM callbacks.
            position: the logged slot of each training row (integers >= 0; missing = unknown), needed
                by ``position_bias="lightgbm"`` and unused otherwise.
            propensity: the logging policy's propensity of each training row, in (0, 1] (missing =
                unknown, weight 1), needed by ``position_bias="propensity"`` and unused otherwise.
            feature_dtypes: the features' dtypes where they come from, when ``X`` holds them converted
                (``models.training.SplitFiles.read_matrix``): what ``feature_dtypes_`` (the model's
                signature) records instead of ``X``'s.

        Returns:
            self, with ``booster_``, ``feature_names_``, ``feature_dtypes_``, ``best_iteration_``,
            ``evals_result_`` (``{"train"|"valid": {"ndcg@5"|"ndcg@10": [value per iteration]}}``) and
            ``position_bias_applied_`` (the correction used: ``"none"`` when the rows carry no slot or
            propensity to correct with, e.g. implicit queries).
        """
        settings = self._validated_settings()
        eval_at = _checked_eval_at(eval_at)
        bias, bias_problems = _bias_inputs(settings, position, propensity, len(X) if hasattr(X, "__len__") else 0)
        labels, sizes, evals = _validated_training_inputs(
            X, y, group, eval_set, eval_group, self._label_limit(), bias_problems
        )
        names = [str(c) for c in X.columns]
        applied = settings.position_bias if bias is not None else "none"
        params = self._lgb_params(settings, eval_at) | (
            {"lambdarank_position_bias_regularization": settings.position_bias_regularization}
            if applied == "lightgbm" else {})
        # A training Dataset samples the rows its bins are made from with ``data_random_seed``. From a matrix,
        # LightGBM derives it from ``seed``; from a Sequence (MatrixRows) it does not (its Python side passes
        # the Dataset's own parameters only). Given here, as derived: the same sample, bins and model either
        # way (tests/models/test_ranker_matrix.py).
        params |= _data_random_seed(params)
        train_set = _dataset(X, labels, sizes, names, params, position=bias if applied == "lightgbm" else None,
                             weight=bias if applied == "propensity" else None)
        valid_sets = [train_set] + [_dataset(Xv, yv, gv, names, params, train_set) for Xv, yv, gv in evals]
        # Binned before the booster: the booster makes its row-wise copy of the training bins (force_row_wise), and
        # a validation set read in batches after it stood on it with the batches (the 10M run's peak).
        for data in valid_sets:
            data.construct()
        valid_names = ["train"] + [_valid_name(i) for i in range(len(evals))]
        history: dict[str, Any] = {}
        hooks = [lgb.record_evaluation(history), *(callbacks or [])]
        if evals and settings.early_stopping_rounds is not None:
            hooks.append(_StopOnMetric(f"ndcg@{max(eval_at)}", settings.early_stopping_rounds))
        logger.info("training LambdaRank on %d rows in %d queries, %d features", len(X), len(sizes), len(names))
        booster = lgb.train(params, train_set, settings.n_estimators, valid_sets=valid_sets,
                            valid_names=valid_names, callbacks=hooks)
        self.booster_ = booster
        self.feature_names_ = names
        frame = X.schema if isinstance(X, MatrixRows) else X
        self.feature_dtypes_ = {name: (feature_dtypes or {}).get(name) or str(frame[name].dtype) for name in names}
        self.best_iteration_ = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
        self.evals_result_ = {name: {m: list(v) for m, v in metrics.items()} for name, metrics in history.items()}
        self.position_bias_applied_ = applied
        logger.info("best iteration %d of %d trained (position bias correction: %s)", self.best_iteration_,
                    len(history["train"][f"ndcg@{eval_at[0]}"]), applied)
        return self

    def _validated_settings(self) -> RankerSettings:
        params = {name: getattr(self, name) for name in RANKER_PARAM_NAMES}
        params["extra_params"] = dict(self.extra_params or {})
        settings = RankerSettings(**params)
        clashes = sorted(k for k in settings.extra_params if k in _owned_aliases())
        if clashes:
            raise ValueError(
                f"extra_params may not set {clashes}: the Ranker sets these itself "
                "(use the named parameters instead)"
            )
        return settings

    def _label_limit(self) -> int:
        gain = (self.extra_params or {}).get("label_gain")
        return len(gain) if gain is not None else _DEFAULT_LABEL_GAIN_SIZE

    @staticmethod
    def _lgb_params(settings: RankerSettings, eval_at: list[int]) -> dict[str, Any]:
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": eval_at,
            "learning_rate": settings.learning_rate,
            "num_leaves": settings.num_leaves,
            "min_data_in_leaf": settings.min_child_samples,
            "feature_fraction": settings.feature_fraction,
            "bagging_fraction": settings.bagging_fraction,
            "bagging_freq": settings.bagging_freq,
            "lambdarank_truncation_level": settings.lambdarank_truncation_level,
            "num_threads": settings.num_threads,
            "seed": settings.seed,
            "deterministic": True,
            "force_row_wise": True,  # with deterministic: the same model on every machine and run
            "verbosity": -1,
            **settings.extra_params,
        }

    # --- inference -----------------------------------------------------------------------
    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Scores of the rows of ``X`` (columns are matched by name, in any order); shape (n,)."""
        self._check_fitted()
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a pandas DataFrame, found {type(X).__name__}")
        problems = _column_problems(X, self.feature_names_, "X")
        _raise_problems([], problems, "predict")
        type_problems = _dtype_problems(X, "X")
        _raise_problems(type_problems, [], "predict")
        matrix = _matrix(X[self.feature_names_])
        return self.booster_.predict(matrix, num_iteration=self.best_iteration_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError("this Ranker is not fitted yet: call fit(X, y, group=...) or Ranker.load(path) first")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "booster_")

    # --- persistence ---------------------------------------------------------------------
    def model_to_string(self) -> str:
        """The model in LightGBM's native text format, cut at the best iteration."""
        self._check_fitted()
        return self.booster_.model_to_string(num_iteration=self.best_iteration_)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as LightGBM text to ``path`` atomically (temp file, then os.replace)."""
        target = Path(path)
        text = self.model_to_string()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ranker:
        """A fitted Ranker from a LightGBM text model written by :meth:`save`."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no LightGBM model file at {str(source)!r}")
        try:
            booster = lgb.Booster(model_str=source.read_text(encoding="utf-8"))
        except lgb.basic.LightGBMError as e:
            raise ValueError(f"{str(source)!r} is not a LightGBM text model: {e}") from e
        ranker = cls(**_params_from_booster(booster.params))
        ranker.booster_ = booster
        ranker.feature_names_ = booster.feature_name()
        ranker.feature_dtypes_ = {}  # the text model does not record the training dtypes
        ranker.best_iteration_ = booster.current_iteration()
        ranker.evals_result_ = {}
        ranker.position_bias_applied_ = "unknown"  # the text model does not record the training objective's rows
        return ranker


# --- helpers ---------------------------------------------------------------------------------
def _owned_aliases() -> set[str]:
    return set(_ConfigAliases.get(*_OWNED_LGB_PARAMS)) | {"n_estimators", "early_stopping_rounds"}


def _params_from_booster(params: dict[str, Any]) -> dict[str, Any]:
    mapping = {
        "learning_rate": "learning_rate", "num_leaves": "num_leaves", "min_child_samples": "min_data_in_leaf",
        "n_estimators": "num_iterations", "feature_fraction": "feature_fraction",
        "bagging_fraction": "bagging_fraction", "bagging_freq": "bagging_freq",
        "lambdarank_truncation_level": "lambdarank_truncation_level", "num_threads": "num_threads", "seed": "seed",
        "position_bias_regularization": "lambdarank_position_bias_regularization",
    }
    out = {ours: params[theirs] for ours, theirs in mapping.items() if theirs in params}
    if "position_bias_regularization" in out:  # the text model writes 0.0 as 0
        out["position_bias_regularization"] = float(out["position_bias_regularization"])
    return out


def _valid_name(index: int) -> str:
    return "valid" if index == 0 else f"valid_{index}"


def _checked_eval_at(eval_at: Sequence[int]) -> list[int]:
    values = list(eval_at)
    bad = [k for k in values if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if not values or bad:
        raise ValueError(f"eval_at must be positive ints, found {values!r} (bad: {bad!r})")
    return sorted({int(k) for k in values})


def _matrix(X: pd.DataFrame) -> np.ndarray:
    """The feature matrix LightGBM reads: float32 when every column converts exactly (float32 columns,
    bools, integers within +-2**24), which halves it and gives the same bins and scores; else float64."""
    dtype = np.float32 if all(_exact_in_float32(X[c]) for c in X.columns) else np.float64
    return X.to_numpy(dtype=dtype, na_value=np.nan)


def _exact_in_float32(column: pd.Series) -> bool:
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype) or dtype in (np.float32, np.float16):
        return True
    if pd.api.types.is_integer_dtype(dtype):
        if np.dtype(getattr(dtype, "numpy_dtype", dtype)).itemsize <= 2:
            return True
        low, high = column.min(), column.max()
        return bool(pd.isna(low) or (int(low) >= -FLOAT32_INT_LIMIT and int(high) <= FLOAT32_INT_LIMIT))
    return False


def _dataset(X, labels, sizes, names, params, reference: lgb.Dataset | None = None, *,
             position: np.ndarray | None = None, weight: np.ndarray | None = None) -> lgb.Dataset:
    """``position``: the rows' slot codes (LightGBM's position-bias treatment); ``weight``: row weights.
    ``X`` a :class:`~models.training.MatrixRows`: LightGBM reads it in batches (its rows as the matrix
    of a frame of them would be: the same bins, given ``data_random_seed``: :meth:`Ranker.fit`)."""
    return lgb.Dataset(
        X.select(names) if isinstance(X, MatrixRows) else _matrix(X[names]), label=labels, group=sizes, feature_name=names, position=position, weight=weight,
        reference=reference, free_raw_data=True, params=params,
    )


def _data_random_seed(params: Mapping[str, Any]) -> dict[str, int]:
    """``{"data_random_seed": value}`` as LightGBM's config derives it from ``seed`` (``Config::Set``: the
    first ``NextShort(0, 32767)`` of ``Random(seed)``, a 32-bit linear congruential generator), or nothing
    when no seed is set or the data seed is set itself (it then reaches the Sequence's sampling as given)."""
    if any(k in params for k in _ConfigAliases.get("data_random_seed")):
        return {}
    seeds = [params[k] for k in _ConfigAliases.get("seed") if k in params]
    if not seeds:
        return {}
    x = (214013 * (int(seeds[0]) & 0xFFFFFFFF) + 2531011) & 0xFFFFFFFF
    return {"data_random_seed": ((x >> 16) & 0x7FFF) % 32767}


def _bias_inputs(settings: RankerSettings, position: Any, propensity: Any,
                 n_rows: int) -> tuple[np.ndarray | None, list[str]]:
    """What the position-bias setting trains with: slot codes or row weights (None: nothing to correct)."""
    if settings.position_bias == "none":
        return None, []
    name, given = (("position", position) if settings.position_bias == "lightgbm" else ("propensity", propensity))
    if given is None:
        return None, [f"position_bias={settings.position_bias!r} needs fit(..., {name}=...), one value per row"]
    values = pd.to_numeric(pd.Series(np.asarray(given, dtype=object)), errors="coerce").to_numpy(dtype=np.float64)
    raw = pd.Series(np.asarray(given, dtype=object))
    problems = [] if len(values) == n_rows else [f"{name} has {len(values)} values for {n_rows} rows"]
    unparsed = raw.notna().to_numpy() & np.isnan(values)
    bad = unparsed | (values < 0) | ~(np.isnan(values) | np.isfinite(values))
    if name == "position":
        bad |= ~np.isnan(values) & (values != np.round(values))
    else:
        bad |= values == 0
        bad |= values > 1
    if bad.any():
        kind = "integers >= 0" if name == "position" else "in (0, 1]"
        examples = ", ".join(f"row {i}: {raw.iloc[i]!r}" for i in np.flatnonzero(bad)[:_EXAMPLES])
        problems.append(f"{name} must be {kind} or missing; {int(bad.sum())} bad value(s), e.g. {examples}")
    if problems or np.isnan(values).all():
        return None, problems
    if name == "position":  # unknown slots share one code of their own
        known = ~np.isnan(values)
        return np.where(known, values, values[known].max() + 1).astype(np.int32), []
    weights = 1.0 / np.maximum(np.nan_to_num(values, nan=1.0), settings.propensity_floor)
    return weights / weights.mean(), []


def _raise_problems(type_problems: list[str], value_problems: list[str], context: str) -> None:
    problems = type_problems + value_problems
    if not problems:
        return
    message = f"{context}: {len(problems)} problem(s) with the input:\n- " + "\n- ".join(problems)
    raise (TypeError if type_problems else ValueError)(message)


def _dtype_problems(X: pd.DataFrame, what: str) -> list[str]:
    bad = [f"{c!r} ({dtype})" for c, dtype in zip(X.columns, X.dtypes, strict=True)  # by position: names may repeat
           if not pd.api.types.is_numeric_dtype(dtype)]
    if not bad:
        return []
    return [f"{what} columns must be numeric (int, float or bool); non-numeric: {', '.join(bad)}"]


def _name_problems(X: pd.DataFrame, what: str) -> tuple[list[str], list[str]]:
    not_str = [repr(c) for c in X.columns if not isinstance(c, str)]
    odd = [c for c in X.columns if isinstance(c, str) and (_BAD_NAME_CHARS & set(c) or any(ch.isspace() for ch in c))]
    dupes = sorted({str(c) for c in X.columns[X.columns.duplicated()]})
    types = [f"{what} column names must be strings, found {', '.join(not_str)}"] if not_str else []
    values = [f"{what} column names may not contain whitespace or any of {''.join(sorted(_BAD_NAME_CHARS))}: {odd}"] if odd else []
    values += [f"{what} has duplicate column names: {dupes}"] if dupes else []
    return types, values


def _column_problems(X: pd.DataFrame, expected: list[str], what: str) -> list[str]:
    found = [str(c) for c in X.columns]
    missing = [c for c in expected if c not in set(found)]
    extra = [c for c in found if c not in set(expected)]
    if not missing and not extra:
        return []
    return [f"{what} columns differ from the training features: missing {missing}, extra {extra}"]


def _label_problems(y: Any, n_rows: int, limit: int, what: str) -> tuple[np.ndarray | None, list[str], list[str]]:
    labels = np.asarray(y)
    if labels.ndim != 1:
        return None, [], [f"{what} must be one-dimensional, found shape {labels.shape}"]
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        return None, [f"{what} must be numeric, found dtype {labels.dtype}"], []
    values = labels.astype(np.float64)
    problems = [] if len(values) == n_rows else [f"{what} has {len(values)} labels for {n_rows} rows"]
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values)) | (values >= limit)
    if bad.any():
        examples = ", ".join(f"row {i}: {labels[i].item()!r}" for i in np.flatnonzero(bad)[:_EXAMPLES])
        problems.append(
            f"{what} must be integers in 0..{limit - 1}; {int(bad.sum())} bad label(s), e.g. {examples}"
        )
    return values, [], problems


def _group_problems(group: Any, n_rows: int, what: str) -> tuple[np.ndarray | None, list[str]]:
    sizes = np.asarray(group)
    if sizes.ndim != 1 or not np.issubdtype(sizes.dtype, np.number) or len(sizes) == 0:
        return None, [f"{what} must be a non-empty 1-d sequence of query sizes, found {sizes.dtype} of shape {sizes.shape}"]
    bad = (sizes <= 0) | (sizes != np.round(sizes))
    problems = []
    if bad.any():
        examples = ", ".join(f"query {i}: {sizes[i].item()!r}" for i in np.flatnonzero(bad)[:_EXAMPLES])
        problems.append(f"{what} sizes must be positive integers; {int(bad.sum())} bad, e.g. {examples}")
    if int(np.sum(sizes)) != n_rows:
        problems.append(f"{what} sizes add up to {int(np.sum(sizes))} but X has {n_rows} rows")
    return sizes.astype(np.int64), problems


def _frame_problems(X: Any, y: Any, group: Any, limit: int, what: str, *,
                    rows_allowed: bool = False) -> tuple[Any, list[str], list[str]]:
    """``rows_allowed``: ``X`` may also be a :class:`~models.training.MatrixRows` (a split part's rows read
    in batches), checked by its ``schema`` (a zero-row frame with its columns' dtypes)."""
    if rows_allowed and isinstance(X, MatrixRows):
        frame, n_rows = X.schema, len(X)
    elif isinstance(X, pd.DataFrame):
        frame, n_rows = X, len(X)
    else:
        raise TypeError(f"{what} X must be a pandas DataFrame, found {type(X).__name__}")
    name_types, name_values = _name_problems(frame, f"{what} X")
    labels, label_types, label_values = _label_problems(y, n_rows, limit, f"{what} labels")
    sizes, group_values = _group_problems(group, n_rows, f"{what} group")
    types = _dtype_problems(frame, f"{what} X") + name_types + label_types
    values = ([f"{what} X has no rows"] if n_rows == 0 else []) + name_values + label_values + group_values
    return (labels, sizes), types, values


def _validated_training_inputs(X, y, group, eval_set, eval_group, limit, bias_problems=()):
    """Check the training and validation inputs together; raise once listing every problem."""
    (labels, sizes), types, values = _frame_problems(X, y, group, limit, "training", rows_allowed=True)
    values += list(bias_problems)
    eval_set, eval_group = list(eval_set or []), list(eval_group or [])
    if len(eval_set) != len(eval_group):
        values.append(f"eval_set has {len(eval_set)} entries but eval_group has {len(eval_group)}")
    evals = []
    for i, (pair, valid_group) in enumerate(zip(eval_set, eval_group, strict=False)):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"eval_set[{i}] must be an (X, y) tuple, found {type(pair).__name__}")
        (v_labels, v_sizes), v_types, v_values = _frame_problems(pair[0], pair[1], valid_group, limit,
                                                                 f"eval_set[{i}]", rows_allowed=True)
        types += v_types
        values += v_values + _column_problems(getattr(pair[0], "schema", pair[0]), [str(c) for c in X.columns],
                                              f"eval_set[{i}] X")
        evals.append((pair[0], v_labels, v_sizes))
    _raise_problems(types, values, "Ranker.fit")
    return labels, sizes, evals
