"""Attach a manifest to a freshly registered version, after checking what actually reached the store."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from mlflow.tracking import MlflowClient

from core.config.registry import RegistryConfig
from core.errors import Reason, RegistryError
from registry.config import config_of
from registry.manifest import build_manifest, check_kind, verify
from registry.store import attach_manifest, download_files, get_version, make_client, model_name

if TYPE_CHECKING:
    from core.settings import Settings


def default_artifact_uri(client: MlflowClient, kind: str, version: int) -> str:
    """Where a version's files live: ``runs:/<run>/ranker`` for the ranker, the pyfunc ``tables`` artifact otherwise."""
    info = get_version(client, kind, version)
    if kind == "ranker":
        return f"runs:/{info.run_id}/ranker"
    base = f"models:/{model_name(kind)}/{version}"
    with tempfile.TemporaryDirectory() as tmp:
        download_files(client, {"artifact_uri": f"{base}/MLmodel"}, Path(tmp) / "m")
        mlmodel = yaml.safe_load((Path(tmp) / "m" / "MLmodel").read_text())
    try:
        path = mlmodel["flavors"]["python_function"]["artifacts"]["tables"]["path"]
    except (KeyError, TypeError) as e:
        raise RegistryError(
            f"{kind} version {version} is not a pyfunc model with a 'tables' artifact",
            reason=Reason.NOT_FOUND,
        ) from e
    return f"{base}/{path}"


def publish(
    kind: str,
    version: int,
    *,
    artifact_dir: Path | None = None,
    artifact_uri: str | None = None,
    client: MlflowClient | None = None,
    settings: Settings | RegistryConfig | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build a version's manifest and attach it (``manifest.json`` in its run, digest and summary as tags).

    Args:
        kind, version: the registered version (e.g. from ``log_ranker_run`` / ``log_policy_run``).
        artifact_dir: the local files that were uploaded; when given, the store's copy must match them.
            When omitted, the manifest is built from the store's copy.
        artifact_uri: where the files live in the store; default :func:`default_artifact_uri`.
        client, settings: MLflow client and settings (defaults from the environment).
        **fields: manifest fields (see :func:`registry.manifest.build_manifest`); a ranker's
            ``feature_set`` defaults to its ``feature_set.json``, ``config`` to the settings'
            model-shaping configuration (reward tables, label grades, priors, gate thresholds).

    Returns:
        The attached manifest.

    Raises:
        RegistryError: CHECKSUM when the upload is incomplete or differs from ``artifact_dir``.
    """
    check_kind(kind)
    settings = config_of(settings)
    client = client or make_client(settings)
    fields.setdefault("config", settings.manifest_config)
    uri = artifact_uri or default_artifact_uri(client, kind, version)
    with tempfile.TemporaryDirectory() as tmp:
        remote = download_files(client, {"artifact_uri": uri}, Path(tmp) / "files")
        if kind == "ranker" and "feature_set" not in fields and (remote / "feature_set.json").is_file():
            fields["feature_set"] = json.loads((remote / "feature_set.json").read_text())
        manifest = build_manifest(kind, artifact_dir or remote, artifact_uri=uri, **fields)
        problems = verify(remote, manifest)
    if problems:
        raise RegistryError(
            f"the store's copy of {kind} version {version} differs from {artifact_dir}: {problems}",
            reason=Reason.CHECKSUM,
            details={"version": version, "problems": problems},
        )
    attach_manifest(client, kind, version, manifest, artifact_uri=uri)
    return manifest
