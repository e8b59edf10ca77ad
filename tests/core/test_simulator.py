from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core.schema import EVENT_TYPES, INTERACTION_SCHEMA
from rankloop.simulator import (
    SimulationConfig,
    ideal_action,
    items_table,
    make_world,
    period,
    simulate,
    users_table,
)

END = datetime(2026, 11, 16, tzinfo=UTC)
SMALL = SimulationConfig(n_users=120, n_items=60, weeks=2, requests_per_user_week=2, slate_size=6, end=END, seed=3)


def _all(config: SimulationConfig) -> pa.Table:
    return pa.concat_tables(list(simulate(config, chunk_requests=97)))


def test_deterministic_by_seed_and_canonical() -> None:
    a, b = _all(SMALL), _all(SMALL)
    assert a.schema == INTERACTION_SCHEMA
    assert a.equals(b)
    c = _all(SimulationConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not a.equals(c)


def test_slates_positions_propensities_and_period() -> None:
    t = _all(SMALL)
    imps = t.filter(pc.equal(t["event_type"], "impression"))
    per_request = pc.value_counts(imps["request_id"]).field("counts").to_numpy()
    assert set(per_request) == {SMALL.slate_size}
    p = imps["propensity"].to_numpy()
    assert np.all((p > 0) & (p <= 1))
    assert imps["position"].to_numpy().max() == SMALL.slate_size - 1
    start, end = period(SMALL)
    ts = t["ts"]
    assert pc.min(ts).as_py() >= start and pc.max(ts).as_py() < end
    assert set(pc.unique(t["event_type"]).to_pylist()) <= EVENT_TYPES
    assert pc.count_distinct(t["event_id"]).as_py() == t.num_rows


def test_responses_follow_their_impression_and_position_bias() -> None:
    t = _all(SimulationConfig(**{**SMALL.__dict__, "n_users": 400})).to_pandas()
    imps = t[t.event_type == "impression"].set_index(["request_id", "item_id"])["ts"]
    clicks = t[t.event_type == "click"]
    shown_at = imps.loc[list(zip(clicks.request_id, clicks.item_id, strict=True))].to_numpy()
    assert (clicks["ts"].to_numpy() > shown_at).all()
    ctr = clicks.groupby("position").size() / t[t.event_type == "impression"].groupby("position").size()
    assert ctr.loc[0] > ctr.loc[SMALL.slate_size - 1]


def test_catalogues_and_q_actions() -> None:
    world = make_world(SMALL)
    items, users = items_table(world), users_table(world)
    assert items.num_rows == SMALL.n_items and users.num_rows == SMALL.n_users
    assert len(items["embedding"][0]) == SMALL.dim
    actions = ideal_action(world.user_traits, np.zeros(SMALL.n_users, dtype=int))
    assert actions.min() >= 0 and actions.max() <= 26


def test_invalid_configs_name_the_field() -> None:
    with pytest.raises(ValueError, match="n_users"):
        SimulationConfig(n_users=0)
    with pytest.raises(ValueError, match="slate_size"):
        SimulationConfig(n_items=3, slate_size=5)
