"""Seeded canonical frames for the features tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

START = pd.Timestamp("2026-03-01", tz="UTC")
RESPONSES = ("view", "click", "save", "share", "implement", "dismiss", "like", "rating", "skip")
DEVICES = ("mobile", "desktop", "tablet", None)
MOODS = ("happy", "sad", "neutral", "curious", None)


def make_events(seed: int = 7, n_users: int = 30, n_items: int = 25, n_requests: int = 300, slate: int = 5,
                days: int = 40) -> pd.DataFrame:
    """Slates of impressions followed by responses; timestamps on whole seconds (ties happen)."""
    rng = np.random.default_rng(seed)
    req_ts = START + pd.to_timedelta(np.sort(rng.integers(0, days * 86400, n_requests)), unit="s")
    req_user = rng.integers(0, n_users, n_requests)
    rows = []
    for r in range(n_requests):
        shown = rng.choice(n_items, slate, replace=False)
        context = dict(device=DEVICES[r % 4], mood=MOODS[r % 5], time_of_day=("morning", "night")[r % 2])
        for pos, item in enumerate(shown):
            base = dict(user_id=f"u{req_user[r]}", item_id=f"i{item}", request_id=f"r{r}", session_id=f"s{r}",
                        position=pos, propensity=0.2, policy_version="v1", **context)
            rows.append(dict(base, event_type="impression", ts=req_ts[r], value=np.nan))
            for _ in range(rng.poisson(0.8 / (pos + 1))):
                etype = RESPONSES[rng.integers(len(RESPONSES))]
                value = {"view": rng.integers(0, 120), "rating": rng.integers(1, 6)}.get(etype, np.nan)
                rows.append(dict(base, event_type=etype, value=float(value),
                                 ts=req_ts[r] + pd.Timedelta(seconds=int(rng.integers(1, 3000)))))
    events = pd.DataFrame(rows)
    events.insert(0, "event_id", [f"e{i}" for i in range(len(events))])
    events["position"] = events["position"].astype("Int32")
    events["ts"] = events["ts"].astype("datetime64[us, UTC]")
    return events


def make_items(n_items: int = 25, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)],
        "category": [f"c{i % 4}" for i in range(n_items)],
        "content_type": [("music", "video", "article", "podcast")[i % 4] for i in range(n_items)],
        "created_at": [START - pd.Timedelta(days=int(d)) for d in rng.integers(1, 100, n_items)],
        "embedding": [rng.normal(size=4).astype(np.float32) for _ in range(n_items)],
    })


def make_users(n_users: int = 30, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(n_users)]})
    for trait in ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"):
        frame[f"trait_{trait}"] = np.where(np.arange(n_users) % 3 == 0, np.nan, rng.uniform(0, 1, n_users))
    frame["embedding"] = [rng.normal(size=4).astype(np.float32) if i % 2 else None for i in range(n_users)]
    return frame


@pytest.fixture(scope="session")
def events() -> pd.DataFrame:
    return make_events()


@pytest.fixture(scope="session")
def items() -> pd.DataFrame:
    return make_items()


@pytest.fixture(scope="session")
def users() -> pd.DataFrame:
    return make_users()


def frame(rows: list[tuple], columns: tuple[str, ...] = ("user_id", "item_id", "event_type", "ts")) -> pd.DataFrame:
    """A small canonical frame from tuples; ``ts`` given as ISO strings (UTC)."""
    out = pd.DataFrame(rows, columns=list(columns))
    out["ts"] = pd.to_datetime(out["ts"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    return out


@pytest.fixture(scope="session")
def make_frame():
    return frame


@pytest.fixture(scope="session")
def event_factory():
    return make_events
