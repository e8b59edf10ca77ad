"""The local model cache: ``<home>/cache/models/<kind>/<version>/`` plus one pointer file per alias.

A version directory holds the artifact files and ``manifest.json``. It is only ever created by
renaming a fully downloaded and verified temporary directory, so a reader never sees half a version.
The pointer ``<kind>/alias-<alias>.json`` records the last version loaded for the alias, the
sha256 of its manifest and the version the registry's ``previous`` alias named then, so a cached
copy can be checked (and an offline rollback find its target) without the tracking server.

Writes that fail on the local disk raise ``StorageError`` naming the path and what can be deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from core.atomic import write_text
from core.errors import Reason, RegistryError, StorageError
from registry.manifest import MANIFEST_FILE, canonical_json, manifest_digest, verify
from registry.reach import storage_error
from registry.store import download_files

log = logging.getLogger(__name__)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory and os.replace."""
    write_text(path, text)


class ModelCache:
    """Verified local copies of registered versions."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def version_dir(self, kind: str, version: int) -> Path:
        return self.root / kind / str(version)

    def pointer_path(self, kind: str, alias: str) -> Path:
        return self.root / kind / f"alias-{alias}.json"

    def cached_versions(self, kind: str) -> list[int]:
        """The versions of ``kind`` that have a cached copy, ascending."""
        folder = self.root / kind
        names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        return sorted(int(n) for n in names if n.isdigit())

    def deletable(self, kind: str) -> list[Path]:
        """Cached versions of ``kind`` that no pointer names: safe to delete to free space."""
        pointers = [self.read_pointer(kind, p.stem.removeprefix("alias-")) for p in (self.root / kind).glob("alias-*.json")]
        kept = {int(r[key]) for r in pointers if r for key in ("version", "previous") if r.get(key) is not None}
        return [self.version_dir(kind, v) for v in self.cached_versions(kind) if v not in kept]

    def _frees(self, kind: str) -> str:
        spare = self.deletable(kind) if (self.root / kind).is_dir() else []
        listed = ", ".join(str(p) for p in spare[:5]) or f"old cached versions under {self.root / kind}"
        return f"delete cached {kind} versions no alias uses ({listed}) or old runs under {self.root.parent.parent / 'runs'}"

    def cached_manifest(self, kind: str, version: int) -> dict[str, Any] | None:
        """The manifest of a cached version, None when the version is not cached."""
        path = self.version_dir(kind, version) / MANIFEST_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def problems(self, kind: str, version: int, manifest: dict[str, Any]) -> list[str] | None:
        """Mismatches between the cached copy and ``manifest`` (None when the version is not cached)."""
        cached = self.cached_manifest(kind, version)
        if cached is None:
            return None
        if manifest_digest(cached) != manifest_digest(manifest):
            return [f"cached {MANIFEST_FILE} differs from the registered manifest"]
        return verify(self.version_dir(kind, version), manifest)

    def install(self, client: MlflowClient, kind: str, version: int, manifest: dict[str, Any]) -> Path:
        """Download a version, verify it against ``manifest`` and move it into the cache atomically.

        Raises:
            RegistryError: CHECKSUM, naming every mismatching file; nothing is installed then.
        """
        try:
            self._install(client, kind, version, manifest)
        except StorageError as e:
            raise StorageError(str(e), reason=e.reason, details=e.details, hint=self._frees(kind)) from e
        except OSError as e:
            raise storage_error(e, self.version_dir(kind, version), self._frees(kind)) from e
        log.info("cached %s version %d at %s", kind, version, self.version_dir(kind, version))
        return self.version_dir(kind, version)

    def _install(self, client: MlflowClient, kind: str, version: int, manifest: dict[str, Any]) -> None:
        (self.root / kind).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root / kind, prefix=f".download-{version}-") as tmp:
            staged = download_files(client, manifest, Path(tmp) / "files")
            problems = verify(staged, manifest)
            if problems:
                raise RegistryError(
                    f"{kind} version {version} fails its checksums in the registry store: {problems}",
                    reason=Reason.CHECKSUM,
                    details={"kind": kind, "version": version, "problems": problems},
                )
            write_atomic(staged / MANIFEST_FILE, canonical_json(manifest))
            self._replace(staged, self.version_dir(kind, version))

    @staticmethod
    def _replace(staged: Path, target: Path) -> None:
        trash = None
        if target.exists():
            trash = target.with_name(f".old-{target.name}-{os.getpid()}")
            shutil.rmtree(trash, ignore_errors=True)
            target.rename(trash)
        staged.rename(target)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def ensure(self, client: MlflowClient, kind: str, version: int, manifest: dict[str, Any]) -> Path:
        """The cached copy when it verifies, else a fresh verified download (a bad copy is logged)."""
        problems = self.problems(kind, version, manifest)
        if problems == []:
            return self.version_dir(kind, version)
        if problems:
            log.error("cached %s version %d is corrupt (%s); downloading it again", kind, version, problems)
        return self.install(client, kind, version, manifest)

    def write_pointer(
        self, kind: str, alias: str, version: int, manifest: dict[str, Any], previous: int | None = None
    ) -> None:
        """Remember that ``alias`` resolved to ``version`` (with the manifest's digest and the ``previous`` alias).

        Raises:
            StorageError: the pointer could not be written (the disk is full, read-only, ...).
        """
        record = {
            "kind": kind,
            "alias": alias,
            "version": version,
            "manifest_sha256": manifest_digest(manifest),
            "previous": previous,
        }
        path = self.pointer_path(kind, alias)
        try:
            write_atomic(path, json.dumps(record, sort_keys=True))
        except OSError as e:
            raise storage_error(e, path, self._frees(kind)) from e

    def read_pointer(self, kind: str, alias: str) -> dict[str, Any] | None:
        """The pointer record of ``alias`` (None when this host never loaded it)."""
        path = self.pointer_path(kind, alias)
        return json.loads(path.read_text()) if path.is_file() else None

    def from_pointer(self, kind: str, alias: str) -> tuple[int, dict[str, Any], Path]:
        """The version last loaded for ``alias``, verified offline against the pointer's digest.

        Raises:
            RegistryError: NOT_FOUND without pointer or cached copy, CHECKSUM when the copy fails.
        """
        record = self.read_pointer(kind, alias)
        if record is None:
            raise RegistryError(
                f"no cached {kind} version for alias {alias!r} (no {self.pointer_path(kind, alias)})",
                reason=Reason.NOT_FOUND,
            )
        version = int(record["version"])
        return version, *self.verified(kind, version, record["manifest_sha256"])

    def verified(self, kind: str, version: int, digest: str | None = None) -> tuple[dict[str, Any], Path]:
        """A cached version's manifest and folder, checked offline (files, and the manifest's ``digest`` if given).

        Raises:
            RegistryError: NOT_FOUND when the version is not cached, CHECKSUM when the copy fails.
        """
        manifest = self.cached_manifest(kind, version)
        if manifest is None:
            raise RegistryError(
                f"{kind} version {version} is not cached on this host (cached: {self.cached_versions(kind)})",
                reason=Reason.NOT_FOUND,
                details={"kind": kind, "version": version},
            )
        altered = digest is not None and manifest_digest(manifest) != digest
        problems = (["cached manifest was altered"] if altered else []) + verify(
            self.version_dir(kind, version), manifest
        )
        if problems:
            raise RegistryError(
                f"cached {kind} version {version} fails its checksums: {problems}",
                reason=Reason.CHECKSUM,
                details={"kind": kind, "version": version, "problems": problems},
            )
        return manifest, self.version_dir(kind, version)
