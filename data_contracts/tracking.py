"""Record a contract outcome in MLflow: counts as metrics, the report and summary as artifacts.

Like ``models.tracking``, this module talks to MLflow only; the caller chooses the run.
"""

from __future__ import annotations

import re
from typing import Any

from data_contracts.run import ContractOutcome

ARTIFACT_DIR = "data/contract"


def metric_name(reason: str) -> str:
    """An MLflow-safe metric name for a reason code (``unknown_event_type:tap`` -> ``...type.tap``)."""
    return "contract.quarantined." + re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", reason.replace(":", "."))


def contract_metrics(outcome: ContractOutcome) -> dict[str, float]:
    """rows, clean, quarantined, lost (always 0: checked before), fraction, one metric per reason code."""
    s = outcome.result.summary()
    return {
        "contract.rows_in": s["rows_in"], "contract.rows_valid": s["rows_valid"],
        "contract.rows_quarantined": s["rows_quarantined"],
        "contract.rows_lost": s["rows_in"] - s["rows_valid"] - s["rows_quarantined"],
        "contract.quarantined_fraction": s["rows_quarantined"] / s["rows_in"],
        "contract.passed": float(outcome.result.gate_passed),
        **{metric_name(k): v for k, v in s["reasons"].items()},
    }


def log_contract(outcome: ContractOutcome) -> None:
    """Into the active MLflow run: the metrics, the Markdown report and the JSON summary."""
    import mlflow

    mlflow.log_metrics(contract_metrics(outcome))
    mlflow.log_artifact(str(outcome.report_path), ARTIFACT_DIR)
    mlflow.log_dict(outcome.summary(), f"{ARTIFACT_DIR}/summary.json")
    mlflow.set_tags({"rankloop.contract_passed": str(outcome.result.gate_passed).lower()})


def log_failed_contract_run(outcome: ContractOutcome, *, experiment_id: str, run_name: str,
                            tags: dict[str, Any]) -> str:
    """A run marked FAILED holding the failed contract's report and counts; returns its id."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                          tags={**tags, "rankloop.stage": "validate", "rankloop.completed": "false"}) as run:
        log_contract(outcome)
        mlflow.set_tag("rankloop.failures", "; ".join(r["name"] for r in outcome.result.failures))
        run_id = run.info.run_id
        mlflow.end_run(status="FAILED")
    return run_id
