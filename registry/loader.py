"""The serving loader: the version an alias points to, verified, cached, and kept when the store is down.

``load("ranker")`` resolves the alias in the registry, makes sure a verified copy of that version is
in ``<home>/cache/models/ranker/<version>/`` and records the alias in a pointer file. When the
tracking server cannot be reached, it serves the version the pointer names (after checking its
sha256 offline) and logs a WARNING; ``.from_cache`` is then True. Without a pointer it raises
UNREACHABLE, never NOT_FOUND: "no champion" is only ever the registry's answer. A champion pinned
by an offline rollback on this host (``registry.offline``) is served instead of the registry's
until the pin has been applied to the registry. A pointer that cannot be written (a full disk)
is logged, and the verified version is served all the same.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from core.config.registry import RegistryConfig
from core.errors import Reason, RegistryError, StorageError
from models.policy import MODEL_KINDS, serving_verbs
from registry.cache import ModelCache
from registry.config import config_of
from registry.manifest import check_kind
from registry.offline import read_pin
from registry.reach import classify, is_empty_sqlite, probe
from registry.store import CHAMPION, PREVIOUS, aliases, make_client, read_manifest

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

VERBS: dict[str, tuple[str, ...]] = {kind: serving_verbs(kind) for kind in MODEL_KINDS}


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
    from models.policy import load_policy_table

    return load_policy_table(directory)


class LoadedModel:
    """A served version. Call the kind's verbs on it (``VERBS``); :meth:`refresh` follows the alias."""

    def __init__(
        self, kind: str, alias: str, settings: Settings | RegistryConfig, client: MlflowClient | None, probe_timeout: float
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

        When the store is unreachable or the new version cannot be loaded (or cached: a full
        disk), keeps serving the current version (logged) and returns False.
        """
        try:
            version, manifest, path, from_cache = self._resolve()
            impl = _open(self.kind, path, manifest) if version != self.version else self._impl
        except (RegistryError, StorageError) as e:
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
        pin = read_pin(self._settings, self.kind) if self.alias == CHAMPION else None
        if pin is not None:
            manifest, path = self._cache.verified(self.kind, pin.version, pin.manifest_sha256)
            log.info("serving %s version %d pinned by an offline rollback on this host (%s)",
                     self.kind, pin.version, pin.reason)
            return pin.version, manifest, path, True
        try:
            return (*self._resolve_remote(), False)
        except RegistryError as e:
            if e.reason is not Reason.UNREACHABLE:
                raise
            error = e
        if self._cache.read_pointer(self.kind, self.alias) is None:
            raise RegistryError(
                f"{error}; this host has no cached {self.kind}@{self.alias} to serve meanwhile",
                reason=Reason.UNREACHABLE,
                details=error.details,
                hint=error.hint,
            ) from error
        version, manifest, path = self._cache.from_pointer(self.kind, self.alias)
        log.warning("serving %s version %d from cache %s: %s", self.kind, version, path, error)
        return version, manifest, path, True

    def _resolve_remote(self) -> tuple[int, dict[str, Any], Path]:
        uri = self._settings.tracking_uri
        if is_empty_sqlite(uri):
            raise RegistryError(f"nothing is registered yet (no store at {uri})", reason=Reason.NOT_FOUND)
        probe(uri, self._probe_timeout)
        client = self._client or make_client(self._settings)
        state = aliases(client, self.kind)
        version = state.get(self.alias)
        if version is None:
            raise RegistryError(f"{self.kind} has no version with alias {self.alias!r}", reason=Reason.NOT_FOUND)
        try:
            manifest = read_manifest(client, self.kind, version)
            path = self._cache.ensure(client, self.kind, version, manifest)
        except Exception as e:
            converted = classify(e, uri)
            if isinstance(converted, RegistryError) and converted.reason is Reason.NOT_FOUND:
                # the alias exists: its version being unservable is not "no champion"
                converted = RegistryError(
                    f"{self.kind}@{self.alias} names version {version}, which cannot be served: {converted}",
                    reason=Reason.REFUSED,
                    details={"kind": self.kind, "version": version},
                    hint=f"roll {self.kind} back to a servable version (rankloop rollback {self.kind} --reason ...)",
                )
            if converted is e:
                raise
            raise converted from e
        try:
            self._cache.write_pointer(self.kind, self.alias, version, manifest, previous=state.get(PREVIOUS))
        except StorageError as e:
            log.warning("serving %s version %d without updating its pointer: %s", self.kind, version, e)
        return version, manifest, path


def load(
    kind: str,
    alias: str = CHAMPION,
    *,
    settings: Settings | RegistryConfig | None = None,
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
        RegistryError: NOT_FOUND only when the registry answered that the alias does not exist;
            UNREACHABLE when it cannot be asked and this host has no cached copy; CHECKSUM
            (corrupt and no good copy); REFUSED (the alias names a version that cannot be served).
    """
    check_kind(kind)
    return LoadedModel(kind, alias, config_of(settings), client, probe_timeout)


def champion_or_none(kind: str, settings: Settings | RegistryConfig) -> LoadedModel | None:
    """The loaded champion of ``kind``, or None when the kind has none yet (any other failure raises)."""
    try:
        return load(kind, alias=CHAMPION, settings=settings)
    except RegistryError as e:
        if e.reason is Reason.NOT_FOUND:
            return None
        raise
