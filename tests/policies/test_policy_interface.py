"""One interface for the policy tables, and one list of kinds that the registry, the loader and the
tables stage read (models/policy.py)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from core.config.policy import BanditSettings, LinUCBSettings, QLearningSettings
from core.settings import Settings
from models import linucb, qlearning, thompson
from models.policy import MODEL_KINDS, POLICY_TABLES, PolicyTable, load_policy_table, serving_verbs

NOW = datetime(2026, 3, 2, tzinfo=UTC)


def _impressions() -> pd.DataFrame:
    ts = [NOW - timedelta(hours=h) for h in (1, 2, 3, 4)]
    return pd.DataFrame({"user_id": ["u1", "u2", "u1", "u3"], "item_id": ["a", "a", "b", "c"], "ts": ts,
                         "success": [True, False, True, False], "reward": [1.0, 0.0, 1.0, 0.0],
                         "position": [0, 0, 1, 0], "request_id": ["r1", "r2", "r1", "r3"]})


def _tables() -> dict[str, PolicyTable]:
    slates = pd.DataFrame({"user_id": ["u1", "u2"], "request_id": ["r1", "r2"],
                           "ts": [NOW - timedelta(hours=2), NOW - timedelta(hours=1)], "action_id": [5, 7],
                           "reward": [1.0, 0.0], "content_type": ["music", "video"], "mood": ["happy", "calm"],
                           "time_of_day": ["night", "morning"]})
    return {
        "bandit": thompson.refit(None, _impressions(), BanditSettings(), NOW),
        "linucb": linucb.refit(None, _impressions(), LinUCBSettings(context_features=[]), NOW),
        "qtable": qlearning.refit(None, slates, QLearningSettings(), NOW),
    }


def _digests(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_every_policy_table_implements_the_interface(tmp_path):
    tables = _tables()
    assert set(tables) == set(POLICY_TABLES)
    for kind, table in tables.items():
        cls = POLICY_TABLES[kind]
        assert isinstance(table, PolicyTable) and type(table) is cls and cls.kind == kind
        saved = table.save(tmp_path / kind)
        assert (saved / cls.meta_file).is_file()
        back = load_policy_table(saved)  # told apart by the meta file alone
        assert type(back) is cls
        again = back.save(tmp_path / f"{kind}-again")
        assert _digests(again) == _digests(saved), f"{kind}: save(load(save(t))) differs from save(t)"
        for verb in cls.verbs:
            assert callable(getattr(back, verb)), f"{kind} declares verb {verb!r} it does not have"
        assert cls.settings_field in Settings.model_fields, f"{kind}: no settings section {cls.settings_field!r}"


def test_meta_files_are_distinct():
    metas = [cls.meta_file for cls in POLICY_TABLES.values()]
    assert len(set(metas)) == len(metas)


def test_registry_loader_and_guard_read_the_one_list_of_kinds():
    from rankloop import guard
    from registry import loader, manifest

    assert ("ranker", *POLICY_TABLES) == MODEL_KINDS
    assert manifest.KINDS == MODEL_KINDS
    assert guard.KINDS == MODEL_KINDS
    assert set(loader.VERBS) == set(MODEL_KINDS)
    assert loader.VERBS["ranker"] == ("predict",)
    assert all(loader.VERBS[k] == serving_verbs(k) == POLICY_TABLES[k].verbs for k in POLICY_TABLES)


def test_an_unknown_folder_names_the_meta_files_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_policy_table(tmp_path)
    for cls in POLICY_TABLES.values():
        assert cls.meta_file in str(err.value)


def test_thompson_refit_is_refit_from_counts_of_one_partition():
    """The local refit and the partitioned one are one implementation: the same table exactly."""
    settings = BanditSettings(half_life_days=7.0)
    imps = _impressions()
    first = thompson.refit(None, imps.iloc[2:], settings, NOW - timedelta(minutes=150))  # the older two
    local = thompson.refit(first, imps, settings, NOW)  # adds the newer two
    assert local.items["successes"].sum() > first.items["successes"].sum()
    parts = [thompson.beta_counts(imps.iloc[rows], settings, NOW, since=first.data_end) for rows in ([0, 2], [1, 3])]
    assert [p.rows for p in parts] == [1, 1]
    partitioned = thompson.refit_from_counts(first, thompson.combine_counts(parts), settings, NOW)
    pd.testing.assert_frame_equal(local.items, partitioned.items)
    pd.testing.assert_frame_equal(local.user_items, partitioned.user_items)
    assert local.data_end == partitioned.data_end
