"""The record of one promotion-gate decision, and how it is logged to an MLflow run."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """PASS: promote. HOLD: keep the champion (inconclusive or worse). FAIL: the challenger is broken."""

    PASS = "PASS"
    HOLD = "HOLD"
    FAIL = "FAIL"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Decision:
    """One gate decision: verdict, why, the figures it rests on, and which versions it compared."""

    kind: str
    verdict: Verdict
    reasons: tuple[str, ...]
    figures: dict[str, float | int | str | None] = field(default_factory=dict)
    challenger_version: int | None = None
    champion_version: int | None = None
    timestamp: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if not isinstance(self.verdict, Verdict):
            object.__setattr__(self, "verdict", Verdict(self.verdict))
        object.__setattr__(self, "reasons", tuple(self.reasons))

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN/inf figures become None)."""
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["reasons"] = list(self.reasons)
        data["figures"] = {k: _finite_or_none(v) for k, v in self.figures.items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(**{**data, "reasons": tuple(data.get("reasons", ())), "verdict": Verdict(data["verdict"])})

    @classmethod
    def from_json(cls, text: str) -> Decision:
        return cls.from_dict(json.loads(text))

    @classmethod
    def manual(cls, kind: str, version: int, champion: int | None, reason: str) -> Decision:
        """The record of a gate that was skipped by hand (a forced promotion or a rollback)."""
        return cls(kind, Verdict.PASS, (f"gate skipped by hand: {reason}",), {"forced": 1}, version, champion)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def log_decision(decision: Decision, *, run_id: str | None = None, client: Any = None) -> None:
    """Log a decision to an MLflow run: ``gate/decision.json``, ``gate.*`` tags and numeric figures as metrics.

    A PASS without a champion ("first version") is only recorded after the registry confirms that
    the kind has no champion: a champion lookup that failed must never read as "none".

    Args:
        decision: the record to log.
        run_id: the run; default the active run.
        client: an ``MlflowClient``; default one for the current tracking URI.

    Raises:
        RegistryError: UNREACHABLE (the registry cannot confirm a first version), REFUSED (the
            decision says "first version" but the registry has a champion); nothing is logged then.
    """
    import mlflow
    from mlflow.entities import Metric, RunTag

    client = client or mlflow.MlflowClient()
    run_id = run_id or _active_run_id(mlflow)
    if decision.passed and decision.champion_version is None and not decision.figures.get("forced"):
        _confirm_first_version(client, decision)
    client.log_dict(run_id, decision.to_dict(), "gate/decision.json")
    tags = {
        "gate.kind": decision.kind,
        "gate.verdict": decision.verdict.value,
        "gate.challenger": str(decision.challenger_version),
        "gate.champion": str(decision.champion_version),
        "gate.reasons": "; ".join(decision.reasons)[:4900],
    }
    metrics = [
        Metric(f"gate.{k}", float(v), int(time.time() * 1000), 0)
        for k, v in decision.figures.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])


def _confirm_first_version(client: Any, decision: Decision) -> None:
    from core.errors import Reason, RegistryError
    from registry.store import CHAMPION, aliases

    champion = aliases(client, decision.kind).get(CHAMPION)  # UNREACHABLE propagates: never "none"
    if champion is not None:
        raise RegistryError(
            f"the gate passed {decision.kind} version {decision.challenger_version} as a first version, "
            f"but the registry's champion is version {champion}: the champion was not scored; nothing recorded",
            reason=Reason.REFUSED,
            details={"kind": decision.kind, "champion": champion},
            hint="run again: the champion lookup failed earlier in this run",
        )


def _active_run_id(mlflow: Any) -> str:
    run = mlflow.active_run()
    if run is None:
        raise ValueError("log_decision needs run_id= or an active MLflow run; found neither")
    return run.info.run_id
