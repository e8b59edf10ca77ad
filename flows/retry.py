"""Retry policy: only transient I/O is retried, never a contract, gate or training failure."""

from __future__ import annotations

from typing import Any

from core.errors import ContractViolation, SourceError, TrainingError

_TRANSIENT_NAMES = ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutError")


def is_transient(exc: BaseException | None) -> bool:
    """True for errors worth retrying: an unreachable database, a tracking-server timeout.

    A contract or training failure is never transient, whatever it was chained from: the same data
    fails the same way again.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ContractViolation | TrainingError):
            return False
        if isinstance(exc, SourceError):
            return exc.transient
        if type(exc).__name__ in _TRANSIENT_NAMES or isinstance(exc, ConnectionError | TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed with a transient error."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify whatever the task raised
        return is_transient(exc)
    return False
