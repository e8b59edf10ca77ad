"""Open connections to each kind of source and turn driver failures into :class:`SourceError`.

Every message passes through :func:`sources.uri.scrub`, so no password reaches an error or a log.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from core.errors import Reason, SourceError
from sources.uri import SourceURI, scrub

log = logging.getLogger(__name__)
T = TypeVar("T")

# A host name that does not resolve is a configuration error: retrying cannot fix it.
_NO_HOST = re.compile(
    r"(?i)could not translate host name|name or service not known|nodename nor servname|"
    r"temporary failure in name resolution|no address associated with hostname|name does not resolve|"
    r"unknown (mysql |mariadb )?server host|getaddrinfo failed|failed to lookup address|dns"
)
_UNREACHABLE = re.compile(
    r"(?i)connection refused|could not connect|can't connect|failed to connect|timed? ?out|"
    r"no route to host|server closed the connection|"
    r"lost connection|connection reset|serverselectiontimeout|network is unreachable"
)
_AUTH = re.compile(
    r"(?i)password authentication failed|access denied|authentication failed|role \".*\" does not exist|"
    r"no password supplied|not authorized|permission denied|auth.* fail"
)
_NO_DATABASE = re.compile(r"(?i)database \".*\" does not exist|unknown database")
_NO_TABLE = re.compile(r"(?i)relation \".*\" does not exist|no such table|table .* doesn't exist|42P01")
_NO_COLUMN = re.compile(r"(?i)column .* does not exist|no such column|unknown column|42703")
_MYSQL_CODES = {2002: Reason.UNREACHABLE, 2003: Reason.UNREACHABLE, 2005: Reason.UNREACHABLE, 2006: Reason.UNREACHABLE,
                2013: Reason.UNREACHABLE, 1045: Reason.AUTH, 1044: Reason.AUTH, 1049: Reason.NOT_FOUND,
                1146: Reason.MISSING_TABLE, 1103: Reason.MISSING_TABLE, 1054: Reason.MISSING_COLUMN}


def classify(error: BaseException) -> Reason:
    """The reason code for a driver exception (by vendor code first, then by message)."""
    text = f"{type(error).__name__}: {error}"
    if _NO_HOST.search(text):
        return Reason.UNREACHABLE
    code = error.args[0] if error.args and isinstance(error.args[0], int) else None
    if code in _MYSQL_CODES:
        return _MYSQL_CODES[code]
    for pattern, reason in ((_AUTH, Reason.AUTH), (_NO_DATABASE, Reason.NOT_FOUND), (_NO_TABLE, Reason.MISSING_TABLE),
                            (_NO_COLUMN, Reason.MISSING_COLUMN), (_UNREACHABLE, Reason.UNREACHABLE)):
        if pattern.search(text):
            return reason
    return Reason.INVALID_INPUT


def is_transient(error: BaseException) -> bool:
    """Only a refused or timed-out connection may heal by itself; an unknown host or a refused
    password never does."""
    return classify(error) is Reason.UNREACHABLE and not _NO_HOST.search(f"{type(error).__name__}: {error}")


def source_error(src: SourceURI, action: str, error: BaseException) -> SourceError:
    """A :class:`SourceError` for ``error`` raised while doing ``action`` on ``src`` (secrets scrubbed)."""
    reason = classify(error)
    detail = scrub(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__, src.raw)
    no_host = bool(_NO_HOST.search(f"{type(error).__name__}: {error}"))
    what = {Reason.UNREACHABLE: "host name does not resolve" if no_host else "source unreachable",
            Reason.AUTH: "source refused the credentials", Reason.NOT_FOUND: "database not found",
            Reason.MISSING_TABLE: "table or collection not found", Reason.MISSING_COLUMN: "column not found"}
    message = f"{what.get(reason, 'source error')} while {action} ({src.kind}, {src.where}, uri {src.redacted}): {detail}"
    return SourceError(message, reason=reason, transient=reason is Reason.UNREACHABLE and not no_host,
                       details={"uri": src.redacted, "host": src.host, "database": src.database},
                       hint=_hint(src, reason, no_host))


def _hint(src: SourceURI, reason: Reason, no_host: bool) -> str | None:
    host = f"{src.host or 'localhost'}:{src.port or 'default port'}"
    if reason is Reason.UNREACHABLE and no_host:
        return f"host {src.host!r} does not resolve: check the host name in the source URI (not retried)"
    if reason is Reason.UNREACHABLE:
        return f"check that the server at {host} is up and accepts connections; the command retries a refused connection"
    if reason is Reason.AUTH:
        return (f"check the user {src.user or '(none)'!r} and its password for {host} (percent-encode @ : / in a "
                f"password; pass it through RANKLOOP_SOURCE__URI or a settings file, not a command line)")
    if reason is Reason.NOT_FOUND:
        return f"check the database name {src.database!r} in the source URI"
    if reason is Reason.MISSING_COLUMN:
        return "check the mapping's `from:` names against the source's columns"
    return None


def guarded(src: SourceURI, action: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; any driver exception becomes a scrubbed :class:`SourceError` (cause chained)."""
    try:
        return fn()
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - drivers raise many unrelated types; all are re-raised typed
        error, cause = source_error(src, action, e), _scrubbed_cause(e, src)
    raise error from cause  # outside the handler: no implicit __context__ holding the raw driver text


def _scrubbed_cause(error: BaseException, src: SourceURI) -> BaseException:
    """A stand-in cause whose text is scrubbed (driver messages may echo the URI)."""
    text = str(error)
    if not any(s in text for s in (src.password or "\0", src.raw)):
        return error
    return RuntimeError(f"{type(error).__name__}: {scrub(text, src.raw)}")


def with_retries(fn: Callable[[], T], *, retries: int, delay_s: float, what: str) -> T:
    """Call ``fn``, retrying only transient :class:`SourceError`; the delay doubles each time."""
    attempt = 0
    while True:
        try:
            return fn()
        except SourceError as e:
            if not e.transient or attempt >= retries:
                raise
            attempt += 1
            wait = delay_s * 2 ** (attempt - 1)
            log.warning("%s failed (transient, attempt %d of %d), retrying in %.1fs: %s",
                        what, attempt, retries + 1, wait, e)
            time.sleep(wait)


def connect_sqlite(src: SourceURI) -> Any:
    """ADBC DBAPI connection to the SQLite file (created when absent)."""
    import adbc_driver_sqlite.dbapi as sqlite_dbapi

    return guarded(src, "connecting", lambda: sqlite_dbapi.connect(str(src.path)))


def connect_sqlite_readonly(src: SourceURI) -> Any:
    """ADBC connection to an existing SQLite file; a missing file is Reason.NOT_FOUND."""
    if src.path is None or not src.path.is_file():
        raise SourceError(f"SQLite database {src.path} does not exist (uri {src.redacted})",
                          reason=Reason.NOT_FOUND, details={"path": str(src.path)})
    return connect_sqlite(src)


def postgres_uri(src: SourceURI) -> str:
    """The URI libpq accepts: driver suffixes like ``+psycopg`` removed, user and password
    percent-encoded as we parsed them (libpq would cut a raw ``@`` in a password)."""
    return src.driver_uri("postgresql")


def connect_postgres(src: SourceURI) -> Any:
    """ADBC DBAPI connection to PostgreSQL."""
    import adbc_driver_postgresql.dbapi as pg_dbapi

    return guarded(src, "connecting", lambda: pg_dbapi.connect(postgres_uri(src)))


def connect_mysql(src: SourceURI, *, streaming: bool = False) -> Any:
    """pymysql connection to MySQL/MariaDB (``streaming``: unbuffered SSCursor by default)."""
    import pymysql
    import pymysql.cursors

    kwargs: dict[str, Any] = {
        "host": src.host or "localhost", "port": src.port or 3306, "user": src.user or "root",
        "password": src.password or "", "database": src.database, "charset": "utf8mb4",
        "local_infile": True, "autocommit": True, "connect_timeout": 10, "init_command": "SET time_zone = '+00:00'",
    }
    if streaming:
        kwargs["cursorclass"] = pymysql.cursors.SSCursor
    return guarded(src, "connecting", lambda: pymysql.connect(**kwargs))


def connect_mongo(src: SourceURI) -> Any:
    """pymongo client (``pymongo.MongoClient`` is looked up at call time so mongomock can patch it)."""
    import pymongo

    uri = src.driver_uri(drop_options=("collection",))  # pymongo rejects unknown options

    def open_client() -> Any:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True)
        client.admin.command("ping")
        return client

    return guarded(src, "connecting", open_client)
