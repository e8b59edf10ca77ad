"""Parse source URIs and redact their secrets (passwords never reach a log or an error)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from rankloop.errors import Reason, SourceError

Kind = Literal["sqlite", "postgresql", "mysql", "mongodb", "parquet"]

_SCHEMES: dict[str, Kind] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mongodb": "mongodb",
    "mongodb+srv": "mongodb",
}
_SECRET_KEYS = re.compile(r"(?i)^(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|sslpassword)$")
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/?#]*):(?P<pw>[^@/?#]*)@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|sslpassword)=)([^&;#]*)"
)


def redact(uri: str) -> str:
    """``uri`` with any password (userinfo or query-string secret) replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(uri))
    return _QUERY_SECRET.sub(lambda m: f"{m.group(1)}***", text)


def secrets_of(uri: str) -> list[str]:
    """Every secret string in ``uri`` (raw and percent-decoded), longest first."""
    found: list[str] = []
    match = _USERINFO.match(str(uri))
    if match and match["pw"]:
        found += [match["pw"], unquote(match["pw"])]
    query = urlsplit(str(uri)).query if "://" in str(uri) else ""
    found += [v for k, v in parse_qsl(query, keep_blank_values=False) if _SECRET_KEYS.match(k)]
    found += [m.group(2) for m in _QUERY_SECRET.finditer(str(uri)) if m.group(2)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, uri: str) -> str:
    """``text`` (e.g. a driver's error message) with ``uri`` redacted and its secrets masked."""
    out = str(text).replace(str(uri), redact(uri))
    for secret in secrets_of(uri):
        out = out.replace(secret, "***")
    return out


@dataclass(frozen=True)
class SourceURI:
    """A parsed source location. ``raw`` keeps credentials: never log it, log ``redacted``."""

    kind: Kind
    raw: str = field(repr=False)
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    path: Path | None = None
    options: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"SourceURI({self.redacted!r})"

    @property
    def redacted(self) -> str:
        return redact(self.raw)

    def option(self, name: str) -> str | None:
        """The query-string option ``name``, if given."""
        return dict(self.options).get(name)

    @property
    def where(self) -> str:
        """Host and database for messages (no credentials)."""
        if self.kind in ("sqlite", "parquet"):
            return str(self.path)
        return f"host {self.host or 'localhost'}:{self.port or 'default'}, database {self.database!r}"


def parse_uri(uri: str) -> SourceURI:
    """Parse a source URI; a value without a scheme is a Parquet file or folder.

    Raises:
        SourceError: (Reason.BAD_URI) unknown scheme or a missing database/path.
    """
    if not isinstance(uri, str):
        raise TypeError(f"source URI must be a str, got {type(uri).__name__}")
    scheme = uri.split("://", 1)[0].lower().split("+", 1)[0] if "://" in uri else ""
    if scheme in ("", "file", "parquet"):
        path = uri.split("://", 1)[1] if "://" in uri else uri
        return SourceURI(kind="parquet", raw=uri, path=Path(path))
    if scheme == "mongodb" and uri.lower().startswith("mongodb+srv"):
        scheme = "mongodb+srv"
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise SourceError(
            f"unknown source URI scheme {scheme!r} in {redact(uri)}; expected one of "
            f"sqlite, postgresql, mysql, mariadb, mongodb, or a Parquet path",
            reason=Reason.BAD_URI,
        )
    if kind == "sqlite":
        return _parse_sqlite(uri)
    return _parse_server(uri, kind)


def _parse_sqlite(uri: str) -> SourceURI:
    rest = uri.split("://", 1)[1]
    if not rest.startswith("/") or rest == "/":
        raise SourceError(
            f"SQLite URI must look like sqlite:///relative.db or sqlite:////abs/path.db, got {redact(uri)}",
            reason=Reason.BAD_URI,
        )
    return SourceURI(kind="sqlite", raw=uri, path=Path(rest[1:]))


def _parse_server(uri: str, kind: Kind) -> SourceURI:
    parts = urlsplit(uri)
    database = unquote(parts.path.lstrip("/")) or None
    if database is None:
        raise SourceError(f"source URI {redact(uri)} names no database (expected .../<database>)", reason=Reason.BAD_URI)
    try:
        port = parts.port
    except ValueError as e:
        raise SourceError(f"source URI {redact(uri)} has an invalid port", reason=Reason.BAD_URI) from e
    return SourceURI(
        kind=kind,
        raw=uri,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database,
        options=tuple(parse_qsl(parts.query, keep_blank_values=True)),
    )
