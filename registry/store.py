"""MLflow access for the registry: model names, aliases, the manifest of a version and its files."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
from mlflow.tracking import MlflowClient

from core.config.registry import RegistryConfig
from core.errors import Reason, RegistryError
from core.runtime import quiet_libraries
from registry.config import config_of
from registry.manifest import MANIFEST_FILE, canonical_json, check_kind, manifest_digest, summary
from registry.reach import is_not_found, reaches_store, storage_error

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["is_not_found"]  # re-exported: callers import it from here

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
TAG_KIND = "rankloop.kind"
TAG_MANIFEST_URI = "rankloop.manifest_uri"
TAG_MANIFEST_SHA = "rankloop.manifest_sha256"
TAG_ARTIFACT_URI = "rankloop.artifact_uri"
#: Set on a version that must never serve (e.g. registered by a run that died before its manifest).
TAG_UNUSABLE = "rankloop.unusable"
#: MLflow stores versions as 32-bit integers; a larger number names no version (and overflows some stores).
MAX_VERSION = 2**31 - 1


def model_name(kind: str) -> str:
    """The registered-model name of a kind: ``rankloop.<kind>``."""
    return f"rankloop.{check_kind(kind)}"


def make_client(settings: Settings | RegistryConfig | None = None) -> MlflowClient:
    """A client of the configured tracking URI (``settings``: the settings, their ``registry`` part, or None
    for the environment's). MLflow's process-wide tracking URI and ``MLFLOW_TRACKING_URI`` stay as they are."""
    config = config_of(settings)
    quiet_libraries()
    try:
        config.home_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, config.home_dir, "the data home must be a writable directory") from e
    return MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)


def check_version(kind: str, version: int) -> int:
    """``version`` when it can name a version; RegistryError (INVALID_INPUT below 1, NOT_FOUND above MAX_VERSION)."""
    if version < 1:
        raise RegistryError(
            f"a version number is 1 or more, got {version}",
            reason=Reason.INVALID_INPUT,
            hint=f"`rankloop models {kind}` lists the versions",
        )
    if version > MAX_VERSION:
        raise RegistryError(
            f"{kind} has no version {version}",
            reason=Reason.NOT_FOUND,
            details={"kind": kind, "version": version},
            hint=f"`rankloop models {kind}` lists the versions",
        )
    return version


@dataclass(frozen=True)
class VersionInfo:
    """What the CLI and the loader need to know about one registered version."""

    kind: str
    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    created_ms: int
    tags: dict[str, str]
    description: str


@reaches_store
def get_version(client: MlflowClient, kind: str, version: int) -> VersionInfo:
    """One version, or RegistryError(NOT_FOUND) naming the kind and version."""
    check_version(kind, version)
    try:
        mv = client.get_model_version(model_name(kind), str(version))
    except MlflowException as e:
        if is_not_found(e):
            raise RegistryError(
                f"{kind} has no version {version}",
                reason=Reason.NOT_FOUND,
                details={"kind": kind, "version": version},
                hint=f"`rankloop models {kind}` lists the versions",
            ) from e
        raise
    return _info(kind, mv)


def _info(kind: str, mv: Any) -> VersionInfo:
    return VersionInfo(
        kind,
        int(mv.version),
        tuple(mv.aliases or ()),
        mv.run_id,
        int(mv.creation_timestamp or 0),
        dict(mv.tags or {}),
        mv.description or "",
    )


@reaches_store
def list_versions(client: MlflowClient, kind: str) -> list[VersionInfo]:
    """Every version of a kind, newest first (empty when the model is not registered yet)."""
    versions = client.search_model_versions(f"name = '{model_name(kind)}'")
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases(client, kind).items():  # search results do not carry aliases
        by_version.setdefault(version, []).append(alias)
    infos = [_info(kind, mv) for mv in versions]
    infos = [replace(i, aliases=tuple(sorted(by_version.get(i.version, ())))) for i in infos]
    return sorted(infos, key=lambda v: -v.version)


@reaches_store
def aliases(client: MlflowClient, kind: str) -> dict[str, int]:
    """Alias -> version of a kind's registered model (empty only when the store says it is not registered).

    Raises:
        RegistryError: UNREACHABLE when the store cannot be asked: never an empty answer then.
    """
    try:
        model = client.get_registered_model(model_name(kind))
    except MlflowException as e:
        if is_not_found(e):
            return {}
        raise
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}


@reaches_store
def mark_unusable(client: MlflowClient, kind: str, version: int, why: str) -> None:
    """Tag a version ``rankloop.unusable`` (``why``): ``promote`` refuses it and ``rankloop models`` hides it."""
    client.set_model_version_tag(model_name(kind), str(version), TAG_UNUSABLE, why[:4000])


@reaches_store
def set_alias(client: MlflowClient, kind: str, alias: str, version: int | None) -> None:
    """Point ``alias`` at ``version``, or remove it when ``version`` is None."""
    name = model_name(kind)
    if version is None:
        try:
            client.delete_registered_model_alias(name, alias)
        except MlflowException as e:
            if not is_not_found(e):
                raise
    else:
        client.set_registered_model_alias(name, alias, str(version))


@reaches_store
def attach_manifest(
    client: MlflowClient, kind: str, version: int, manifest: dict[str, Any], *, artifact_uri: str
) -> None:
    """Log ``manifest.json`` to the version's run under ``<kind>/`` and tag the version with its digest.

    Args:
        client: MLflow client.
        kind, version: the registered version.
        manifest: from :func:`registry.manifest.build_manifest`; its ``artifact_uri`` is set here.
        artifact_uri: where the files the manifest lists live (``runs:/<run>/ranker``,
            ``models:/rankloop.bandit/3/artifacts/tables`` ...).
    """
    info = get_version(client, kind, version)
    if info.run_id is None:
        raise RegistryError(
            f"{kind} version {version} has no run to log its manifest to", reason=Reason.REFUSED
        )
    manifest = {**manifest, "artifact_uri": artifact_uri}
    client.log_text(info.run_id, canonical_json(manifest), f"{kind}/{MANIFEST_FILE}")
    tags = {
        TAG_KIND: kind,
        TAG_MANIFEST_URI: f"runs:/{info.run_id}/{kind}/{MANIFEST_FILE}",
        TAG_MANIFEST_SHA: manifest_digest(manifest),
        TAG_ARTIFACT_URI: artifact_uri,
        **_summary_tags(manifest),
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name(kind), str(version), key, value)
    client.update_model_version(model_name(kind), str(version), description=summary(manifest))


def _summary_tags(manifest: dict[str, Any]) -> dict[str, str]:
    tags = {f"rankloop.metric.{k}": str(v) for k, v in (manifest.get("metrics") or {}).items()}
    if window := manifest.get("window"):
        tags["rankloop.window"] = f"{window.get('start')}..{window.get('end')}"
    if fs := manifest.get("feature_set"):
        tags["rankloop.feature_set"] = f"{fs['name']}@{fs['hash']}"
    return tags


@reaches_store
def read_manifest(client: MlflowClient, kind: str, version: int) -> dict[str, Any]:
    """Download a version's manifest and check it against the digest in the version's tags.

    Raises:
        RegistryError: NOT_FOUND without manifest tags, CHECKSUM when the manifest was altered.
    """
    info = get_version(client, kind, version)
    uri, expected = info.tags.get(TAG_MANIFEST_URI), info.tags.get(TAG_MANIFEST_SHA)
    if not uri or not expected:
        raise RegistryError(
            f"{kind} version {version} carries no manifest (tags {TAG_MANIFEST_URI}, "
            f"{TAG_MANIFEST_SHA} absent)",
            reason=Reason.NOT_FOUND,
            details={"version": version},
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = _download(client, uri, Path(tmp))
        manifest = json.loads(Path(path).read_text())
    if manifest_digest(manifest) != expected:
        raise RegistryError(
            f"the manifest of {kind} version {version} does not match its recorded sha256",
            reason=Reason.CHECKSUM,
            details={"version": version, "files": [MANIFEST_FILE]},
        )
    return manifest


@reaches_store
def download_files(client: MlflowClient, manifest: dict[str, Any], dest: Path) -> Path:
    """Download the files a manifest lists into the new directory ``dest``; returns ``dest``."""
    uri = manifest.get("artifact_uri")
    if not uri:
        raise RegistryError("the manifest names no artifact_uri to download from", reason=Reason.NOT_FOUND)
    dest.mkdir(parents=True)
    local = Path(_download(client, uri, dest))
    if local.is_dir() and local.resolve() != dest.resolve():
        # a directory URI lands in dest/<its basename>; bring its content up to dest
        for child in list(local.iterdir()):
            child.rename(dest / child.name)
        local.rmdir()
    return dest


def _download(client: MlflowClient, uri: str, dest: Path) -> str:
    return mlflow.artifacts.download_artifacts(
        artifact_uri=_resolve_models_uri(client, uri),
        dst_path=str(dest),
        tracking_uri=client.tracking_uri,
        registry_uri=client.tracking_uri,
    )


def _resolve_models_uri(client: MlflowClient, uri: str) -> str:
    # MLflow resolves models:/ URIs against the global registry URI; resolve with our client instead.
    if not uri.startswith("models:/"):
        return uri
    base, sub = ModelsArtifactRepository.split_models_uri(uri)
    parts = base[len("models:/") :].split("/")
    if len(parts) == 2:
        root = client.get_model_version_download_uri(parts[0], parts[1])
    else:
        root = client.get_logged_model(parts[0]).artifact_location
    return f"{root.rstrip('/')}/{sub}" if sub else root
