"""Manifests: checksums of every file, provenance fields, and what verify reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.manifest import MANIFEST_FILE, build_manifest, manifest_digest, summary, verify

FEATURE_SET = {"name": "tiny", "hash": "h123", "features": ["a", "b"]}


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ranker"
    (d / "sub").mkdir(parents=True)
    (d / "model.txt").write_text("tree\n")
    (d / "sub" / "feature_set.json").write_text(json.dumps(FEATURE_SET))
    return d


def test_manifest_records_every_file_and_the_given_fields(artifact_dir: Path) -> None:
    m = build_manifest(
        "ranker",
        artifact_dir,
        feature_set=FEATURE_SET,
        window={"start": "a", "end": "b"},
        snapshot_digest="d",
        contract_suite_version="3",
        metrics={"ndcg_at_10": 0.61},
        config={"gate": {"ndcg_tolerance": 0.0}},
        code_version="abc",
    )
    assert set(m["files"]) == {"model.txt", "sub/feature_set.json"}
    assert all(len(h) == 64 for h in m["files"].values())
    assert (m["kind"], m["snapshot_digest"], m["code_version"]) == ("ranker", "d", "abc")
    assert m["config"]["gate"]["ndcg_tolerance"] == 0.0
    assert verify(artifact_dir, m) == []
    assert "ndcg_at_10=0.61" in summary(m)


def test_manifest_file_itself_is_not_listed(artifact_dir: Path) -> None:
    (artifact_dir / MANIFEST_FILE).write_text("{}")
    m = build_manifest("ranker", artifact_dir, feature_set=FEATURE_SET)
    assert MANIFEST_FILE not in m["files"]
    assert verify(artifact_dir, m) == []


def test_code_version_defaults_to_something(artifact_dir: Path) -> None:
    assert build_manifest("ranker", artifact_dir, feature_set=FEATURE_SET)["code_version"]


def test_verify_names_changed_missing_and_unexpected_files(artifact_dir: Path) -> None:
    m = build_manifest("ranker", artifact_dir, feature_set=FEATURE_SET)
    (artifact_dir / "model.txt").write_text("tampered\n")
    (artifact_dir / "sub" / "feature_set.json").unlink()
    (artifact_dir / "extra.bin").write_bytes(b"x")
    problems = verify(artifact_dir, m)
    assert any("checksum mismatch for 'model.txt'" in p for p in problems)
    assert any("missing file 'sub/feature_set.json'" in p for p in problems)
    assert any("unexpected file 'extra.bin'" in p for p in problems)


def test_digest_changes_with_any_field(artifact_dir: Path) -> None:
    m = build_manifest("ranker", artifact_dir, feature_set=FEATURE_SET)
    assert manifest_digest(m) == manifest_digest(json.loads(json.dumps(m)))
    assert manifest_digest(m) != manifest_digest({**m, "metrics": {"ndcg_at_10": 1.0}})


def test_unknown_field_is_a_type_error(artifact_dir: Path) -> None:
    with pytest.raises(TypeError, match="windw"):
        build_manifest("ranker", artifact_dir, feature_set=FEATURE_SET, windw={})


@pytest.mark.parametrize(
    ("kind", "fields", "match"),
    [
        ("ranker", {}, "feature_set"),
        ("forest", {}, "unknown model kind 'forest'"),
        ("ranker", {"feature_set": {"name": "x"}}, r"lacks \['hash', 'features'\]"),
    ],
)
def test_invalid_manifests_are_refused(artifact_dir: Path, kind: str, fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_manifest(kind, artifact_dir, **fields)


def test_empty_or_missing_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        build_manifest("bandit", tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        build_manifest("bandit", tmp_path / "nope")
    assert verify(tmp_path / "nope", {"files": {"a": "b"}}) == [
        f"artifact directory {str(tmp_path / 'nope')!r} does not exist"
    ]
