"""The serving loader: the version an alias points to, verified, cached, and kept when the store is down.

``load("ranker")`` resolves the alias in the registry, makes sure a verified copy of that version is
in ``<home>/cache/models/ranker/<version>/`` and records the alias in a pointer file. When the
tracking server cannot be reached, it serves the version the pointer names (after checking its
sha256 offline) and logs a WARNING; ``.from_cache`` is then True.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rankloop.errors import Reason, RegistryError
from rankloop.settings import Settings
from registry.cache import ModelCache
from registry.manifest import check_kind
from registry.store import CHAMPION, aliases, is_not_found, make_client, read_manifest

log = logging.getLogger(__name__)

VERBS: dict[str, tuple[str, ...]] = {
    "ranker": ("predict",),
    "bandit": ("mean", "sample"),
    "linucb": ("scores",),
    "qtable": ("best_action", "action_params"),
}


class RankerAdapter:
    """A Ranker that refuses frames whose columns differ from the manifest's feature set."""

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        from models.ranker import Ranker

        self.features: list[str] = list(manifest["feature_set"]["features"])
        self.ranker = Ranker.load(directory / "model.txt")

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Scores of the rows of ``frame``, shape (n,)."""
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"predict expects a pandas DataFrame, found {type(frame).__name__}")
        missing = [f for f in self.features if f not in frame.columns]
        extra = [str(c) for c in frame.columns if c not in self.features]
        if missing or extra:
            raise ValueError(
                f"frame columns differ from the ranker's feature set: missing {missing}, extra {extra}"
            )
        return self.ranker.predict(frame[self.features])


def _open(kind: str, directory: Path, manifest: dict[str, Any]) -> Any:
    if kind == "ranker":
        return RankerAdapter(directory, manifest)
    from models.policy_tracking import load_tables

    return load_tables(directory)


class LoadedModel:
    """A served version. Call the kind's verbs on it (``VERBS``); :meth:`refresh` follows the alias."""

    def __init__(
        self, kind: str, alias: str, settings: Settings, client: MlflowClient | None, probe_timeout: float
    ):
        self.kind, self.alias = kind, alias
        self._settings, self._client, self._probe_timeout = settings, client, probe_timeout
        self._cache = ModelCache(settings.cache_dir / "models")
        self.version, self.manifest, self.path, self.from_cache = self._resolve()
        self._impl = _open(kind, self.path, self.manifest)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in VERBS.get(self.kind, ()):
            raise AttributeError(
                f"a {self.kind} model has no {name!r}; it offers {list(VERBS.get(self.kind, ()))}"
            )
        return getattr(self._impl, name)

    def __repr__(self) -> str:
        return f"LoadedModel(kind={self.kind!r}, alias={self.alias!r}, version={self.version}, from_cache={self.from_cache})"

    def refresh(self) -> bool:
        """Follow the alias again; returns True when it now points to another version (which is loaded).

        When the store is unreachable or the new version cannot be loaded, keeps serving the
        current version (logged) and returns False.
        """
        try:
            version, manifest, path, from_cache = self._resolve()
            impl = _open(self.kind, path, manifest) if version != self.version else self._impl
        except RegistryError as e:
            log.error(
                "refresh of %s@%s failed, still serving version %d: %s",
                self.kind,
                self.alias,
                self.version,
                e,
            )
            return False
        changed = version != self.version
        self.version, self.manifest, self.path, self.from_cache, self._impl = (
            version,
            manifest,
            path,
            from_cache,
            impl,
        )
        if changed:
            log.info("%s@%s moved: now serving version %d", self.kind, self.alias, version)
        return changed

    def _resolve(self) -> tuple[int, dict[str, Any], Path, bool]:
        try:
            return (*self._resolve_remote(), False)
        except RegistryError as e:
            if e.reason is not Reason.UNREACHABLE:
                raise
            error = e
        version, manifest, path = self._cache.from_pointer(self.kind, self.alias)
        log.warning(
            "serving %s version %d from cache %s: the registry at %s is unreachable (%s)",
            self.kind,
            version,
            path,
            _safe(self._settings.tracking_uri),
            error,
        )
        return version, manifest, path, True

    def _resolve_remote(self) -> tuple[int, dict[str, Any], Path]:
        uri = self._settings.tracking_uri
        _probe(uri, self._probe_timeout)
        try:
            client = self._client or make_client(self._settings)
            version = aliases(client, self.kind).get(self.alias)
            if version is None:
                raise RegistryError(
                    f"{self.kind} has no version with alias {self.alias!r}", reason=Reason.NOT_FOUND
                )
            manifest = read_manifest(client, self.kind, version)
            path = self._cache.ensure(client, self.kind, version, manifest)
        except Exception as e:
            converted = _classified(e, f"{self.kind}@{self.alias}")
            if converted is e:
                raise
            raise converted from e
        self._cache.write_pointer(self.kind, self.alias, version, manifest)
        return version, manifest, path


def _classified(error: Exception, what: str) -> Exception:
    """NOT_FOUND / UNREACHABLE RegistryError for store failures; anything else is returned unchanged."""
    if isinstance(error, RegistryError):
        return error
    if isinstance(error, MlflowException) and is_not_found(error):
        return RegistryError(f"{what} not found: {error}", reason=Reason.NOT_FOUND)
    # a tracking store reached directly (postgresql://...) fails with its driver's errors: matched
    # by module so this package imports no database client
    store_error = type(error).__module__.split(".")[0] in {"sqlalchemy", "psycopg2", "psycopg", "pymysql"}
    if isinstance(error, MlflowException | OSError | requests.RequestException) or store_error:
        return RegistryError(
            f"registry unreachable: {type(error).__name__}: {error}", reason=Reason.UNREACHABLE
        )
    return error


def _safe(uri: str) -> str:
    """A URI without credentials, for messages."""
    parsed = urlparse(uri)
    return (
        parsed._replace(netloc=parsed.hostname + (f":{parsed.port}" if parsed.port else "")).geturl()
        if parsed.hostname
        else uri
    )


def _probe(uri: str, timeout: float) -> None:
    """Fail fast (UNREACHABLE) when the tracking store is down, instead of waiting out MLflow's retries."""
    parsed = urlparse(uri)
    try:
        if parsed.scheme in {"http", "https"}:
            requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
        elif parsed.scheme == "sqlite" and not Path(uri.removeprefix("sqlite:///")).exists():
            raise FileNotFoundError(f"no SQLite store at {uri.removeprefix('sqlite:///')}")
    except (requests.RequestException, OSError) as e:
        raise RegistryError(f"registry unreachable: {e}", reason=Reason.UNREACHABLE) from e


def load(
    kind: str,
    alias: str = CHAMPION,
    *,
    settings: Settings | None = None,
    client: MlflowClient | None = None,
    probe_timeout: float = 5.0,
) -> LoadedModel:
    """Load the version ``alias`` points to, verified against its manifest.

    Args:
        kind: ranker, bandit, linucb or qtable.
        alias: registry alias (default ``champion``).
        settings: default ``Settings()``; the cache is ``<home>/cache/models``.
        client: MLflow client (default: one for ``settings.tracking_uri``).
        probe_timeout: seconds to wait for the tracking server before serving from cache.

    Returns:
        A LoadedModel with ``.version``, ``.kind``, ``.manifest``, ``.from_cache`` and the kind's verbs.

    Raises:
        RegistryError: NOT_FOUND (no such alias, nothing cached), CHECKSUM (corrupt and no good copy).
    """
    check_kind(kind)
    return LoadedModel(kind, alias, settings or Settings(), client, probe_timeout)
