"""The model registry: manifests, the promotion gate, atomic promotion/rollback, the ledger, the serving loader.

MLflow is the store: each kind is a registered model ``rankloop.<kind>`` whose aliases ``champion``
and ``previous`` say what serves; the ledger is the experiment ``rankloop-ledger``.

Exports resolve lazily, so that importing one registry module does not load MLflow for all of them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Decision": "registry.decision",
    "Verdict": "registry.decision",
    "log_decision": "registry.decision",
    "OPEEvidence": "registry.gate",
    "paired_bootstrap": "registry.gate",
    "policy_gate": "registry.gate",
    "ranker_gate": "registry.gate",
    "LedgerEntry": "registry.ledger",
    "history": "registry.ledger",
    "LoadedModel": "registry.loader",
    "load": "registry.loader",
    "KINDS": "registry.manifest",
    "build_manifest": "registry.manifest",
    "verify": "registry.manifest",
    "rollback": "registry.promote",
    "rollback_offline": "registry.offline",
    "owner_tags": "registry.owner",
    "RecoveryReport": "registry.recover",
}
# ``promote``, ``publish`` and ``recover`` are also submodule names (the submodule would shadow a
# lazy export): import them from ``registry.promote``, ``registry.publish`` and ``registry.recover``.
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'registry' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
