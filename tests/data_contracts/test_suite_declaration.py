"""The suite is declared once: GE suite, masks, version and docs all derive from it."""

from __future__ import annotations

from pathlib import Path

from core.schema import REQUIRED_COLUMNS
from data_contracts import ContractSettings, row_rules, suite_as_dict, suite_version
from data_contracts.docs import generated_section, render_rules_markdown
from data_contracts.ge_suite import build_suite

DOCS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"


def test_suite_dict_lists_every_rule_once() -> None:
    suite = suite_as_dict()
    names = [r["name"] for r in suite["row_rules"]] + [r["name"] for r in suite["table_rules"]]
    assert suite["name"] == "interactions"
    assert len(names) == len(set(names)) == 35 + 3  # row rules + table rules
    assert suite["required_columns"] == list(REQUIRED_COLUMNS)


def test_version_is_stable_and_changes_with_the_declaration() -> None:
    assert suite_version() == suite_version(ContractSettings())
    assert suite_version() != suite_version(ContractSettings(max_dwell_seconds=60.0))
    assert suite_version() != suite_version(ContractSettings(min_rows=1))
    assert len(suite_version()) == 12


def test_ge_suite_has_one_expectation_per_rule_plus_existence() -> None:
    rules = row_rules(ContractSettings())
    suite = build_suite(rules, REQUIRED_COLUMNS)
    metas = [e.meta["rule"] for e in suite.expectations]
    with_ge = [r for r in rules if r.check.expectation_type is not None]
    # a join, and NaN checks (GE reads NaN as missing): masks only
    assert [r.name for r in rules if r not in with_ge] == ["engagement_has_impression", "value_finite",
                                                           "propensity_finite", "mood_delta_finite"]
    assert metas == [f"{c}_exists" for c in REQUIRED_COLUMNS] + [r.name for r in with_ge]
    kinds = {type(e).__name__ for e in suite.expectations[len(REQUIRED_COLUMNS):]}
    assert kinds == {r.check.expectation_type for r in with_ge}
    compound = next(e for e in suite.expectations if e.meta["rule"] == "event_key_unique")
    assert type(compound).__name__ == "ExpectCompoundColumnsToBeUnique"
    assert list(compound.column_list) == ["user_id", "item_id", "event_type", "ts"]
    rating = next(e for e in suite.expectations if e.meta["rule"] == "rating_in_range")
    assert rating.row_condition is not None and (rating.min_value, rating.max_value) == (1.0, 5.0)


def test_docs_are_generated_from_the_declaration() -> None:
    assert generated_section(DOCS) == render_rules_markdown()
    assert all(f"`{r.name}`" in DOCS.read_text() for r in row_rules(ContractSettings()))
