"""What a data scientist sees in MLflow for one ranker training run.

Call :func:`log_ranker_run` inside an active run (the flow opens it with :func:`run_name`).

Making runs comparable in MLflow's compare view
-----------------------------------------------
The compare view lines runs up by metric and parameter *names*, so every run logs exactly the same
names, whatever the data:

* test metrics: ``ndcg_at_5``, ``ndcg_at_10``, ``map_at_10``, ``mrr`` (from
  ``models.metrics.ranking_report``, LightGBM's conventions) and ``best_iteration``;
* baselines on the same test queries: ``<baseline>_<metric>``, e.g. ``popularity_ndcg_at_10``,
  ``similarity_ndcg_at_10``, so "model minus baseline" is readable in one table;
* learning curves: ``train_ndcg_at_5``, ``train_ndcg_at_10``, ``valid_ndcg_at_5``,
  ``valid_ndcg_at_10`` with ``step`` = boosting iteration (1-based), overlayable across runs;
* parameters: the Ranker's own under ``ranker.<name>`` (always all of them, defaults included)
  plus the flow's settings flattened with dots (``labels.levels``, ``features.feature_set``);
* tags: ``feature_set``, ``feature_set_hash``, ``window_start``, ``window_end``,
  ``snapshot_digest``, ``code_version``: filter with e.g. ``tags.feature_set_hash = '...'`` to
  compare only runs trained on the same features.

Two runs are comparable when their ``feature_set_hash`` matches (same columns) and their test
windows are the ones you mean to compare; metric values of different test weeks are different
samples, so compare model against baselines within a run first.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema, TensorSpec

from models.ranker import Ranker

logger = logging.getLogger(__name__)

TOP_FEATURES_IN_CHART = 30
_SECRET_KEY = re.compile(r"password|passwd|secret|token|credential|api_?key", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*):[^/@\s]*@", re.IGNORECASE)
_KEY_VALUE_SECRET = re.compile(r"(?P<head>(?:password|passwd|pwd|secret|token)\s*=\s*)[^\s;&,]+", re.IGNORECASE)
_MAX_PARAM_LENGTH = 6000


def run_name(window_end: datetime, feature_set: str) -> str:
    """A readable run name, e.g. ``ranker 2026-11-16 ranker_default``."""
    return f"ranker {window_end:%Y-%m-%d} {feature_set}"


def log_ranker_run(
    ranker: Ranker,
    *,
    test_report: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]],
    feature_set_name: str,
    feature_set_hash: str,
    params: Mapping[str, Any],
    window: tuple[datetime, datetime],
    snapshot_digest: str,
    code_version: str,
    registered_model_name: str | None = "rankloop.ranker",
) -> ModelInfo | None:
    """Log a fitted ranker, its evaluation and its lineage to the active MLflow run.

    Args:
        ranker: the fitted Ranker.
        test_report: ``models.metrics.ranking_report`` of the ranker on the test week.
        baselines: ``{"popularity": report, "similarity": report}`` on the same test rows.
        feature_set_name: name of the feature set the ranker was trained on.
        feature_set_hash: hash of that feature set.
        params: the run's settings (nested dicts are flattened with dots; secrets are dropped).
        window: the run's ``[start, end)`` window.
        snapshot_digest: sha256 of the interaction snapshot trained on.
        code_version: git commit (or package version) of the code.
        registered_model_name: registered model that receives a new version; None logs the run's
            evaluation and ``ranker/model.txt`` but no model version (a challenger identical to its
            champion).

    Returns:
        The ModelInfo of the logged LightGBM model, with ``registered_model_version`` set (None when
        nothing was registered).
    """
    run = mlflow.active_run()
    if run is None:
        raise ValueError("log_ranker_run needs an active MLflow run (call it inside mlflow.start_run()), found none")
    ranker._check_fitted()
    run_id = run.info.run_id
    MlflowClient().log_batch(
        run_id,
        metrics=[*_curve_metrics(ranker), *_final_metrics(ranker, test_report, baselines)],
        params=[Param(k, v) for k, v in sorted(_run_params(ranker, params).items())],
    )
    mlflow.set_tags(_lineage_tags(feature_set_name, feature_set_hash, window, snapshot_digest, code_version))
    _log_feature_importance(ranker)
    mlflow.log_text(ranker.model_to_string(), "ranker/model.txt")
    feature_set = {"name": feature_set_name, "hash": feature_set_hash, "features": list(ranker.feature_names_)}
    mlflow.log_text(json.dumps(feature_set, indent=2), "ranker/feature_set.json")
    if registered_model_name is None:
        return None
    info = _log_model(ranker, registered_model_name)
    logger.info("logged ranker to run %s as %s version %s", run_id, registered_model_name, info.registered_model_version)
    return info


# --- metrics ---------------------------------------------------------------------------------
def _metric_key(lightgbm_name: str) -> str:
    return lightgbm_name.replace("@", "_at_")


def _curve_metrics(ranker: Ranker) -> Iterator[Metric]:
    now = int(time.time() * 1000)
    for dataset, curves in ranker.evals_result_.items():
        for name, values in curves.items():
            key = f"{dataset}_{_metric_key(name)}"
            yield from (Metric(key, float(v), now, step) for step, v in enumerate(values, start=1))


def _final_metrics(
    ranker: Ranker, test_report: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]]
) -> list[Metric]:
    now = int(time.time() * 1000)
    values = {**test_report, "best_iteration": ranker.best_iteration_}
    values |= {f"{name}_{key}": v for name, report in baselines.items() for key, v in report.items()}
    return [Metric(k, float(v), now, 0) for k, v in values.items()]


# --- params and tags -------------------------------------------------------------------------
def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = _KEY_VALUE_SECRET.sub(r"\g<head>***", _URI_PASSWORD.sub(r"\g<head>:***@", text))
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."


def _run_params(ranker: Ranker, params: Mapping[str, Any]) -> dict[str, str]:
    """Flattened, JSON-safe params without secrets; conflicting duplicates are refused."""
    merged: dict[str, str] = {}
    for key, value in [*_flatten({"ranker": ranker.get_params()}), *_flatten(params)]:
        if _SECRET_KEY.search(key):
            continue
        text = _param_value(value)
        if merged.get(key, text) != text:
            raise ValueError(f"param {key!r} is given twice with different values: {merged[key]!r} and {text!r}")
        merged[key] = text
    return merged


def _lineage_tags(
    feature_set_name: str, feature_set_hash: str, window: tuple[datetime, datetime], snapshot_digest: str, code_version: str
) -> dict[str, str]:
    start, end = window
    return {
        "feature_set": feature_set_name,
        "feature_set_hash": feature_set_hash,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "snapshot_digest": snapshot_digest,
        "code_version": code_version,
    }


# --- artifacts -------------------------------------------------------------------------------
def feature_importance(ranker: Ranker) -> pd.DataFrame:
    """Gain and split importance per feature at the best iteration, by descending gain."""
    booster = ranker.booster_
    gain = booster.feature_importance("gain", iteration=ranker.best_iteration_)
    split = booster.feature_importance("split", iteration=ranker.best_iteration_)
    total = float(gain.sum()) or 1.0
    table = pd.DataFrame({"feature": ranker.feature_names_, "gain": gain, "gain_share": gain / total, "split": split})
    return table.sort_values(["gain", "feature"], ascending=[False, True], ignore_index=True)


def _importance_figure(table: pd.DataFrame) -> Figure:
    top = table.head(TOP_FEATURES_IN_CHART).iloc[::-1]
    figure = Figure(figsize=(8, 0.3 * len(top) + 1.5))  # no pyplot: no global backend, no GUI
    axes = figure.add_subplot()
    axes.barh(top["feature"], top["gain_share"])
    axes.set_xlabel("share of total gain")
    axes.set_title(f"Feature importance (gain), top {len(top)}")
    figure.tight_layout()
    return figure


def _log_feature_importance(ranker: Ranker) -> None:
    table = feature_importance(ranker)
    mlflow.log_table(table, "feature_importance.json")
    mlflow.log_figure(_importance_figure(table), "feature_importance.png")


def _column_type(dtype_name: str | None) -> str:
    """MLflow column type of a training dtype, so pyfunc accepts frames shaped like the training one."""
    try:
        dtype = np.dtype(dtype_name.lower()) if dtype_name else np.dtype(np.float64)
    except TypeError:
        return "double"
    if dtype.kind == "b":
        return "boolean"
    if dtype.kind in "iu":
        return "integer" if dtype.itemsize <= 4 and dtype.kind == "i" else "long"
    return "float" if dtype == np.float32 else "double"


def _signature(ranker: Ranker) -> ModelSignature:
    dtypes = getattr(ranker, "feature_dtypes_", {})
    inputs = Schema([ColSpec(_column_type(dtypes.get(name)), name) for name in ranker.feature_names_])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))]))


def _log_model(ranker: Ranker, registered_model_name: str) -> ModelInfo:
    """The model as MLflow's lightgbm flavour: a Booster, which it saves as LightGBM text ``model.lgb``."""
    booster = lgb.Booster(model_str=ranker.model_to_string())  # cut at the best iteration
    return mlflow.lightgbm.log_model(
        booster,
        name="model",
        registered_model_name=registered_model_name,
        signature=_signature(ranker),
        # explicit requirements skip MLflow's slow dependency inference (a subprocess per run)
        pip_requirements=mlflow.lightgbm.get_default_pip_requirements(),
    )
