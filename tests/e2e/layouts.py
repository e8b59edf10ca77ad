"""A small seeded shop of sessions, written in each seed system's own table layout.

Users have a favourite category and visit on about half of the days; a visit views a few items
(mostly of the favourite category, popular ones more often), clicks some of those, and saves,
carts or buys some of the clicked ones. A few users come back days later in a new session and buy
what they viewed before. Every engagement follows a view of the same item in the same session
(the seeds' trackers log it that way), except those later-session purchases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa

END = date(2026, 6, 1)  # a Monday: the window is the three weeks before it
DAYS = 21
N_USERS, N_ITEMS, N_CATEGORIES = 60, 40, 4


@dataclass(frozen=True)
class Event:
    user: int
    item: int
    action: str  # view, click, save, cart_add, purchase, rating, like, dislike, skip, complete
    ts: datetime
    session: str
    position: int  # 0-based slot of the item in the session's list
    value: float | None = None


def shop(seed: int = 0, *, later_purchases: int = 3) -> list[Event]:
    """The events of ``DAYS`` days before ``END`` in time order, ``later_purchases`` of them purchases in a later session."""
    rng = np.random.default_rng(seed)
    category = np.arange(N_ITEMS) % N_CATEGORIES
    popularity = rng.pareto(1.5, N_ITEMS) + 0.2
    favourite = rng.integers(0, N_CATEGORIES, N_USERS)
    start = datetime(END.year, END.month, END.day, tzinfo=UTC) - timedelta(days=DAYS)
    events: list[Event] = []
    for day in range(DAYS):
        for user in np.flatnonzero(rng.random(N_USERS) < 0.5):
            weights = popularity * np.where(category == favourite[user], 4.0, 1.0)
            shown = rng.choice(N_ITEMS, int(rng.integers(2, 6)), replace=False, p=weights / weights.sum())
            t = start + timedelta(days=day, hours=float(rng.uniform(7, 22)))
            events += _visit(rng, int(user), shown, t, f"s{day}-{user}", category == favourite[user])
    events += _later_purchases(rng, events, later_purchases)
    return sorted(events, key=lambda e: (e.ts, e.user, e.item, e.action))


def _visit(rng, user: int, shown: np.ndarray, t: datetime, session: str, liked: np.ndarray) -> list[Event]:
    out = []
    for slot, item in enumerate(shown):
        at = t + timedelta(seconds=40 * slot)
        keen = 0.6 if liked[item] else 0.15
        out.append(Event(user, int(item), "view", at, session, slot, float(rng.integers(5, 90))))
        if rng.random() < keen:
            out.append(Event(user, int(item), "click", at + timedelta(seconds=5), session, slot))
            stars = 5 if liked[item] else int(rng.integers(1, 4))
            out.append(Event(user, int(item), "rating", at + timedelta(seconds=9), session, slot, float(stars)))
            for k, (action, p) in enumerate((("save", 0.3), ("cart_add", 0.4), ("purchase", 0.25))):
                if rng.random() < p * (1.5 if liked[item] else 0.5):
                    out.append(Event(user, int(item), action, at + timedelta(seconds=12 + k), session, slot))
    return out


def _later_purchases(rng, events: list[Event], n: int) -> list[Event]:
    """Purchases ``2-4`` days after a view, alone in a new session of the same user."""
    views = [e for e in events if e.action == "view" and e.ts.date() < END - timedelta(days=5)]
    picked = rng.choice(len(views), n, replace=False) if n else []
    return [Event(views[i].user, views[i].item, "purchase", views[i].ts + timedelta(days=int(rng.integers(2, 5)), hours=1),
                  f"checkout-{k}", 0) for k, i in enumerate(picked)]


def _ts(events: list[Event]) -> pa.Array:
    return pa.array([int(e.ts.timestamp() * 1e6) for e in events], pa.int64()).cast(pa.timestamp("us", tz="UTC"))


# --- the seed layouts ---------------------------------------------------------------------------
_ECOMMERCE = {"view": "VIEW", "click": "CLICK", "cart_add": "CART_ADD", "purchase": "PURCHASE", "save": "WISHLIST"}


def ecommerce_rows(events: list[Event]) -> pa.Table:
    """Seed 004's user_product_interactions: BIGINT ids, upper-case types, a JSON context, no impressions."""
    kept = [e for e in events if e.action in _ECOMMERCE]
    context = [json.dumps({"category": f"c{e.item % N_CATEGORIES}", "device": ("mobile", "desktop")[e.user % 2],
                           "price": 10.0 + e.item, **({"position": e.position} if e.action == "click" else {})})
               for e in kept]
    return pa.table({
        "id": pa.array(range(1, len(kept) + 1), pa.int64()), "user_id": pa.array([e.user + 1 for e in kept], pa.int64()),
        "product_id": pa.array([e.item + 1 for e in kept], pa.int64()),
        "interaction_type": [_ECOMMERCE[e.action] for e in kept], "session_id": [e.session for e in kept],
        "timestamp": _ts(kept), "context": context,
        "reward": [{"purchase": 5.0, "cart_add": 2.0, "click": 1.0}.get(e.action, 0.1) for e in kept],
    })


def ratings_rows(events: list[Event]) -> pa.Table:
    """A ratings-only log: user, item, stars, time (and a surrogate key)."""
    kept = [e for e in events if e.action == "rating"]
    return pa.table({"id": pa.array(range(1, len(kept) + 1), pa.int64()), "user_id": [f"user{e.user}" for e in kept],
                     "item_id": [f"movie{e.item}" for e in kept], "stars": pa.array([int(e.value) for e in kept], pa.int16()),
                     "rated_at": _ts(kept)})


_COCHAIN = {"view": "view", "click": "click", "save": "bookmark", "rating": "rating"}


def cochain_rows(events: list[Event]) -> pa.Table:
    """Seeds 000/001's user_interactions: views are the projects shown (1-based positions), time spent in ms."""
    kept = [e for e in events if e.action in _COCHAIN]
    spent = [Event(e.user, e.item, "time_spent", e.ts + timedelta(seconds=3), e.session, e.position, 10.0 + e.item % 50)
             for e in kept if e.action == "click"]
    rows = sorted(kept + spent, key=lambda e: (e.ts, e.user, e.item, e.action))
    return pa.table({
        "id": pa.array(range(1, len(rows) + 1), pa.int32()), "user_id": [f"u{e.user}" for e in rows],
        "project_id": [f"p{e.item}" for e in rows], "interaction_type": [_COCHAIN.get(e.action, e.action) for e in rows],
        "position": pa.array([e.position + 1 if e.action != "time_spent" else None for e in rows], pa.int32()),
        "time_spent_ms": pa.array([int(e.value * 1000) if e.action == "time_spent" else None for e in rows], pa.int64()),
        "rating": pa.array([int(e.value) if e.action == "rating" else None for e in rows], pa.int16()),
        "session_id": [e.session for e in rows], "timestamp": _ts(rows),
    })


_INFRA = {"view": "view", "click": "click", "save": "save", "purchase": "implement", "rating": "rate"}


def infra_mind_documents(events: list[Event]) -> list[dict]:
    """Seed 003's recommendation_interactions documents, with a nested context."""
    kept = [e for e in events if e.action in _INFRA]
    return [{"recommendation_id": f"rec{e.item}", "user_id": f"u{e.user}", "interaction_type": _INFRA[e.action],
             "interaction_value": e.value if e.action in ("view", "rating") else None,
             "context": {"session_id": e.session, "assessment_id": f"a{e.session}"}, "timestamp": e.ts.replace(tzinfo=None)}
            for e in kept]


_ENTERTAINMENT = {"view": "play", "click": "like", "rating": "complete", "save": "share", "cart_add": "skip"}


def entertainment_rows(events: list[Event]) -> pa.Table:
    """Seed 002's entertainment_interactions: plays, likes, completions, the Q-learner's action in metadata."""
    kept = [e for e in events if e.action in _ENTERTAINMENT]
    meta = [json.dumps({"rl_params": {"action_id": (e.user * 7 + e.ts.day) % 27}, "time_of_day": "evening",
                        "personality": {"openness": (e.user % 10) / 10, "neuroticism": 0.3}}) for e in kept]
    return pa.table({
        "id": [f"x{i}" for i in range(len(kept))], "user_id": [f"user-{e.user}" for e in kept],
        "content_id": [f"track-{e.item}" for e in kept], "content_type": [("music", "video")[e.item % 2] for e in kept],
        "interaction_type": [_ENTERTAINMENT[e.action] for e in kept],
        "completion_percentage": [float(20 * e.value) if e.action == "rating" else None for e in kept],
        "mood": ["neutral"] * len(kept), "mood_change": [("improved", "same")[e.item % 2] for e in kept],
        "created_at": _ts(kept), "metadata": meta,
    })
