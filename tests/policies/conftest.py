"""Fixtures for the policy tests: tiny hand-made event logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def impression(user: str, item: str, request: str, minutes: float, position: int = 0, **context) -> dict:
    """One impression row."""
    return {
        "event_id": f"{request}-{item}-imp", "user_id": user, "item_id": item, "event_type": "impression",
        "value": None, "ts": T0 + timedelta(minutes=minutes), "request_id": request, "position": position,
        "propensity": context.pop("propensity", 0.5), **context,
    }


def response(user: str, item: str, request: str, minutes: float, event_type: str, value=None, **extra) -> dict:
    """One response row."""
    return {
        "event_id": f"{request}-{item}-{event_type}-{minutes}", "user_id": user, "item_id": item,
        "event_type": event_type, "value": value, "ts": T0 + timedelta(minutes=minutes), "request_id": request,
        **extra,
    }


def frame(rows: list[dict]) -> pd.DataFrame:
    """Canonical-looking DataFrame with tz-aware ts."""
    out = pd.DataFrame(rows)
    out["ts"] = pd.to_datetime(out["ts"], utc=True)
    return out


@pytest.fixture
def small_events() -> pd.DataFrame:
    """Two users, three slates, a mix of responses."""
    ctx = {"device": "mobile", "time_of_day": "evening", "content_type": "music", "mood": "happy",
           "trait_openness": 0.9, "trait_conscientiousness": 0.5, "trait_extraversion": 0.2,
           "trait_agreeableness": 0.5, "trait_neuroticism": 0.1}
    rows = [
        impression("u1", "a", "r1", 0, 0, action_id=4, **ctx),
        impression("u1", "b", "r1", 0, 1, action_id=4, **ctx),
        response("u1", "a", "r1", 1, "click"),
        response("u1", "a", "r1", 2, "dwell", 30.0),
        response("u1", "a", "r1", 3, "rating", 5.0),
        response("u1", "a", "r1", 3, "like"),
        response("u1", "a", "r1", 4, "complete", 100.0, mood_delta=1.0),
        response("u1", "b", "r1", 1, "skip"),
        impression("u1", "c", "r2", 60, 0, action_id=7, **ctx),
        response("u1", "c", "r2", 61, "click"),
        response("u1", "c", "r2", 62, "save"),
        response("u1", "c", "r2", 62, "rating", 2.0),
        response("u1", "c", "r2", 63, "dislike", mood_delta=-1.0),
        impression("u2", "a", "r3", 10, 0, action_id=4, **{**ctx, "device": "desktop"}),
        response("u2", "a", "r3", 11, "share"),
        response("u2", "a", "r3", 5, "click"),  # before the impression: not attributed
        response("u2", "a", None, 12, "click"),  # no request_id: not attributed
    ]
    return frame(rows)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)
