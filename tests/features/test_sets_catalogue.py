"""Feature sets (names, hashes), the registry's declarations, the catalogue and the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from features import FEATURE_SETS, REGISTRY, FeatureSet, get_feature_set
from features.catalogue import DOCS_PATH, catalogue_rows, render_markdown, write_docs
from features.registry import GRAINS, feature


def test_hash_depends_on_names_order_and_dtypes():
    a = FeatureSet("a", ("user_click_count_7d", "item_click_count_7d"))
    assert a.hash == FeatureSet("renamed", a.features).hash
    assert a.hash != FeatureSet("a", a.features[::-1]).hash
    assert len(a.hash) == 64 and a.hash == FeatureSet("a", tuple(a.features)).hash


def test_get_feature_set_lists_available_names():
    assert get_feature_set("ranker_core") is FEATURE_SETS["ranker_core"]
    with pytest.raises(KeyError, match="ranker_core.*ranker_default"):
        get_feature_set("ranker_v0")


def test_invalid_feature_sets_name_every_offender():
    with pytest.raises(ValueError, match=r"unknown features \['nope', 'nada'\].*duplicated \['ctx_hour'\]"):
        FeatureSet("bad", ("ctx_hour", "nope", "ctx_hour", "nada"))
    with pytest.raises(TypeError, match="tuple"):
        FeatureSet("bad", ["ctx_hour"])


def test_declarations_are_complete():
    for spec in REGISTRY.values():
        assert spec.grain in GRAINS and spec.description and spec.fn.__name__ == spec.name
        assert "\n" not in spec.description
    assert {s.group for s in REGISTRY.values()} >= {"user_activity", "item_activity", "affinity", "context",
                                                     "recency", "position_bias", "embedding", "traits"}


def test_registering_a_bad_feature_is_refused():
    with pytest.raises(ValueError, match="ctx_hour.*already registered.*dtype 'float16'"):
        feature(dtype="float16", grain="context", group="context", known="request")(_ctx_hour_again())
    with pytest.raises(ValueError, match="cannot be nullable"):
        feature(dtype="int32", grain="user", group="x", known="request")(_undocumented_int())


def _ctx_hour_again():
    def ctx_hour(ctx):
        """Duplicate."""
    return ctx_hour


def _undocumented_int():
    def some_int_feature(ctx):
        """An int without fill."""
    return some_int_feature


def test_catalogue_lists_every_feature_and_docs_are_current(tmp_path):
    text = render_markdown()
    assert all(f"`{name}`" in text for name in REGISTRY)
    assert FEATURE_SETS["ranker_core"].hash in text
    written = write_docs(tmp_path / "features.md")
    assert written.read_text() == text
    assert DOCS_PATH.read_text() == text, "docs/features.md is stale: run `rankloop features --write-docs`"
    assert [r["name"] for r in catalogue_rows(("ctx_hour",))] == ["ctx_hour"]


def test_cli_lists_a_set_as_json():
    from cli.main import app

    result = CliRunner().invoke(app, ["features", "--set", "ranker_core", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["hash"] == FEATURE_SETS["ranker_core"].hash
    assert [f["name"] for f in payload["features"]] == list(FEATURE_SETS["ranker_core"].features)
    bad = CliRunner().invoke(app, ["features", "--set", "nope"])
    assert bad.exit_code == 2
