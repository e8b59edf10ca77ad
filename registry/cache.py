"""The local model cache: ``<home>/cache/models/<kind>/<version>/`` plus one pointer file per alias.

A version directory holds the artifact files and ``manifest.json``. It is only ever created by
renaming a fully downloaded and verified temporary directory, so a reader never sees half a version.
The pointer ``<kind>/alias-<alias>.json`` records the last version loaded for the alias and the
sha256 of its manifest, so a cached copy can be checked without the tracking server.
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

from rankloop.atomic import write_text
from rankloop.errors import Reason, RegistryError
from registry.manifest import MANIFEST_FILE, canonical_json, manifest_digest, verify
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
        log.info("cached %s version %d at %s", kind, version, self.version_dir(kind, version))
        return self.version_dir(kind, version)

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

    def write_pointer(self, kind: str, alias: str, version: int, manifest: dict[str, Any]) -> None:
        """Remember that ``alias`` resolved to ``version`` (with the manifest's digest)."""
        record = {
            "kind": kind,
            "alias": alias,
            "version": version,
            "manifest_sha256": manifest_digest(manifest),
        }
        write_atomic(self.pointer_path(kind, alias), json.dumps(record, sort_keys=True))

    def from_pointer(self, kind: str, alias: str) -> tuple[int, dict[str, Any], Path]:
        """The version last loaded for ``alias``, verified offline against the pointer's digest.

        Raises:
            RegistryError: NOT_FOUND without pointer or cached copy, CHECKSUM when the copy fails.
        """
        path = self.pointer_path(kind, alias)
        if not path.is_file():
            raise RegistryError(
                f"no cached {kind} version for alias {alias!r} (no {path})", reason=Reason.NOT_FOUND
            )
        record = json.loads(path.read_text())
        version = int(record["version"])
        manifest = self.cached_manifest(kind, version)
        if manifest is None:
            raise RegistryError(
                f"the cache lacks {kind} version {version} that {path} points to", reason=Reason.NOT_FOUND
            )
        problems = (
            [] if manifest_digest(manifest) == record["manifest_sha256"] else ["cached manifest was altered"]
        )
        problems += verify(self.version_dir(kind, version), manifest)
        if problems:
            raise RegistryError(
                f"cached {kind} version {version} fails its checksums: {problems}",
                reason=Reason.CHECKSUM,
                details={"kind": kind, "version": version, "problems": problems},
            )
        return version, manifest, self.version_dir(kind, version)
