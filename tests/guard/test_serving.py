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


def test_true_ndcg_is_one_for_the_best_slate_and_lower_for_any_other() -> None:
    from datetime import UTC, datetime

    from rankloop.serving_sim import day_rng, true_ndcg
    from rankloop.simulator import day_requests, true_relevance

    simulation = SimulationConfig(n_users=50, n_items=60, weeks=1, seed=3)
    world = make_world(simulation)
    day = datetime(2026, 11, 2, tzinfo=UTC)
    rng = day_rng(ServeConfig(seed=3), day)
    requests = day_requests(world, simulation, day, 0, rng)
    candidates = retrieve(world, len(requests), 30, rng)
    order = np.argsort(-true_relevance(world, requests, candidates), axis=1, kind="stable")
    best = np.take_along_axis(candidates, order[:, :10], axis=1)
    worst = np.take_along_axis(candidates, order[:, ::-1][:, :10], axis=1)
    assert len(requests) > 5
    assert true_ndcg(world, requests, candidates, best) == pytest.approx(np.ones(len(requests)))
    assert (true_ndcg(world, requests, candidates, worst) < 0.999).all()
    assert (true_ndcg(world, requests, candidates, best[:, ::-1]) < 1.0).any()  # the right items, wrong order


def test_every_policy_meets_the_same_requests_on_the_same_seed_and_day() -> None:
    from datetime import UTC, datetime

    from rankloop.serving_sim import day_rng
    from rankloop.simulator import day_requests

    simulation = SimulationConfig(n_users=80, n_items=40, weeks=1, seed=0)
    world = make_world(simulation)
    day = datetime(2026, 11, 3, tzinfo=UTC)
    draws = []
    for _ in range(2):
        rng = day_rng(ServeConfig(seed=5), day)
        requests = day_requests(world, simulation, day, 100, rng)
        draws.append((requests.users, requests.ts, retrieve(world, len(requests), 20, rng)))
    assert all((a == b).all() for a, b in zip(draws[0], draws[1], strict=True))
    other = day_requests(world, simulation, day, 100, day_rng(ServeConfig(seed=6), day))
    assert not np.array_equal(other.ts[:5], draws[0][1][:5])
