"""The manifest every registered version carries: what it is, what made it, and the sha256 of each file.

The manifest is plain JSON. ``files`` maps each artifact file (path relative to the version's
artifact directory, ``/``-separated) to its sha256; ``manifest.json`` itself is never listed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.version import code_version
from models.policy import MODEL_KINDS

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
KINDS: tuple[str, ...] = MODEL_KINDS  # models/policy.py: the ranker, then each policy table

# Optional fields a caller may give build_manifest, with their defaults.
_FIELDS: dict[str, Any] = {
    "feature_set": None,  # {"name", "hash", "features": [...]} (required for the ranker)
    "window": None,  # {"start": iso, "end": iso}
    "snapshot_digest": None,
    "contract_suite_version": None,
    "code_version": None,  # default: git sha of this checkout, else the package version
    "params": {},
    "metrics": {},
    "config": {},  # reward tables, label grades, priors, gate thresholds ...
    "artifact_uri": None,  # where the files live in the store (set by registry.store.attach_manifest)
}


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is a known model kind, else raise ValueError naming the known ones."""
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {type(kind).__name__}")
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {list(KINDS)}")
    return kind


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(artifact_dir: Path) -> dict[str, str]:
    """sha256 of every file under ``artifact_dir`` except the manifest, keyed by relative path."""
    root = Path(artifact_dir)
    if not root.is_dir():
        raise ValueError(f"artifact directory {str(root)!r} does not exist or is not a directory")
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST_FILE
    }


def build_manifest(kind: str, artifact_dir: Path, **fields: Any) -> dict[str, Any]:
    """Describe a version: its kind, provenance, configuration and the sha256 of each artifact file.

    Args:
        kind: one of ``KINDS``.
        artifact_dir: the directory whose files the version consists of.
        **fields: any of feature_set, window, snapshot_digest, contract_suite_version,
            code_version, params, metrics, config, artifact_uri.

    Returns:
        The manifest as a JSON-serialisable dict.

    Raises:
        TypeError: an unknown field was given.
        ValueError: unknown kind, missing directory, empty directory, or a ranker without feature set.
    """
    check_kind(kind)
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise TypeError(f"build_manifest got unknown field(s) {unknown}; expected some of {sorted(_FIELDS)}")
    files = file_checksums(Path(artifact_dir))
    if not files:
        raise ValueError(f"artifact directory {str(artifact_dir)!r} holds no files to register")
    manifest: dict[str, Any] = {"manifest_version": MANIFEST_VERSION, "kind": kind}
    manifest |= {k: fields.get(k, default) for k, default in _FIELDS.items()}
    if kind == "ranker":
        _check_feature_set(manifest["feature_set"])
    manifest["code_version"] = manifest["code_version"] or code_version()  # core.version.code_version
    manifest["created_at"] = datetime.now(UTC).isoformat()
    manifest["files"] = files
    return json.loads(json.dumps(manifest, sort_keys=True, default=str))


def _check_feature_set(feature_set: Any) -> None:
    if not isinstance(feature_set, dict):
        raise ValueError(
            f"a ranker manifest needs feature_set={{'name', 'hash', 'features'}}, got {feature_set!r}"
        )
    missing = [k for k in ("name", "hash", "features") if k not in feature_set]
    if missing:
        raise ValueError(f"feature_set lacks {missing}; found keys {sorted(feature_set)}")


def verify(artifact_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Compare the files under ``artifact_dir`` with the manifest's checksums.

    Returns:
        One message per mismatch (missing file, unexpected file, checksum differs); empty when all match.
    """
    expected: dict[str, str] = manifest.get("files") or {}
    if not expected:
        return ["manifest lists no files"]
    root = Path(artifact_dir)
    if not root.is_dir():
        return [f"artifact directory {str(root)!r} does not exist"]
    found = file_checksums(root)
    problems = [f"missing file {name!r}" for name in sorted(set(expected) - set(found))]
    problems += [f"unexpected file {name!r}" for name in sorted(set(found) - set(expected))]
    problems += [
        f"checksum mismatch for {name!r}: expected {expected[name][:12]}..., found {found[name][:12]}..."
        for name in sorted(set(expected) & set(found))
        if expected[name] != found[name]
    ]
    return problems


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no whitespace)."""
    return hashlib.sha256(canonical_json(manifest).encode()).hexdigest()


def canonical_json(manifest: dict[str, Any]) -> str:
    """The manifest as canonical JSON text."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


def summary(manifest: dict[str, Any]) -> str:
    """One line for a version's description: kind, feature set, window, metrics."""
    parts = [manifest["kind"]]
    if fs := manifest.get("feature_set"):
        parts.append(f"features {fs['name']}@{str(fs['hash'])[:12]}")
    if window := manifest.get("window"):
        parts.append(f"window {window.get('start')}..{window.get('end')}")
    metrics = manifest.get("metrics") or {}
    parts += [f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, int | float)]
    return " | ".join(parts)
