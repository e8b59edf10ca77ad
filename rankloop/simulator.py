"""A deterministic interaction simulator for the demo, the tests and the benchmarks.

Users have latent preferences, Big Five traits, a device habit and a (noisy, observable)
profile embedding; items have categories, content types, a quality and an embedding. A
logging policy shows ranked slates (Plackett-Luce over a popularity-and-profile score, so
propensities are exact), the user examines slots with a position bias and responds in the
seed systems' vocabularies (click, view with seconds, save, share, implement, purchase,
cart_add, rating, like, dislike, skip, complete, dismiss). Slates also carry the action of a
Q-learning style parameter policy (27 actions, uniformly random when logged), whose fit with
the user's traits and mood changes how much music/video is liked.

The signal is learnable: relevance is mostly personal (latent match and category taste), so a
ranker that sees the user's history and profile similarity beats popularity.

Serving mode (``rankloop.serving_sim``) continues a simulated world day by day with the registry's
versions choosing the slates: :func:`day_requests` draws a day's requests, :func:`respond` the
users' responses to the slates served, with the serving policy's propensities and versions.

``log_layout`` chooses what the source keeps of the same simulation: every slate (``slates``),
the responses only, as a source without impression logging holds them (``no_impressions``: no
impressions, request ids, positions, propensities or policy actions), or the star ratings alone
(``ratings``: user, item, stars, time; the layout of a public ratings log).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pyarrow as pa

from core.schema import INTERACTION_SCHEMA, ITEM_SCHEMA, TRAIT_COLUMNS, USER_SCHEMA

CATEGORIES = (
    "security", "performance", "cost", "data", "frontend", "devops",
    "pop", "rock", "jazz", "documentary", "comedy", "fitness",
)
CONTENT_TYPES = ("project", "product", "music", "video", "article")
DEVICES = ("mobile", "desktop", "tablet")
MOODS = ("happy", "calm", "sad", "energetic", "stressed")
TIMES_OF_DAY = ("night", "morning", "afternoon", "evening")
LOG_LAYOUTS = ("slates", "no_impressions", "ratings")
_SLATE_COLUMNS = ("request_id", "position", "propensity", "policy_version", "action_id")
LOGGING_POLICY = "pl-popularity-v1"  # the policy_version of the simulated history's slates


@dataclass(frozen=True)
class SimulationConfig:
    """Size and shape of a simulated world. Same config -> identical tables."""

    n_users: int = 1500
    n_items: int = 400
    weeks: int = 5
    requests_per_user_week: float = 3.0
    slate_size: int = 10
    dim: int = 16
    end: datetime | None = None  # exclusive end of the simulated period; default: last Monday
    seed: int = 0
    log_layout: Literal["slates", "no_impressions", "ratings"] = "slates"

    def __post_init__(self) -> None:
        if self.log_layout not in LOG_LAYOUTS:
            raise ValueError(f"SimulationConfig.log_layout must be one of {LOG_LAYOUTS}, got {self.log_layout!r}")
        for name in ("n_users", "n_items", "weeks", "slate_size", "dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"SimulationConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.slate_size > self.n_items:
            raise ValueError(f"slate_size ({self.slate_size}) cannot exceed n_items ({self.n_items})")
        if self.requests_per_user_week <= 0:
            raise ValueError(f"requests_per_user_week must be > 0, got {self.requests_per_user_week}")


@dataclass(frozen=True)
class World:
    """The hidden state behind a simulation (tests use it to check learnability)."""

    user_latent: np.ndarray  # (n_users, dim)
    user_traits: np.ndarray  # (n_users, 5) in [0, 1]
    user_taste: np.ndarray  # (n_users, n_categories)
    user_device: np.ndarray  # (n_users,) device code
    user_profile: np.ndarray  # (n_users, dim) observable, noisy latent
    item_latent: np.ndarray  # (n_items, dim)
    item_category: np.ndarray  # (n_items,)
    item_type: np.ndarray  # (n_items,)
    item_quality: np.ndarray  # (n_items,)
    item_embedding: np.ndarray  # (n_items, dim) observable
    item_created: np.ndarray  # (n_items,) epoch microseconds


def period(config: SimulationConfig) -> tuple[datetime, datetime]:
    """``[start, end)`` of the simulated period."""
    end = config.end or _last_monday(datetime.now(UTC))
    return end - timedelta(weeks=config.weeks), end


def _last_monday(now: datetime) -> datetime:
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    return day - timedelta(days=day.weekday())


def make_world(config: SimulationConfig) -> World:
    """Draw users and items."""
    rng = np.random.default_rng(config.seed)
    n_u, n_i, d, n_c = config.n_users, config.n_items, config.dim, len(CATEGORIES)
    item_category = rng.integers(0, n_c, n_i)
    centroids = rng.normal(0, 1, (n_c, d))
    item_latent = centroids[item_category] * 0.8 + rng.normal(0, 0.6, (n_i, d))
    item_latent /= np.linalg.norm(item_latent, axis=1, keepdims=True)
    user_taste = rng.dirichlet(np.full(n_c, 0.3), n_u)
    user_latent = user_taste @ centroids + rng.normal(0, 0.5, (n_u, d))
    user_latent /= np.linalg.norm(user_latent, axis=1, keepdims=True)
    start, _ = period(config)
    return World(
        user_latent=user_latent,
        user_traits=rng.uniform(0, 1, (n_u, 5)),
        user_taste=user_taste,
        user_device=rng.choice(len(DEVICES), n_u, p=[0.55, 0.35, 0.10]),
        user_profile=user_latent + rng.normal(0, 0.35, (n_u, d)),
        item_latent=item_latent,
        item_category=item_category,
        item_type=rng.integers(0, len(CONTENT_TYPES), n_i),
        item_quality=rng.normal(0, 0.5, n_i),
        item_embedding=item_latent + rng.normal(0, 0.25, (n_i, d)),
        item_created=_epoch_us(start) - rng.integers(0, 90 * 86_400, n_i).astype(np.int64) * 1_000_000,
    )


def ideal_action(traits: np.ndarray, mood: np.ndarray) -> np.ndarray:
    """The Q-learner's best action for each (traits, mood): energy x diversity x novelty, 0..26."""
    energetic = np.isin(mood, (MOODS.index("energetic"), MOODS.index("happy")))
    energy = np.clip(np.floor(traits[:, 2] * 3), 0, 2) + energetic - (mood == MOODS.index("sad"))
    diversity = np.clip(np.floor(traits[:, 0] * 3), 0, 2)
    novelty = np.clip(np.floor((traits[:, 0] + (1 - traits[:, 4])) * 1.5), 0, 2)
    return (np.clip(energy, 0, 2) * 9 + diversity * 3 + novelty).astype(np.int32)


def simulate(config: SimulationConfig, *, chunk_requests: int = 50_000) -> Iterator[pa.Table]:
    """Yield the interactions in time-ordered-per-chunk Arrow batches (canonical schema)."""
    world = make_world(config)
    rng = np.random.default_rng(config.seed + 1)
    n_requests = n_simulated_requests(config)
    start, end = period(config)
    t0, span = _epoch_us(start), _epoch_us(end) - _epoch_us(start)
    # Leave room for responses after the last impression inside the period.
    req_ts = np.sort(t0 + (rng.random(n_requests) * (span - 3_600_000_000)).astype(np.int64))
    req_user = rng.integers(0, config.n_users, n_requests)
    pop_prior = np.exp(world.item_quality + rng.normal(0, 0.5, config.n_items))
    for lo in range(0, n_requests, chunk_requests):
        hi = min(lo + chunk_requests, n_requests)
        chunk = _simulate_chunk(world, config, rng, np.arange(lo, hi), req_user[lo:hi], req_ts[lo:hi], pop_prior)
        yield chunk if config.log_layout == "slates" else _as_layout(chunk, config.log_layout)


def _as_layout(chunk: pa.Table, layout: str) -> pa.Table:
    """What a source of ``layout`` keeps of a simulated chunk (drawn as slates: same world, same users)."""
    import pyarrow.compute as pc

    if layout == "ratings":
        kept = chunk.filter(pc.equal(chunk["event_type"], "rating"))
        own = ("event_id", "user_id", "item_id", "event_type", "value", "ts")
        return pa.table({f.name: kept[f.name] if f.name in own else pa.nulls(len(kept), f.type)
                         for f in INTERACTION_SCHEMA}, schema=INTERACTION_SCHEMA)
    kept = chunk.filter(pc.not_equal(chunk["event_type"], "impression"))
    return pa.table({f.name: pa.nulls(len(kept), f.type) if f.name in _SLATE_COLUMNS else kept[f.name]
                     for f in INTERACTION_SCHEMA}, schema=INTERACTION_SCHEMA)


def _simulate_chunk(world, config, rng, req_idx, users, ts, pop_prior) -> pa.Table:
    n, k = len(users), config.slate_size
    hour = (ts // 3_600_000_000) % 24
    tod = np.select([hour < 6, hour < 12, hour < 18], [0, 1, 2], 3)
    mood = rng.integers(0, len(MOODS), n)
    device = np.where(rng.random(n) < 0.8, world.user_device[users], rng.integers(0, len(DEVICES), n))
    action = rng.integers(0, 27, n).astype(np.int32)
    # Logging policy: Plackett-Luce over popularity plus a weak look at the observable profile.
    logits = 0.9 * np.log(pop_prior)[None, :] + 0.6 * (world.user_profile[users] @ world.item_embedding.T)
    gumbel = -np.log(-np.log(rng.random(logits.shape)))
    slate = np.argsort(-(logits + gumbel), axis=1)[:, :k]
    propensity = _pl_propensities(logits, slate)
    rel = _relevance(world, users, slate, mood, action, tod)
    examine = rng.random((n, k)) < 1.0 / (1.0 + np.arange(k)) ** 0.6
    return _responses(world, config, rng, req_idx, users, ts, slate, propensity, rel, examine,
                      device, mood, tod, action)


def _pl_propensities(logits: np.ndarray, slate: np.ndarray) -> np.ndarray:
    """P(item in slot j | items in slots < j) under the Plackett-Luce logging policy."""
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    chosen = np.take_along_axis(w, slate, axis=1)
    remaining = w.sum(axis=1, keepdims=True) - np.concatenate(
        [np.zeros((len(w), 1)), np.cumsum(chosen, axis=1)[:, :-1]], axis=1
    )
    return np.clip(chosen / remaining, 1e-12, 1.0)


def true_relevance(world: World, requests: Requests, items: np.ndarray) -> np.ndarray:
    """The simulated users' hidden relevance of ``items`` (n, m) for their requests, shape (n, m);
    ``sigmoid(relevance)`` is the probability of a click once examined."""
    return _relevance(world, requests.users, items, requests.mood, requests.action, requests.time_of_day)


def _relevance(world, users, slate, mood, action, tod) -> np.ndarray:
    latent = np.einsum("nd,nkd->nk", world.user_latent[users], world.item_latent[slate])
    taste = np.take_along_axis(world.user_taste[users], world.item_category[slate], axis=1)
    fit = -np.abs(action - ideal_action(world.user_traits[users], mood))[:, None] / 9.0
    media = np.isin(world.item_type[slate], (CONTENT_TYPES.index("music"), CONTENT_TYPES.index("video")))
    evening = (tod == 3)[:, None] & (world.item_type[slate] == CONTENT_TYPES.index("video"))
    return 2.2 * latent + 2.5 * taste + 0.3 * world.item_quality[slate] + media * fit + 0.3 * evening - 1.4


def _responses(world, config, rng, req_idx, users, ts, slate, propensity, rel, examine,
               device, mood, tod, action, policy=None) -> pa.Table:
    n, k = slate.shape
    p_click = 1 / (1 + np.exp(-rel))
    click = examine & (rng.random((n, k)) < p_click)
    deep = click & (rng.random((n, k)) < 1 / (1 + np.exp(-(rel - 1.0))))
    item_type = world.item_type[slate]
    is_media = np.isin(item_type, (CONTENT_TYPES.index("music"), CONTENT_TYPES.index("video")))
    events: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []  # (type, mask, delay_s, value)
    nan = np.full((n, k), np.nan)
    events.append(("impression", np.ones((n, k), bool), np.zeros((n, k)), nan))
    events.append(("click", click, rng.uniform(1, 30, (n, k)), nan))
    view_s = rng.exponential(20 + 40 * np.clip(rel, 0, None), (n, k))
    events.append(("view", click, 30 + view_s, view_s))
    events.append(("save", deep & (rng.random((n, k)) < 0.5), rng.uniform(60, 600, (n, k)), nan))
    events.append(("share", deep & (rng.random((n, k)) < 0.25), rng.uniform(60, 900, (n, k)), nan))
    project = item_type == CONTENT_TYPES.index("project")
    product = item_type == CONTENT_TYPES.index("product")
    events.append(("implement", deep & project & (rng.random((n, k)) < 0.4), rng.uniform(600, 3000, (n, k)), nan))
    events.append(("cart_add", deep & product & (rng.random((n, k)) < 0.6), rng.uniform(60, 600, (n, k)), nan))
    events.append(("purchase", deep & product & (rng.random((n, k)) < 0.3), rng.uniform(600, 3000, (n, k)), nan))
    stars = np.clip(np.round(3 + 1.5 * rel + rng.normal(0, 0.7, (n, k))), 1, 5)
    events.append(("rating", click & (rng.random((n, k)) < 0.15), rng.uniform(300, 3000, (n, k)), stars))
    liked = rng.random((n, k)) < p_click
    events.append(("like", click & is_media & liked & (rng.random((n, k)) < 0.6), rng.uniform(30, 300, (n, k)), nan))
    events.append(("dislike", click & is_media & ~liked & (rng.random((n, k)) < 0.4), rng.uniform(10, 100, (n, k)), nan))
    complete_pct = np.clip(100 * p_click + rng.normal(0, 15, (n, k)), 1, 100)
    events.append(("complete", click & is_media & (complete_pct > 60), rng.uniform(120, 600, (n, k)), complete_pct))
    events.append(("skip", click & is_media & (complete_pct < 25), rng.uniform(5, 60, (n, k)), nan))
    events.append(("dismiss", examine & ~click & (rng.random((n, k)) < 0.05), rng.uniform(1, 10, (n, k)), nan))
    return _assemble(world, config, req_idx, users, ts, slate, propensity, device, mood, tod, action,
                     events, rel, rng, policy)


def _assemble(world, config, req_idx, users, ts, slate, propensity, device, mood, tod, action,
              events, rel, rng, policy=None) -> pa.Table:
    n, k = slate.shape
    cols: dict[str, list[np.ndarray]] = {c: [] for c in ("etype", "r", "j", "delay", "value")}
    for code, (_name, mask, delay, value) in enumerate(events):
        r, j = np.nonzero(mask)
        cols["etype"].append(np.full(len(r), code, np.int8))
        cols["r"].append(r)
        cols["j"].append(j)
        cols["delay"].append(delay[r, j])
        cols["value"].append(value[r, j])
    etype, r, j = (np.concatenate(cols[c]) for c in ("etype", "r", "j"))
    delay, value = np.concatenate(cols["delay"]), np.concatenate(cols["value"])
    user = users[r]
    item = slate[r, j]
    mood_delta = np.where(
        (etype == [e[0] for e in events].index("complete")),
        np.sign(np.round(rel[r, j] + rng.normal(0, 0.8, len(r)))), np.nan,
    )
    names = np.array([e[0] for e in events], dtype=object)
    is_imp = etype == 0
    req = req_idx[r]
    data = {
        "event_id": pa.array(np.char.add(np.char.add(f"s{config.seed}-", req.astype(str)),
                                         np.char.add(np.char.add("-", j.astype(str)),
                                                     np.char.add("-", etype.astype(str))))),
        "user_id": pa.array(np.char.add("u", user.astype(str))),
        "item_id": pa.array(np.char.add("i", item.astype(str))),
        "event_type": pa.array(names[etype].astype(str)),
        "value": pa.array(value, mask=np.isnan(value)),
        "ts": pa.array(ts[r] + (delay * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
        "session_id": pa.array(np.char.add(np.char.add("s", user.astype(str)), np.char.add("-", (ts[r] // 86_400_000_000).astype(str)))),
        "request_id": pa.array(np.char.add("r", req.astype(str))),
        "position": pa.array(j.astype(np.int32)),
        "propensity": pa.array(np.where(is_imp, propensity[r, j], np.nan), mask=~is_imp),
        "policy_version": pa.array(np.full(len(r), LOGGING_POLICY) if policy is None else np.asarray(policy)[r]),
        "action_id": pa.array(action[r]),
        "device": pa.array(np.array(DEVICES)[device[r]]),
        "content_type": pa.array(np.array(CONTENT_TYPES)[world.item_type[item]]),
        "category": pa.array(np.array(CATEGORIES)[world.item_category[item]]),
        "mood": pa.array(np.array(MOODS)[mood[r]]),
        "mood_delta": pa.array(mood_delta, mask=np.isnan(mood_delta)),
        "time_of_day": pa.array(np.array(TIMES_OF_DAY)[tod[r]]),
    }
    for t, col in enumerate(TRAIT_COLUMNS):
        data[col] = pa.array(np.round(world.user_traits[user, t], 3))
    table = pa.table(data)
    order = np.argsort(table.column("ts").cast(pa.int64()).to_numpy(), kind="stable")
    return table.take(order).cast(INTERACTION_SCHEMA)


@dataclass(frozen=True)
class Requests:
    """One batch of requests: who asks, when, and the context the responses depend on (arrays of shape (n,))."""

    index: np.ndarray  # request numbers (request_id "r<index>"), unique across the source
    users: np.ndarray
    ts: np.ndarray  # epoch microseconds, sorted
    mood: np.ndarray
    device: np.ndarray
    time_of_day: np.ndarray
    action: np.ndarray  # the Q-learner's logged action, uniformly random as in the history

    def __len__(self) -> int:
        return len(self.users)


def day_requests(world: World, config: SimulationConfig, day_start: datetime, first_index: int,
                 rng: np.random.Generator) -> Requests:
    """The requests of the day starting at ``day_start`` (``requests_per_user_week / 7`` per user on average),
    numbered from ``first_index``; drawn like :func:`simulate`'s."""
    n_users = len(world.user_device)
    n = int(rng.poisson(n_users * config.requests_per_user_week / 7.0))
    t0 = _epoch_us(day_start)
    ts = np.sort(t0 + (rng.random(n) * (86_400_000_000 - 3_600_000_000)).astype(np.int64))
    hour = (ts // 3_600_000_000) % 24
    users = rng.integers(0, n_users, n)
    device = np.where(rng.random(n) < 0.8, world.user_device[users], rng.integers(0, len(DEVICES), n))
    return Requests(index=first_index + np.arange(n), users=users, ts=ts, mood=rng.integers(0, len(MOODS), n),
                    device=device, time_of_day=np.select([hour < 6, hour < 12, hour < 18], [0, 1, 2], 3),
                    action=rng.integers(0, 27, n).astype(np.int32))


def respond(world: World, config: SimulationConfig, requests: Requests, slate: np.ndarray,
            propensity: np.ndarray, policy_version: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """The users' responses to served slates, logged as the simulated history is (canonical schema).

    Args:
        requests: the requests served (n); slate: item indices shown, (n, k); propensity: the serving
            policy's probability of each shown item at its slot, (n, k); policy_version: (n,) strings.
    """
    rel = _relevance(world, requests.users, slate, requests.mood, requests.action, requests.time_of_day)
    examine = rng.random(slate.shape) < 1.0 / (1.0 + np.arange(slate.shape[1])) ** 0.6
    return _responses(world, config, rng, requests.index, requests.users, requests.ts, slate, propensity, rel,
                      examine, requests.device, requests.mood, requests.time_of_day, requests.action,
                      policy_version)


def n_simulated_requests(config: SimulationConfig) -> int:
    """How many requests :func:`simulate` numbers (serving continues after them)."""
    return int(config.n_users * config.weeks * config.requests_per_user_week)


def items_table(world: World) -> pa.Table:
    """The item catalogue (ITEM_SCHEMA)."""
    n = len(world.item_category)
    return pa.table(
        {
            "item_id": [f"i{i}" for i in range(n)],
            "category": np.array(CATEGORIES)[world.item_category].tolist(),
            "content_type": np.array(CONTENT_TYPES)[world.item_type].tolist(),
            "created_at": pa.array(world.item_created, pa.timestamp("us", tz="UTC")),
            "embedding": pa.array(list(world.item_embedding.astype(np.float32)), pa.list_(pa.float32())),
        },
        schema=ITEM_SCHEMA,
    )


def users_table(world: World) -> pa.Table:
    """User profiles (USER_SCHEMA): traits and the observable profile embedding."""
    n = len(world.user_device)
    data = {"user_id": [f"u{u}" for u in range(n)]}
    for t, col in enumerate(TRAIT_COLUMNS):
        data[col] = np.round(world.user_traits[:, t], 3)
    data["embedding"] = pa.array(list(world.user_profile.astype(np.float32)), pa.list_(pa.float32()))
    return pa.table(data, schema=USER_SCHEMA)


def _epoch_us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)
