"""How the registry reaches its store: what a failed call means, a fast probe, bounded retries.

The rule: NOT_FOUND only when the store *answered* that something does not exist. A store that
cannot be asked is UNREACHABLE (never an empty answer), a full or failing local disk is a
StorageError naming the path.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
from mlflow.exceptions import MlflowException

from core.errors import RankLoopError, Reason, RegistryError, StorageError

_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
_AUTH = {"PERMISSION_DENIED", "UNAUTHENTICATED"}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_LOCAL_IO = {errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}
#: On-call commands bound MLflow's HTTP retries (default: 5 retries with backoff 2, 120 s timeout,
#: about four minutes against a dead server) so they fail in seconds.
BOUNDED_REQUESTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
_T = TypeVar("_T")


def is_not_found(error: MlflowException) -> bool:
    """True when MLflow says the model, version or alias does not exist."""
    return getattr(error, "error_code", "") in _NOT_FOUND


def redact(uri: str) -> str:
    """A store URI without user or password, for messages (the host is what the user needs)."""
    parsed = urlparse(uri)
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:  # a malformed port: say nothing about the netloc rather than echo it
        return parsed._replace(netloc="...").geturl()
    if not host:
        return uri
    return parsed._replace(netloc=host + (f":{port}" if port else "")).geturl()


_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s]*@", re.IGNORECASE)


def _cause(error: BaseException) -> str:
    """The root cause in a few words: "Connection refused" rather than urllib3's whole chain."""
    text = " ".join(str(error).split())
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        text = found.group(1)
    return _CREDENTIALS.sub(r"\g<scheme>", text)[:200]


def storage_error(error: OSError, path: Path | str, frees: str) -> StorageError:
    """A StorageError naming ``path`` for a local write that failed (``frees``: what the user can delete)."""
    if error.errno in _NO_SPACE:
        return StorageError(
            f"no space left on device writing {path}",
            reason=Reason.NO_SPACE,
            details={"path": str(path)},
            hint=f"free space on that device: {frees}; then run the command again",
        )
    return StorageError(
        f"cannot write {path}: {error.strerror or error}",
        reason=Reason.IO,
        details={"path": str(path), "errno": error.errno},
        hint="check the path's permissions, mount and device, then run the command again",
    )


def local_os_error(error: BaseException) -> OSError | None:
    """The local disk failure (no space, I/O, read-only, permission) behind ``error``, if any."""
    seen: BaseException | None = error
    while seen is not None:
        local = isinstance(seen, OSError) and not isinstance(seen, requests.RequestException)
        if local and seen.errno in _NO_SPACE | _LOCAL_IO:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def classify(error: BaseException, uri: str) -> BaseException:
    """The RankLoopError a failed store call means; anything else (a programming error) unchanged.

    NOT_FOUND only when the store answered that the thing does not exist; AUTH when it refused us;
    a full or failing local disk is a StorageError; any other store or network failure is
    UNREACHABLE, never "absent".
    """
    if isinstance(error, RankLoopError):
        return error
    local = local_os_error(error)
    if local is not None:
        where = local.filename or tempfile.gettempdir()
        return storage_error(local, where, "a model's files are written there: delete what you no longer need "
                             "(old runs under <home>/runs, unused cached versions) or point TMPDIR at a larger disk")
    store = redact(uri)
    if isinstance(error, MlflowException) and is_not_found(error):
        return RegistryError(f"not found in the registry at {store}: {_cause(error)}", reason=Reason.NOT_FOUND)
    if isinstance(error, MlflowException) and getattr(error, "error_code", "") in _AUTH:
        return RegistryError(
            f"the registry at {store} refused access: {_cause(error)}",
            reason=Reason.AUTH,
            hint="check the tracking server's credentials (MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)",
        )
    # a store reached directly (postgresql://...) fails with its driver's errors: matched by module
    # so that this package imports no database client
    driver = type(error).__module__.split(".")[0] in {"sqlalchemy", "psycopg2", "psycopg", "pymysql", "sqlite3"}
    if isinstance(error, MlflowException | OSError | requests.RequestException) or driver:
        return unreachable(uri, _cause(error))
    return error


def unreachable(uri: str, cause: str) -> RegistryError:
    """RegistryError(UNREACHABLE) naming the store (redacted) and the cause."""
    return RegistryError(
        f"the registry at {redact(uri)} is unreachable ({cause})",
        reason=Reason.UNREACHABLE,
        details={"store": redact(uri)},
        hint="start the tracking server or fix MLFLOW_TRACKING_URI, then run the command again "
        "(to stop serving a bad model on this host now: rankloop rollback KIND --offline --reason ...)",
    )


def reaches_store(func: Callable[..., _T]) -> Callable[..., _T]:
    """Decorate a function whose first argument is an MlflowClient: store failures become RankLoopErrors."""

    @functools.wraps(func)
    def wrapper(client: Any, *args: Any, **kwargs: Any) -> _T:
        try:
            return func(client, *args, **kwargs)
        except Exception as e:
            converted = classify(e, str(client.tracking_uri))
            if converted is e:
                raise
            raise converted from e

    return wrapper


def probe(uri: str, timeout: float) -> None:
    """Fail fast with UNREACHABLE when the tracking store is down, instead of waiting out MLflow's retries.

    HTTP(S): ``GET /health`` within ``timeout`` seconds. SQLite: the folder of the database file
    must exist (a missing file is an empty store, which answers "nothing registered").
    """
    parsed = urlparse(uri)
    try:
        if parsed.scheme in {"http", "https"}:
            requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
        elif parsed.scheme == "sqlite" and not Path(uri.removeprefix("sqlite:///")).parent.is_dir():
            raise FileNotFoundError(f"no folder {Path(uri.removeprefix('sqlite:///')).parent}")
    except (requests.RequestException, OSError) as e:
        raise unreachable(uri, _cause(e)) from e


def is_empty_sqlite(uri: str) -> bool:
    """True for an embedded SQLite store whose file does not exist yet (nothing is registered)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()


@contextmanager
def bounded_requests() -> Iterator[None]:
    """Within the block, MLflow gives up on an HTTP request after one retry and 5 s (``BOUNDED_REQUESTS``)."""
    saved = {name: os.environ.get(name) for name in BOUNDED_REQUESTS}
    os.environ.update(BOUNDED_REQUESTS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
