"""RankLoop's error hierarchy: each carries a reason code, the offending names or rows, and a hint.

The CLI turns any :class:`RankLoopError` into one line on stderr,
``error (<reason>): <what is wrong> - <what to do>``, and exits with ``EXIT_CODES[reason]``
(documented in docs/operations.md). ``str(error)`` says what is wrong; ``error.hint`` what to do.
"""

from __future__ import annotations

import errno
import os
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
    BAD_CONFIG = "bad_config"
    CONTRACT = "contract"
    EMPTY = "empty"
    INVALID_INPUT = "invalid_input"
    CHECKSUM = "checksum"
    NOT_FOUND = "not_found"
    REFUSED = "refused"
    GATE = "gate"
    BUSY = "busy"
    NO_SPACE = "no_space"
    IO = "io"
    SOURCE_COUNT = "source_count"
    TRAINING = "training"


#: The exit code of each reason (``rankloop`` commands; 0 is success, 1 a failed run without a reason).
EXIT_CODES: dict[Reason, int] = {
    Reason.INVALID_INPUT: 2,
    Reason.BAD_URI: 2,
    Reason.BAD_MAPPING: 2,
    Reason.BAD_CONFIG: 2,
    Reason.EMPTY: 2,
    Reason.MISSING_TABLE: 2,
    Reason.MISSING_COLUMN: 2,
    Reason.NOT_FOUND: 3,
    Reason.CHECKSUM: 4,
    Reason.GATE: 5,
    Reason.REFUSED: 6,
    Reason.UNREACHABLE: 7,
    Reason.BUSY: 8,
    Reason.AUTH: 9,
    Reason.NO_SPACE: 10,
    Reason.IO: 10,
    Reason.CONTRACT: 11,
    Reason.SOURCE_COUNT: 11,
    Reason.TRAINING: 12,
}

#: What to do, when the raiser gave no hint.
DEFAULT_HINTS: dict[Reason, str] = {
    Reason.UNREACHABLE: "check that the server is up and the host and port are right, then run the command again",
    Reason.AUTH: "check the user and password (pass the password through RANKLOOP_SOURCE__URI or a settings file)",
    Reason.MISSING_TABLE: "check the mapping's table name against the source",
    Reason.MISSING_COLUMN: "check the mapping's column names against the source",
    Reason.BAD_URI: "see docs/sources.md for the accepted source URIs",
    Reason.BAD_MAPPING: "fix the mapping (docs/sources.md lists the mapping keys); `rankloop extract` tries one",
    Reason.BAD_CONFIG: "fix the setting named (README, Configuration)",
    Reason.CONTRACT: "read the contract report named above; the champion is unchanged",
    Reason.EMPTY: "choose a window that holds data (`--end` a Monday after the first events)",
    Reason.INVALID_INPUT: "see `rankloop COMMAND --help`",
    Reason.CHECKSUM: "the artifact was changed after it was published: roll back to a verified version",
    Reason.NOT_FOUND: "`rankloop models` lists the registered versions",
    Reason.REFUSED: "nothing moved; `rankloop history KIND` shows the current aliases",
    Reason.GATE: "nothing moved; promote by hand with `rankloop promote KIND VERSION --reason ...` to override",
    Reason.BUSY: "another promotion or rollback of this kind holds the lock: wait for it and run the command again",
    Reason.NO_SPACE: "free space on that device (old runs under <home>/runs can go), then run the command again",
    Reason.IO: "check the path's permissions and device, then run the command again",
    Reason.SOURCE_COUNT: "the source changed while it was read or the mapping's window filter is wrong: run again",
    Reason.TRAINING: "see the run's log with -v",
}


class RankLoopError(Exception):
    """Base class. ``reason`` is a :class:`Reason`; ``details`` holds offending names/rows;
    ``hint`` says what the user can do about it (one clause, no trailing period)."""

    def __init__(self, message: str, *, reason: Reason, details: dict[str, Any] | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.details = details or {}
        self.hint = hint

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.reason, 1)

    def one_line(self) -> str:
        """``error (<reason>): <what is wrong> - <what to do>``, on one line."""
        what = " ".join(str(self).split())
        hint = self.hint or DEFAULT_HINTS.get(self.reason, "run again with -v for details")
        return f"error ({self.reason.value}): {what} - {' '.join(hint.split())}"

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

    def __init__(self, message: str, *, reason: Reason, transient: bool = False,
                 details: dict[str, Any] | None = None, hint: str | None = None):
        super().__init__(message, reason=reason, details=details, hint=hint)
        self.transient = transient


class ConfigError(RankLoopError):
    """The settings (environment, RANKLOOP_CONFIG file, options) are not valid."""


class ContractViolation(RankLoopError):
    """The data broke its contract so badly that the run must stop (bad rows alone are quarantined)."""


class TrainingError(RankLoopError):
    """A model could not be trained from the data given."""


class RegistryError(RankLoopError):
    """A registry operation was refused or failed (nothing moved)."""


class StorageError(RankLoopError):
    """A file could not be written or read: no space left, permissions, I/O (names the path)."""


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}


def is_storage_error(error: BaseException, near: str | os.PathLike[str] | None = None) -> bool:
    """A file-system failure (full, read-only, no permission, I/O), not a network one; ``near``: a
    path on the device to check when the error has no errno (Arrow's short writes)."""
    if not isinstance(error, OSError) or isinstance(error, ConnectionError | TimeoutError):
        return False
    if error.errno in _STORAGE_ERRNOS:
        return True
    return error.errno is None and near is not None and device_full(os.fspath(near))


def storage_error(error: OSError, path: str | os.PathLike[str] | None = None, *, what: str = "") -> StorageError:
    """An OSError as a :class:`StorageError` that names the path, the cause and what to do.

    ``error.errno`` may be missing (Arrow's "N requested and M written"): a full device is then
    recognised by its free space.
    """
    where = os.fspath(path) if path is not None else str(error.filename or "") or "?"
    label = f"{what} {where}".strip()
    if error.errno == errno.ENOSPC or (error.errno is None and device_full(where)):
        return StorageError(f"no space left on device writing {label}", reason=Reason.NO_SPACE,
                            hint="free space there (failed runs' data under <home>/runs and unused snapshots under "
                                 "<home>/snapshots can go), then run the command again")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause = "read-only file system" if error.errno == errno.EROFS else "permission denied"
        return StorageError(f"cannot write {label}: {cause}", reason=Reason.IO,
                            hint="pass --home (or set RANKLOOP_HOME) to a writable folder, or fix its permissions")
    return StorageError(f"cannot use {label}: {error.strerror or error}", reason=Reason.IO)


def device_full(path: str, slack: int = 1 << 20) -> bool:
    """True when the device holding ``path`` (or its nearest existing parent) has under ``slack`` bytes free."""
    import shutil

    probe = os.path.abspath(path) if path and path != "?" else os.getcwd()
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:
        return shutil.disk_usage(probe or "/").free < slack
    except OSError:
        return False
