"""MLflow logging and registration of policy tables (Beta tables, LinUCB, Q-table).

MLflow 3 registers logged models, so the table directory is wrapped as a pyfunc model logged
"from code": a three-line script (written at log time) builds :class:`PolicyTablesModel`; nothing
is cloudpickled. The tables themselves travel as the model's ``tables`` artifact (Parquet/JSON).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow
import yaml

from core.errors import Reason, RegistryError
from models.linucb import LinUCB
from models.ope import OPEResult
from models.policy import POLICY_TABLES, load_policy_table
from models.qlearning import encode_states
from models.thompson import BetaTables

logger = logging.getLogger(__name__)

_MODEL_CODE = """\
import mlflow
from models.policy_tracking import PolicyTablesModel

mlflow.models.set_model(PolicyTablesModel())
"""


class PolicyTablesModel(mlflow.pyfunc.PythonModel):
    """Serves a policy table: bandit -> posterior mean per item_id; linucb -> UCB score per row;
    qtable -> greedy action per row's state context."""

    def load_context(self, context) -> None:
        self.table = load_policy_table(Path(context.artifacts["tables"]))

    def predict(self, context, model_input, params=None):  # untyped: MLflow cannot infer a signature from ours
        frame = pd.DataFrame(model_input)
        if isinstance(self.table, BetaTables):
            return self.table.mean(frame["item_id"].tolist())
        if isinstance(self.table, LinUCB):
            rows = frame.to_dict("records")
            return np.array([self.table.scores(row, [row["item_id"]])[0] for row in rows])
        return self.table.best_actions(encode_states(frame, self.table.settings))


def download_policy_tables(model_uri: str, dst: Path) -> Path:
    """Download a registered policy model and return its table directory (``tables`` artifact)."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    try:
        relative = mlmodel["flavors"]["python_function"]["artifacts"]["tables"]["path"]
    except KeyError as e:
        raise RegistryError(f"{model_uri} is not a policy-table model: its MLmodel has no 'tables' artifact",
                            reason=Reason.NOT_FOUND, details={"model_uri": model_uri}) from e
    return local / relative


def _numeric(name: str, values: Mapping[str, Any]) -> dict[str, float]:
    bad = {k: type(v).__name__ for k, v in values.items()
           if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating)}
    if bad:
        raise TypeError(f"{name} values must be numbers, got {bad}")
    return {k: float(v) for k, v in values.items()}


def table_manifest(directory: Path) -> dict[str, str]:
    """sha256 of every file in the table directory, by relative path."""
    directory = Path(directory)
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*")) if p.is_file()
    }


def _requirements() -> list[str]:
    return [f"mlflow=={mlflow.__version__}", f"pandas=={pd.__version__}", f"numpy=={np.__version__}",
            f"pyarrow=={pyarrow.__version__}"]


def log_policy_run(
    kind: str, artifact_dir: Path, *, metrics: Mapping[str, Any], params: Mapping[str, Any],
    ope: OPEResult | None, registered_model_name: str | None = None,
) -> int:
    """Log one policy refit to MLflow and register its tables as a model version.

    Args:
        kind: "bandit", "linucb" or "qtable".
        artifact_dir: directory written by the table's ``save``.
        metrics: numeric metrics (average reward, like rate, coverage ...).
        params: run parameters (stringified by MLflow).
        ope: off-policy evaluation of the new table, or None.
        registered_model_name: default ``rankloop.<kind>``.

    Returns:
        The registered model version number.
    """
    if kind not in POLICY_TABLES:
        raise ValueError(f"kind must be one of {sorted(POLICY_TABLES)}, got {kind!r}")
    artifact_dir = Path(artifact_dir)
    meta_file = POLICY_TABLES[kind].meta_file
    if not (artifact_dir / meta_file).is_file():
        raise FileNotFoundError(f"{artifact_dir} lacks {meta_file}; expected a saved {kind} table")
    values = _numeric("metrics", metrics) | (ope.as_metrics() if ope else {})
    name = registered_model_name or f"rankloop.{kind}"
    try:
        return _log(kind, artifact_dir, values, params, ope, name)
    except mlflow.exceptions.MlflowException as e:
        raise RegistryError(f"could not log/register {kind} table as {name!r}: {e}", reason=Reason.REFUSED,
                            details={"model": name}) from e


def _log(kind: str, artifact_dir: Path, metrics: dict[str, float], params: Mapping[str, Any],
         ope: OPEResult | None, name: str) -> int:
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=f"{kind}-refit", nested=nested), tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"rankloop.kind": kind, "ope_verdict": ope.verdict if ope else "none",
                         "ope_reason": ope.reason if ope else ""})
        mlflow.log_params(dict(params))
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_dict({"kind": kind, "sha256": table_manifest(artifact_dir)}, "policy_manifest.json")
        code = Path(tmp) / "policy_model.py"
        code.write_text(_MODEL_CODE)
        info = mlflow.pyfunc.log_model(
            name=f"{kind}_tables", python_model=str(code), artifacts={"tables": str(artifact_dir)},
            registered_model_name=name, pip_requirements=_requirements(),
        )
    version = int(info.registered_model_version)
    logger.info("registered %s version %d", name, version)
    return version
