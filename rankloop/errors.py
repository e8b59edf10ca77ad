"""RankLoop's error hierarchy: each carries a reason code and the offending names or rows."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Machine-readable reason codes attached to every RankLoop error."""

    UNREACHABLE = "unreachable"
    AUTH = "auth"
    MISSING_TABLE = "missing_table"
    MISSING_COLUMN = "missing_column"
    BAD_URI = "bad_uri"
    BAD_MAPPING = "bad_mapping"
    CONTRACT = "contract"
    EMPTY = "empty"
    INVALID_INPUT = "invalid_input"
    CHECKSUM = "checksum"
    NOT_FOUND = "not_found"
    REFUSED = "refused"
    GATE = "gate"
    BUSY = "busy"


class RankLoopError(Exception):
    """Base class. ``reason`` is a :class:`Reason`; ``details`` holds offending names/rows."""

    def __init__(self, message: str, *, reason: Reason, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.reason = reason
        self.details = details or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross processes (a Dask worker's task, Prefect results); the keyword-only arguments
        # defeat Exception's default pickling, so rebuild with the same message and attributes.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[RankLoopError], args: tuple[Any, ...], state: dict[str, Any]) -> RankLoopError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class SourceError(RankLoopError):
    """Extraction failed: the source is unreachable, refuses us, or lacks what the mapping needs."""

    def __init__(self, message: str, *, reason: Reason, transient: bool = False, details: dict[str, Any] | None = None):
        super().__init__(message, reason=reason, details=details)
        self.transient = transient


class ContractViolation(RankLoopError):
    """The data broke its contract so badly that the run must stop (bad rows alone are quarantined)."""


class TrainingError(RankLoopError):
    """A model could not be trained from the data given."""


class RegistryError(RankLoopError):
    """A registry operation was refused or failed (nothing moved)."""
