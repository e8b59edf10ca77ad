"""Serving mode of the simulator: the registry's versions serve the simulated users, day after day.

Each day's requests (:func:`rankloop.simulator.day_requests`) are served as
``serving/reference.py`` blends, with the champion ranker in the similarity's place:

* retrieval: ``candidates`` items per request, drawn without replacement by popularity;
* relevance: the ranker's scores (``registry.load("ranker")``), min-max scaled per request;
* score = ``similarity_weight x relevance + bandit_weight x Thompson draw`` (the champion bandit's
  Beta tables), then each slot goes, with probability ``exploration_rate``, to a random remaining
  candidate (``serving.reference.explore``);
* holdback: each request is served by each kind's ``previous`` version with probability
  ``holdback`` (independently per kind), so every release has a concurrent control arm.

Features are computed as of the start of each day (a daily feature refresh) from the source's own
history. Every impression carries its propensity, the Q-learner's (uniformly random) action and
the ``policy_version`` of :mod:`rankloop.releases`; the users respond as in the simulated history
(same world, same response model) and everything is appended to the demo source.

Propensities: at the top slot, the policy's marginal probability of the item (the Thompson draw
integrated over ``propensity_draws`` Monte Carlo draws, plus exploration): what the tables'
off-policy judgement reads. Lower slots carry the probability given the slots above and the
request's own draw.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.settings import Settings
from rankloop.releases import Served, policy_tag
from rankloop.simulator import (
    CATEGORIES,
    CONTENT_TYPES,
    DEVICES,
    MOODS,
    TIMES_OF_DAY,
    Requests,
    SimulationConfig,
    World,
    day_requests,
    make_world,
    n_simulated_requests,
    respond,
    true_relevance,
)
from serving.reference import ServingConfig

log = logging.getLogger(__name__)

SERVED_KINDS = ("ranker", "bandit")


@dataclass(frozen=True)
class ServeConfig:
    """How simulated serving chooses slates; validated at construction."""

    candidates: int = 100
    holdback: float = 0.2
    propensity_draws: int = 64
    seed: int = 0
    blend: ServingConfig = field(default_factory=ServingConfig)

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.propensity_draws < 1:
            raise ValueError(f"ServeConfig.candidates and propensity_draws must be >= 1, got "
                             f"{self.candidates} and {self.propensity_draws}")
        if not 0.0 <= self.holdback < 1.0:
            raise ValueError(f"ServeConfig.holdback must lie in [0, 1), got {self.holdback}")


@dataclass(frozen=True)
class Arm:
    """A version that serves a share of one kind's requests."""

    served: Served
    model: Any  # registry.loader.LoadedModel
    share: float


def live_arms(settings: Settings, holdback: float) -> dict[str, list[Arm]]:
    """Each served kind's arms: its champion and, with share ``holdback``, its previous version.

    Raises:
        RegistryError: NOT_FOUND when there is no champion ranker (nothing can serve yet).
    """
    from core.errors import Reason, RegistryError
    from registry import load

    out: dict[str, list[Arm]] = {}
    for kind in SERVED_KINDS:
        champion = _load_or_none(load, kind, "champion", settings)
        if champion is None:
            if kind == "ranker":
                raise RegistryError("there is no champion ranker to serve with", reason=Reason.NOT_FOUND,
                                    hint="run `rankloop demo` (or `rankloop train`) first")
            continue
        previous = _load_or_none(load, kind, "previous", settings) if holdback > 0 else None
        prev_version = previous.version if previous is not None else None
        arms = [Arm(Served(kind, champion.version, champion.version, prev_version), champion,
                    1.0 - holdback if previous is not None else 1.0)]
        if previous is not None:
            arms.append(Arm(Served(kind, previous.version, champion.version, prev_version), previous, holdback))
        out[kind] = arms
    return out


def _load_or_none(load: Any, kind: str, alias: str, settings: Settings) -> Any:
    from core.errors import Reason, RegistryError

    try:
        return load(kind, alias, settings=settings)
    except RegistryError as e:
        if e.reason in (Reason.NOT_FOUND, Reason.REFUSED):
            return None
        raise


# --- one day -------------------------------------------------------------------------------------
@dataclass
class Context:
    """What serving one day needs besides the arms: the world, the source's history and catalogue."""

    world: World
    simulation: SimulationConfig
    history: pd.DataFrame  # canonical events, at least the feature columns
    items: pd.DataFrame | None
    users: pd.DataFrame | None


@dataclass(frozen=True)
class ServedDay:
    """One served day: the logged events and what was chosen from (item indices of the world)."""

    table: pa.Table  # the logged events (canonical schema)
    requests: Requests
    candidates: np.ndarray  # (n, C) the retrieved candidates of each request
    shown: np.ndarray  # (n, k) the slate shown, in slot order


def day_rng(config: ServeConfig, day_start: datetime) -> np.random.Generator:
    """The day's random stream: the same seed and day give the same requests whatever the policy."""
    return np.random.default_rng([config.seed, int(day_start.timestamp() // 86_400)])


def serve_day(ctx: Context, arms: dict[str, list[Arm]], settings: Settings, config: ServeConfig,
              day_start: datetime, first_index: int) -> pa.Table:
    """Serve the requests of the day starting at ``day_start``; returns the logged events (canonical schema)."""
    return serve_day_detail(ctx, arms, settings, config, day_start, first_index).table


def serve_day_detail(ctx: Context, arms: dict[str, list[Arm]], settings: Settings, config: ServeConfig,
                     day_start: datetime, first_index: int) -> ServedDay:
    """:func:`serve_day` with the requests, candidates and slates (what closed-loop studies score)."""
    rng = day_rng(config, day_start)
    requests = day_requests(ctx.world, ctx.simulation, day_start, first_index, rng)
    n, k = len(requests), ctx.simulation.slate_size
    if n == 0:
        empty = np.zeros((0, k), int)
        return ServedDay(respond(ctx.world, ctx.simulation, requests, empty, np.zeros((0, k)),
                                 np.zeros(0, dtype=object), rng), requests, empty, empty)
    candidates = retrieve(ctx.world, n, max(config.candidates, k), rng)
    choice = {kind: rng.choice(len(a), n, p=[arm.share for arm in a]) for kind, a in arms.items()}
    relevance = _relevance(ctx, arms["ranker"], choice["ranker"], requests, candidates, settings, day_start)
    alpha, beta = _beta_params(arms.get("bandit"), choice.get("bandit"), candidates)
    slate, propensity = choose(relevance, alpha, beta, k, config, rng)
    tags = np.array([policy_tag([arms[kind][choice[kind][i]].served for kind in arms]) for i in range(n)],
                    dtype=object)
    shown = np.take_along_axis(candidates, slate, axis=1)
    return ServedDay(respond(ctx.world, ctx.simulation, requests, shown, propensity, tags, rng), requests,
                     candidates, shown)


def true_ndcg(world: World, requests: Requests, candidates: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """Each slate's NDCG@k against the users' hidden relevance, shape (n,).

    The gain of an item is ``sigmoid(relevance)``, its click probability once examined; the ideal is
    the best k of the request's candidates, so 1.0 means serving could not have done better from
    what retrieval offered.
    """
    k = shown.shape[1]
    gain_shown = 1.0 / (1.0 + np.exp(-true_relevance(world, requests, shown)))
    gain_all = 1.0 / (1.0 + np.exp(-true_relevance(world, requests, candidates)))
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = (-np.sort(-gain_all, axis=1)[:, :k] * discount).sum(axis=1)
    return (gain_shown * discount).sum(axis=1) / ideal


def retrieve(world: World, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` distinct candidate items per request, drawn by popularity (Gumbel top-k), shape (n, size)."""
    n_items = len(world.item_quality)
    if size >= n_items:
        return np.tile(np.arange(n_items), (n, 1))
    keys = world.item_quality[None, :] - np.log(-np.log(rng.random((n, n_items))))
    return np.argsort(-keys, axis=1)[:, :size]


def _relevance(ctx: Context, arms: list[Arm], choice: np.ndarray, requests: Any, candidates: np.ndarray,
               settings: Settings, day_start: datetime) -> np.ndarray:
    """Each arm's ranker scores of its requests' candidates, min-max scaled per request, shape (n, C)."""
    import features

    out = np.zeros(candidates.shape)
    history = ctx.history[pd.to_datetime(ctx.history["ts"], utc=True) < pd.Timestamp(day_start)]
    for a, arm in enumerate(arms):
        rows = np.flatnonzero(choice == a)
        if rows.size == 0:
            continue
        frame = _candidate_frame(ctx.world, requests, candidates, rows)
        fset = arm.model.manifest["feature_set"]
        built = features.build_features(frame, history, items=ctx.items, users=ctx.users, settings=settings.features,
                                        feature_set=fset["name"])
        scores = np.asarray(arm.model.predict(built[list(fset["features"])]), dtype=float).reshape(rows.size, -1)
        low, high = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
        out[rows] = np.where(high > low, (scores - low) / np.where(high > low, high - low, 1.0), 0.5)
    return out


def _candidate_frame(world: World, requests: Any, candidates: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
    """One row per (request, candidate) with the request-time columns the features read."""
    c = candidates.shape[1]
    users, items = np.repeat(requests.users[rows], c), candidates[rows].ravel()
    return pd.DataFrame({
        "user_id": np.char.add("u", users.astype(str)),
        "item_id": np.char.add("i", items.astype(str)),
        "ts": pd.to_datetime(np.repeat(requests.ts[rows], c), unit="us", utc=True),
        "device": np.asarray(DEVICES)[np.repeat(requests.device[rows], c)],
        "mood": np.asarray(MOODS)[np.repeat(requests.mood[rows], c)],
        "time_of_day": np.asarray(TIMES_OF_DAY)[np.repeat(requests.time_of_day[rows], c)],
        "content_type": np.asarray(CONTENT_TYPES)[world.item_type[items]],
        "category": np.asarray(CATEGORIES)[world.item_category[items]],
    })


def _beta_params(arms: list[Arm] | None, choice: np.ndarray | None,
                 candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """The Beta posterior of each request's candidates under its bandit arm, shape (n, C) each."""
    if not arms:
        return None, None
    from models.policy import load_policy_table

    ids = [f"i{i}" for i in range(int(candidates.max()) + 1)]
    alpha, beta = np.ones(candidates.shape), np.ones(candidates.shape)
    for a, arm in enumerate(arms):
        rows = np.flatnonzero(choice == a)
        table_alpha, table_beta = load_policy_table(arm.model.path).params(ids)  # the loaded version's verified files
        alpha[rows], beta[rows] = table_alpha[candidates[rows]], table_beta[candidates[rows]]
    return alpha, beta


def choose(relevance: np.ndarray, alpha: np.ndarray | None, beta: np.ndarray | None, k: int, config: ServeConfig,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Slates (candidate columns, (n, k)) and their propensities ((n, k)) under the blend with exploration.

    ``relevance`` (n, C) in [0, 1]; ``alpha``/``beta`` (n, C): the Beta posteriors of the candidates
    (None: no bandit, the ranker alone orders them).
    """
    blend, rate = config.blend, config.blend.exploration_rate
    n, c = relevance.shape
    if alpha is None:
        scores = relevance[None]
    else:  # draw 0 serves; all draws estimate how often each candidate tops the blend
        draws = rng.beta(alpha, beta, size=(config.propensity_draws + 1, n, c))
        scores = blend.similarity_weight * relevance[None] + blend.bandit_weight * draws
    winners = np.argmax(scores, axis=2)  # (draws, n)
    top_share = np.zeros((n, c))
    np.add.at(top_share, (np.tile(np.arange(n), len(scores)), winners.ravel()), 1.0 / len(scores))
    order = np.argsort(-scores[0], axis=1, kind="stable")
    slate, propensity = np.zeros((n, k), int), np.zeros((n, k))
    for i in range(n):
        pool = list(order[i])
        for j in range(k):
            index = int(rng.integers(len(pool))) if rng.random() < rate else 0
            greedy = top_share[i, pool[index]] if j == 0 else float(index == 0)
            propensity[i, j] = (1 - rate) * greedy + rate / len(pool)
            slate[i, j] = pool.pop(index)
    return slate, propensity


# --- days ----------------------------------------------------------------------------------------
def serve(settings: Settings, days: int, config: ServeConfig | None = None) -> dict[str, Any]:
    """Serve ``days`` more days of the demo source with the registry's current versions.

    Args:
        settings: the data home (its ``interactions.db`` was made by ``rankloop demo``).
        days: how many days to serve, from the end of the source's data.
        config: how slates are chosen (default :class:`ServeConfig`).

    Returns:
        What was served: the days, the rows written, requests per policy_version, and the arms.

    Raises:
        RankLoopError: NOT_FOUND without a demo source or a champion ranker; INVALID_INPUT for days < 1.
    """
    from core.errors import ConfigError, Reason
    from sources import write_table

    if days < 1:
        raise ConfigError(f"--serve-days must be 1 or more, got {days}", reason=Reason.INVALID_INPUT,
                          hint="give the number of days to serve, e.g. --serve-days 3")
    config = config or ServeConfig()
    arms = live_arms(settings, config.holdback)
    ctx, start, first = serving_state(settings)
    counts: dict[str, int] = {}
    rows = 0
    for d in range(days):
        day = start + timedelta(days=d)
        table = serve_day(ctx, arms, settings, config, day, first)
        rows += write_table(demo_uri(settings), "interactions", table, mode="append")
        first += requests_in(table)
        ctx.history = advance(ctx.history, table, day + timedelta(days=1), settings.window.history_days)
        for tag, count in _requests_per_tag(table).items():
            counts[tag] = counts.get(tag, 0) + count
        log.info("served %s: %d rows", day.date(), table.num_rows)
    end = start + timedelta(days=days)
    record_served(settings, end, first)
    return {"start": start.isoformat(), "end": end.isoformat(), "days": days, "rows": rows,
            "requests": counts, "arms": {k: [a.served.tag() for a in v] for k, v in arms.items()}}


def serving_state(settings: Settings) -> tuple[Context, datetime, int]:
    """Where serving the demo source continues: its context, the first day not served yet and the
    next request number (what :func:`serve` starts from; studies that serve their own way use it)."""
    meta = _demo_meta(settings)
    simulation = _simulation_config(meta)
    start = datetime.fromisoformat(meta.get("served_until") or meta["end"])
    first = int(meta.get("next_request", n_simulated_requests(simulation)))
    return _context(settings, simulation, start), start, first


def context_at(settings: Settings, start: datetime) -> Context:
    """The demo source's serving context as of ``start``: its world, catalogue and the
    ``window.history_days`` of events before ``start`` (what a study replays a past day with)."""
    return _context(settings, _simulation_config(_demo_meta(settings)), start)


def candidate_frame(world: World, requests: Requests, candidates: np.ndarray) -> pd.DataFrame:
    """One row per (request, candidate), in request then candidate order: the columns features read."""
    return _candidate_frame(world, requests, candidates, np.arange(len(requests)))


def record_served(settings: Settings, until: datetime, next_request: int) -> None:
    """Note in the demo's metadata that days before ``until`` and requests before ``next_request`` were served."""
    _write_meta(settings, _demo_meta(settings) | {"served_until": until.isoformat(), "next_request": next_request})


def _demo_meta(settings: Settings) -> dict[str, Any]:
    from core.errors import RankLoopError, Reason
    from rankloop.demo import demo_meta_path

    path = demo_meta_path(settings)
    if not settings.demo_db.exists() or not path.exists():
        raise RankLoopError(f"there is no demo source in {settings.home_dir}", reason=Reason.NOT_FOUND,
                            hint="run `rankloop demo` first: serving continues its simulated world")
    return json.loads(path.read_text())


def _write_meta(settings: Settings, meta: dict[str, Any]) -> None:
    from core.atomic import write_text
    from rankloop.demo import demo_meta_path

    write_text(demo_meta_path(settings), json.dumps(meta, indent=2))


def _simulation_config(meta: dict[str, Any]) -> SimulationConfig:
    raw = dict(meta["config"])
    raw["end"] = datetime.fromisoformat(raw["end"]) if raw.get("end") else datetime.fromisoformat(meta["end"])
    return SimulationConfig(**raw)


def _context(settings: Settings, simulation: SimulationConfig, start: datetime) -> Context:
    """The world, and the source's last ``history_days`` of events and its catalogue."""
    import pyarrow.parquet as pq

    import features
    import sources

    snap = sources.extract_snapshot(demo_uri(settings), "rankloop", start - timedelta(days=settings.window.history_days),
                                    start, settings.snapshot_dir)
    items, users = sources.read_catalog(demo_uri(settings), "rankloop")
    users_df = users.to_pandas() if users is not None else None
    columns = list(features.event_columns(users_df))
    names = set(pq.read_schema(snap.path).names)
    history = pq.read_table(snap.path, columns=[c for c in columns if c in names]).to_pandas()
    return Context(make_world(simulation), simulation, history,
                   items.to_pandas() if items is not None else None, users_df)


def advance(history: pd.DataFrame, day: pa.Table, until: datetime, history_days: int) -> pd.DataFrame:
    """The history with a served day appended and what fell out of the feature window dropped."""
    new = day.select([c for c in history.columns if c in day.column_names]).to_pandas()
    both = pd.concat([history, new], ignore_index=True)
    keep = pd.to_datetime(both["ts"], utc=True) >= pd.Timestamp(until - timedelta(days=history_days))
    return both[keep].reset_index(drop=True)


def demo_uri(settings: Settings) -> str:
    """The demo source's URI (``sqlite:///<home>/interactions.db``)."""
    return f"sqlite:///{settings.demo_db}"


def requests_in(table: pa.Table) -> int:
    """How many requests a served day's events hold."""
    import pyarrow.compute as pc

    return len(pc.unique(table["request_id"])) if table.num_rows else 0


def _requests_per_tag(table: pa.Table) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    frame = table.select(["request_id", "policy_version"]).to_pandas().drop_duplicates("request_id")
    return {str(k): int(v) for k, v in frame["policy_version"].value_counts().items()}


