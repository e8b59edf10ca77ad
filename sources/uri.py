"""Parse source URIs and redact their secrets (passwords never reach a log or an error).

URIs are split the way the drivers' URL parsers split them (``urllib.parse.urlsplit``, the WHATWG
rules connectorx follows, pymongo's ``rpartition``): the authority ends at the first ``/``, ``?``
or ``#``, and the user information ends at the *last* ``@`` of the authority, so a raw ``@`` in a
password stays inside the password. Connections are opened from the parsed parts re-encoded
(:meth:`SourceURI.driver_uri`), so libpq, which would cut at the first ``@``, sees what we parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from core.errors import Reason, SourceError

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
ACCEPTED = "sqlite:///path.db, postgresql://, mysql:// (or mariadb://), mongodb://.../db?collection=name, or a Parquet path"
_SECRET_KEY = r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|sslpassword"
_SECRET_KEYS = re.compile(rf"(?i)^({_SECRET_KEY})$")
_QUERY_SECRET = re.compile(rf"(?i)([?&;](?:{_SECRET_KEY})=)([^&;#]*)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def _escape_controls(text: str) -> str:
    """Control characters as visible escapes (``\\n``), so no URI can forge a log line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _split_userinfo(uri: str) -> tuple[str, str, str] | None:
    """``(prefix, userinfo, rest)`` with ``uri == prefix + userinfo + "@" + rest``, or None.

    The authority is what follows ``scheme://`` up to the first ``/``, ``?`` or ``#``; its user
    information ends at its last ``@``. A password holding a raw ``/``, ``?`` or ``#`` moves the
    authority's end before its ``@``: then the last ``@`` before the query is taken instead, so
    such a password is hidden too (with more of the URI than necessary).
    """
    match = _SCHEME.match(uri)
    if match is None:
        return None
    prefix, rest = uri[: match.end()], uri[match.end():]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        cut = authority.rindex("@")
    else:
        head = re.split(r"[?#]", rest, maxsplit=1)[0]
        if "@" not in head or ":" not in head[: head.rindex("@")]:
            return None
        cut = head.rindex("@")
    return prefix, rest[:cut], rest[cut + 1:]


def redact(uri: str) -> str:
    """``uri`` with any password (user information or query-string secret) replaced by ``***``.

    Control characters are shown escaped (``\\n``), never raw.
    """
    text = str(uri)
    parts = _split_userinfo(text)
    if parts is not None:
        prefix, userinfo, rest = parts
        user, colon, _ = userinfo.partition(":")
        text = f"{prefix}{user}{':***' if colon else ''}@{rest}"
    return _escape_controls(_QUERY_SECRET.sub(lambda m: f"{m.group(1)}***", text))


def secrets_of(uri: str) -> list[str]:
    """Every secret string in ``uri`` (raw and percent-decoded), longest first."""
    found: list[str] = []
    parts = _split_userinfo(str(uri))
    if parts is not None and ":" in parts[1]:
        password = parts[1].partition(":")[2]
        found += [password, unquote(password)]
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

    def driver_uri(self, scheme: str | None = None, *, drop_options: tuple[str, ...] = ()) -> str:
        """``raw`` with the user and password percent-encoded as parsed (libpq cuts the authority at
        its first ``@``, we at its last), the scheme replaced and ``drop_options`` removed.

        Args:
            scheme: the scheme the driver expects (``postgresql``, ``mysql``); None keeps it.
            drop_options: query options the driver does not accept (e.g. ``collection``).
        """
        text = self.raw
        parts = _split_userinfo(text)
        if parts is not None:
            prefix, userinfo, rest = parts
            user, colon, password = userinfo.partition(":")
            encoded = quote(unquote(user), safe="") + (f":{quote(unquote(password), safe='')}" if colon else "")
            text = f"{prefix}{encoded}@{rest}"
        if scheme is not None:
            text = scheme + text[text.index("://"):]
        base, _, query = text.partition("?")
        drop = {d.lower() for d in drop_options}
        kept = [p for p in query.split("&") if p and p.split("=", 1)[0].lower() not in drop]
        return base + ("?" + "&".join(kept) if kept else "")


def parse_uri(uri: str) -> SourceURI:
    """Parse a source URI; a value without a scheme is a Parquet file or folder.

    Raises:
        SourceError: (Reason.BAD_URI) a control character, an unknown scheme, or a missing database/path.
    """
    if not isinstance(uri, str):
        raise TypeError(f"source URI must be a str, got {type(uri).__name__}")
    control = _CONTROL.search(uri)
    if control is not None:
        raise SourceError(
            f"source URI {redact(uri)} holds a control character ({repr(control.group())[1:-1]} at position "
            f"{control.start()})", reason=Reason.BAD_URI,
            hint="a URI is one line of printable text: remove the character (percent-encode it, e.g. %0A, if the "
                 "password really holds it)")
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("", "file", "parquet"):
        path = uri.split("://", 1)[1] if "://" in uri else uri
        return SourceURI(kind="parquet", raw=uri, path=Path(path))
    kind = _SCHEMES.get(scheme) or _SCHEMES.get(scheme.split("+", 1)[0])
    if kind is None:
        raise SourceError(f"unknown source URI scheme {scheme!r} in {redact(uri)}", reason=Reason.BAD_URI,
                          hint=f"use one of {ACCEPTED}")
    if kind == "sqlite":
        return _parse_sqlite(uri)
    return _parse_server(uri, kind)


def _parse_sqlite(uri: str) -> SourceURI:
    rest = uri.split("://", 1)[1]
    if not rest.startswith("/") or rest == "/":
        raise SourceError(
            f"SQLite URI must look like sqlite:///relative.db or sqlite:////abs/path.db, got {redact(uri)}",
            reason=Reason.BAD_URI, hint="three slashes before a relative path, four before an absolute one")
    return SourceURI(kind="sqlite", raw=uri, path=Path(rest[1:]))


def _parse_server(uri: str, kind: Kind) -> SourceURI:
    user = password = None
    located = uri
    userinfo = _split_userinfo(uri)
    if userinfo is not None:
        prefix, info, rest = userinfo
        name, colon, secret = info.partition(":")
        user, password = unquote(name) or None, unquote(secret) if colon else None
        located = prefix + rest
    parts = urlsplit(located)
    database = unquote(parts.path.lstrip("/")) or None
    if database is None:
        raise SourceError(f"source URI {redact(uri)} names no database (expected .../<database>)", reason=Reason.BAD_URI,
                          hint="add the database after the host, e.g. postgresql://user@host:5432/analytics")
    host, port = parts.hostname, None
    try:
        port = parts.port
    except ValueError as e:
        if not (kind == "mongodb" and "," in parts.netloc):  # a replica set lists several host:port
            raise SourceError(f"source URI {redact(uri)} has an invalid port", reason=Reason.BAD_URI,
                              hint="the port is a number after the host, e.g. host:5432") from e
        host = parts.netloc
    return SourceURI(kind=kind, raw=uri, host=host, port=port, user=user, password=password, database=database,
                     options=tuple(parse_qsl(parts.query, keep_blank_values=True)))
