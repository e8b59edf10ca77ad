"""Checks a run makes on its candidates after judging them and before promoting: the ranker's replay
(``registry.replay``) here, drift in ``rankloop.drift``. Each can only hold a candidate, never pass one."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from core.settings import Settings

log = logging.getLogger(__name__)


def rerecord(candidate: Any, decision: Any) -> Any:
    """``candidate`` with a new decision, logged on its MLflow run; HELD unless the decision passes."""
    import mlflow

    from rankloop.promotion import Status
    from registry.decision import log_decision

    if candidate.run_id is not None:
        with mlflow.start_run(run_id=candidate.run_id):
            log_decision(decision, run_id=candidate.run_id)
            mlflow.set_tags({"rankloop.verdict": decision.verdict.value})
    status = Status.PASSED if decision.passed else Status.HELD
    return replace(candidate, status=status, decision=decision, reasons=decision.reasons,
                   verdict=decision.verdict.value, extra={**candidate.extra, "figures": dict(decision.figures)})


def replay_ranker(settings: Settings, candidates: list[Any], dataset: Any) -> list[Any]:
    """Replay the ranker the run would promote on the test week's requests in a fresh process; a failure
    holds it (verdict FAIL, the replay's problems in its decision record). Other candidates pass through."""
    from rankloop.promotion import Status
    from registry.gate import replay_gate
    from registry.replay import replay_version

    out = []
    for c in candidates:
        if c.kind != "ranker" or c.status is not Status.PASSED or not settings.gate.replay.enabled:
            out.append(c)
            continue
        report = replay_version(settings, "ranker", c.version, dataset.split.paths["test"], list(dataset.features))
        decision = replay_gate(c.decision, report)
        if not report.passed:
            log.warning("replay holds ranker v%s: %s", c.version, "; ".join(report.problems))
        out.append(rerecord(c, decision))
    return out
