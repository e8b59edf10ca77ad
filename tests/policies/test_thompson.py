"""Beta tables: counts with and without decay, priors, sampling, action probabilities, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.config.policy import BanditSettings
from models.thompson import BetaTables, refit

NOW = datetime(2026, 2, 2, tzinfo=UTC)


def _imps(rows: list[tuple[str, str, float, bool]]) -> pd.DataFrame:
    """(user, item, days before NOW, success)."""
    return pd.DataFrame({
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
        "ts": [NOW - timedelta(days=r[2]) for r in rows], "success": [r[3] for r in rows],
    })


ROWS = [("u1", "a", 1, True), ("u2", "a", 2, False), ("u1", "a", 2, True), ("u1", "b", 1, False)]


def test_counts_without_decay_plus_prior():
    tables = refit(None, _imps(ROWS), BanditSettings(prior_alpha=2.0, prior_beta=3.0), NOW)
    alpha, beta = tables.params(["a", "b", "new"])
    assert alpha.tolist() == [2 + 2, 2 + 0, 2]  # new item: the prior
    assert beta.tolist() == [3 + 1, 3 + 1, 3]
    assert tables.mean(["a"])[0] == pytest.approx(4 / 8)


def test_counts_with_half_life_decay():
    tables = refit(None, _imps(ROWS), BanditSettings(half_life_days=1.0), NOW)
    alpha, beta = tables.params(["a", "b"])
    assert alpha[0] == pytest.approx(1 + 0.5 + 0.25)  # successes 1 and 2 days old
    assert beta[0] == pytest.approx(1 + 0.25)
    assert beta[1] == pytest.approx(1 + 0.5)


def test_refit_on_previous_decays_old_counts_and_skips_counted_rows():
    settings = BanditSettings(half_life_days=2.0)
    first = refit(None, _imps([("u1", "a", 0, True)]), settings, NOW)
    later = NOW + timedelta(days=2)
    new_rows = pd.concat([_imps([("u1", "a", 0, True)]), _imps([("u1", "a", -1, False)])])  # first row already counted
    second = refit(first, new_rows, settings, later)
    alpha, beta = second.params(["a"])
    assert alpha[0] == pytest.approx(1 + 1 * 0.5)  # old success halved after 2 days, not counted twice
    assert beta[0] == pytest.approx(1 + 0.5 ** 0.5)  # failure 1 day before `later`
    assert first.params(["a"])[0][0] == pytest.approx(2.0)  # previous table untouched


def test_refit_without_decay_adds_only_rows_after_data_end():
    first = refit(None, _imps([("u2", "a", 3, False), ("u1", "a", 1, True)]), BanditSettings(),
                  NOW - timedelta(days=2))  # the 1-day-old row is after `now`: ignored
    assert [p.tolist() for p in first.params(["a"])] == [[1.0], [2.0]]
    second = refit(first, _imps(ROWS), BanditSettings(), NOW)  # rows at 1 and 2 days: new
    alpha, beta = second.params(["a", "b"])
    assert alpha.tolist() == [1 + 2, 1] and beta.tolist() == [2 + 1, 1 + 1]


def test_user_item_posterior_uses_item_mean_as_prior():
    tables = refit(None, _imps(ROWS), BanditSettings(user_prior_strength=10.0), NOW)
    alpha, beta = tables.params(["a"], user_id="u1")
    assert alpha[0] == pytest.approx(10 * 0.6 + 2)  # item a: Beta(3, 2), mean 0.6; u1 has 2 successes
    assert beta[0] == pytest.approx(10 * 0.4 + 0)


def test_sample_is_seeded_and_in_unit_interval(rng):
    tables = refit(None, _imps(ROWS), BanditSettings(), NOW)
    draws = tables.sample(["a", "b", "x"], np.random.default_rng(3))
    assert draws.shape == (3,) and np.all((draws > 0) & (draws < 1))
    assert np.array_equal(draws, tables.sample(["a", "b", "x"], np.random.default_rng(3)))


def test_action_probabilities_rank_the_better_item_first(rng):
    items = pd.DataFrame({"item_id": ["good", "bad", "mid"], "successes": [900.0, 10.0, 300.0],
                          "failures": [100.0, 990.0, 700.0]})
    tables = BetaTables(items, refit(None, _imps(ROWS), BanditSettings(), NOW).user_items,
                        BanditSettings(), NOW, None)
    probs = tables.action_probabilities(["good", "bad", "mid"], n_positions=2, n_sims=2000, rng=rng)
    assert probs.shape == (3, 2)
    assert probs.sum(axis=0) == pytest.approx([1.0, 1.0])
    assert probs[0, 0] == pytest.approx(1.0) and probs[2, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_positions"):
        tables.action_probabilities(["good"], n_positions=2, n_sims=10, rng=rng)


def test_save_load_round_trip(tmp_path):
    tables = refit(None, _imps(ROWS), BanditSettings(half_life_days=3.0), NOW)
    tables.save(tmp_path / "t")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        "item_beta.parquet", "tables.json", "user_item_beta.parquet"]
    saved = pd.read_parquet(tmp_path / "t" / "item_beta.parquet")
    assert {"item_id", "alpha", "beta"} <= set(saved.columns)
    back = BetaTables.load(tmp_path / "t")
    assert back.settings == tables.settings and back.data_end == tables.data_end
    assert np.allclose(back.params(["a", "b"]), tables.params(["a", "b"]))
    assert np.allclose(back.params(["a"], "u1"), tables.params(["a"], "u1"))


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        refit(None, _imps(ROWS), BanditSettings(), datetime(2026, 2, 2))


def test_tables_without_count_columns_are_refused():
    good = refit(None, _imps(ROWS), BanditSettings(), NOW)
    with pytest.raises(ValueError, match=r"'items': \['failures'\]"):
        BetaTables(good.items.drop(columns=["failures"]), good.user_items, BanditSettings(), NOW, None)
