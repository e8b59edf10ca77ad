"""Serving mode's pieces: the policy_version of a release, retrieval, and the slates' propensities."""

from __future__ import annotations

import numpy as np
import pytest

from rankloop.releases import Served, parse_policy, policy_tag
from rankloop.serving_sim import ServeConfig, choose, retrieve
from rankloop.simulator import SimulationConfig, make_world
from serving.reference import ServingConfig


def test_policy_tags_name_the_version_and_its_release() -> None:
    served = [Served("ranker", 1, 2, 1), Served("bandit", 5, 5, None)]
    tag = policy_tag(served)
    assert tag == "ranker:1@2/1+bandit:5@5/-"
    parsed = parse_policy(tag)
    assert parsed == {"ranker": served[0], "bandit": served[1]}
    assert (parsed["ranker"].arm, parsed["ranker"].release, parsed["bandit"].arm) == ("previous", "2/1", "champion")
    for foreign in (None, "", "pl-popularity-v1", "v1", "ranker:1@2", "ranker:x@1/-"):
        assert parse_policy(foreign) == {}


def test_retrieval_draws_distinct_candidates_per_request() -> None:
    world = make_world(SimulationConfig(n_users=20, n_items=50, weeks=1, seed=1))
    rng = np.random.default_rng(0)
    candidates = retrieve(world, 30, 20, rng)
    assert candidates.shape == (30, 20)
    assert all(len(set(row)) == 20 for row in candidates)
    assert (retrieve(world, 3, 80, rng) == np.arange(50)).all()  # more than the catalogue: all of it


def test_without_a_bandit_the_propensities_are_the_exploration_formula() -> None:
    rng = np.random.default_rng(0)
    relevance = rng.random((400, 8))
    config = ServeConfig(blend=ServingConfig(exploration_rate=0.2))
    slate, propensity = choose(relevance, None, None, 3, config, rng)
    top = np.argmax(relevance, axis=1)
    expected = np.where(slate[:, 0] == top, 0.8 + 0.2 / 8, 0.2 / 8)
    assert propensity[:, 0] == pytest.approx(expected)
    assert all(len(set(row)) == 3 for row in slate)
    later = propensity[:, 1]
    assert set(np.round(later, 6)) <= {round(0.8 + 0.2 / 7, 6), round(0.2 / 7, 6)}


def test_top_slot_propensities_match_how_often_each_candidate_is_shown_there() -> None:
    rng = np.random.default_rng(1)
    c = 5
    relevance = np.array([[0.9, 0.8, 0.5, 0.2, 0.1]])
    alpha, beta = np.array([[2.0, 8.0, 20.0, 3.0, 1.0]]), np.array([[8.0, 2.0, 2.0, 3.0, 9.0]])
    config = ServeConfig(propensity_draws=4000, blend=ServingConfig(exploration_rate=0.15))
    shown, logged = np.zeros(c), np.zeros(c)
    trials = 3000
    for _ in range(trials):
        slate, propensity = choose(relevance, alpha, beta, 2, config, rng)
        shown[slate[0, 0]] += 1
        logged[slate[0, 0]] = propensity[0, 0]  # the marginal estimate (its Monte Carlo noise is small)
    frequency = shown / trials
    seen = shown > 0
    assert logged[seen] == pytest.approx(frequency[seen], abs=0.03)


def test_serve_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="holdback"):
        ServeConfig(holdback=1.0)
    with pytest.raises(ValueError, match="candidates"):
        ServeConfig(candidates=0)
