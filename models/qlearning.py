"""Tabular Q-learning over (Big Five bins x content type x mood x time of day) with 27 actions.

State code (mixed radix): each trait in ``trait_bins`` equal-width bins of [0, 1] plus one
'unknown' bin; content type, mood and time of day index their configured vocabulary plus one
'other' slot. Action = 9*energy + 3*diversity + novelty (each 0..2), see :func:`action_params`.

Training replays the logged slates that carry an ``action_id``: one episode per user in time
order; reward = the slate's Q reward (:func:`models.rewards.q_rewards`); next state = the user's
next slate's state; the user's last slate is terminal. Update:
``Q[s,a] += alpha * (r + gamma * max_a' Q[s',a'] - Q[s,a])``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from core.config.policy import QLearningSettings
from core.schema import TRAIT_COLUMNS
from models.thompson import atomic_write_json, atomic_write_parquet

logger = logging.getLogger(__name__)

N_ACTIONS = 27
TABLE_FILE = "qtable.parquet"
META_FILE = "qtable.json"
ENERGY = (
    {"name": "low", "min_energy": 0.1, "max_energy": 0.4, "valence": 0.6},
    {"name": "medium", "min_energy": 0.4, "max_energy": 0.7, "valence": 0.65},
    {"name": "high", "min_energy": 0.7, "max_energy": 1.0, "valence": 0.75},
)
DIVERSITY = ({"name": "focused", "genre_count": 2}, {"name": "balanced", "genre_count": 4}, {"name": "diverse", "genre_count": 5})
NOVELTY = (
    {"name": "popular", "popularity_min": 60, "popularity_max": 100, "exploration_rate": 0.1},
    {"name": "balanced", "popularity_min": 10, "popularity_max": 60, "exploration_rate": 0.3},
    {"name": "exploratory", "popularity_min": 0, "popularity_max": 40, "exploration_rate": 0.6},
)


def action_params(action: int) -> dict[str, Any]:
    """Recommendation parameters of an action 0..26 (energy x diversity x novelty)."""
    if isinstance(action, bool) or not isinstance(action, int | np.integer):
        raise TypeError(f"action must be an int, got {type(action).__name__}")
    if not 0 <= action < N_ACTIONS:
        raise ValueError(f"action must be in [0, {N_ACTIONS - 1}], got {action}")
    e, d, n = ENERGY[action // 9], DIVERSITY[(action // 3) % 3], NOVELTY[action % 3]
    out = {"action": int(action), "energy": e["name"], "diversity": d["name"], "novelty": n["name"]}
    out |= {k: v for part in (e, d, n) for k, v in part.items() if k != "name"}
    return out


def action_table() -> list[dict[str, Any]]:
    """All 27 actions with their parameters."""
    return [action_params(a) for a in range(N_ACTIONS)]


def _radices(settings: QLearningSettings) -> list[int]:
    return [settings.trait_bins + 1] * len(TRAIT_COLUMNS) + [
        len(settings.content_types) + 1, len(settings.moods) + 1, len(settings.times_of_day) + 1,
    ]


def state_space_size(settings: QLearningSettings) -> int:
    """Number of possible states."""
    return int(np.prod(_radices(settings), dtype=np.int64))


def _vocab_codes(col: pd.Series | None, vocab: tuple[str, ...], n: int) -> np.ndarray:
    if col is None:
        return np.full(n, len(vocab), dtype=np.int64)
    codes = pd.Index(list(vocab), dtype=object).get_indexer(col.astype(object)).astype(np.int64)
    return np.where(codes < 0, len(vocab), codes)


def encode_states(frame: pd.DataFrame, settings: QLearningSettings) -> np.ndarray:
    """Integer state code per row, shape (n,); missing traits/values go to their 'unknown' slot."""
    n, bins = len(frame), settings.trait_bins
    digits = []
    for col in TRAIT_COLUMNS:
        v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float) if col in frame else np.full(n, np.nan)
        code = np.clip(np.floor(np.nan_to_num(v, nan=0.0) * bins), 0, bins - 1).astype(np.int64)
        digits.append(np.where(np.isnan(v), bins, code))
    for col, vocab in (("content_type", settings.content_types), ("mood", settings.moods),
                       ("time_of_day", settings.times_of_day)):
        digits.append(_vocab_codes(frame.get(col), vocab, n))
    code = np.zeros(n, dtype=np.int64)
    for digit, radix in zip(digits, _radices(settings), strict=True):
        code = code * radix + digit
    return code


def encode_state(context: Mapping[str, Any], settings: QLearningSettings) -> int:
    """State code of one context mapping (trait_*, content_type, mood, time_of_day)."""
    return int(encode_states(pd.DataFrame([dict(context)]), settings)[0])


def build_steps(slates: pd.DataFrame, settings: QLearningSettings) -> pd.DataFrame:
    """Q-learning transitions from :func:`models.rewards.q_rewards` output (slates with an action).

    Returns:
        user_id, request_id, ts, state, action, reward, next_state, done, sorted by user then ts.
    """
    logged = slates[slates["action_id"].notna()]
    _check_actions(logged["action_id"])
    steps = logged.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    state = encode_states(steps, settings)
    next_state, done = _links(steps["user_id"].ne(steps["user_id"].shift(-1)).to_numpy(), state)
    return pd.DataFrame({
        "user_id": steps["user_id"], "request_id": steps["request_id"], "ts": steps["ts"], "state": state,
        "action": steps["action_id"].to_numpy(dtype=np.int64), "reward": steps["reward"].to_numpy(dtype=float),
        "next_state": next_state, "done": done,
    })


def _check_actions(actions: pd.Series) -> None:
    bad = actions.loc[~actions.between(0, N_ACTIONS - 1)]
    if len(bad):
        raise ValueError(f"action_id must be in [0, 26], found {sorted(set(bad.tolist()))[:10]}")


def _links(last: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each step's next state (its user's next step's state; its own at the user's last step) and done."""
    return np.where(last, state, np.r_[state[1:], 0]) if len(state) else state.copy(), last


COMPACT_COLUMNS = ["request_id", "user_id", "ts", "action_id", "state", "reward", "n_items", "likes"]


def compact_slates(slates: pd.DataFrame, settings: QLearningSettings) -> pd.DataFrame:
    """``slates`` (:func:`models.rewards.q_rewards` output) with their context folded into its state code
    (``state``): all that a refit, the test week's OPE and :func:`replay_metrics` read of a slate, in
    the slates' order. Row by row, so a window's slates can be compacted a part at a time."""
    out = slates[[c for c in COMPACT_COLUMNS if c in slates and c != "state"]].copy()
    out.insert(out.columns.get_loc("action_id") + 1, "state", encode_states(slates, settings))
    return out


@dataclass(frozen=True)
class ReplayLog:
    """The logged steps of some slates (those with an action_id) in replay order, as arrays: by user, then
    time, then the slates' own order, as :func:`build_steps` orders them. What a refit and the test week's
    OPE read, a few bytes a step, so a window's log is sorted once and each refit takes a selection of it
    instead of copies of the slates.

    ``users``: the user ids, sorted; ``user``: each step's index into it; ``ts``: UTC, naive."""

    users: pd.Index
    user: np.ndarray
    ts: np.ndarray
    state: np.ndarray
    action: np.ndarray
    reward: np.ndarray

    @classmethod
    def of(cls, slates: pd.DataFrame, settings: QLearningSettings) -> ReplayLog:
        """The log of ``slates``: :func:`models.rewards.q_rewards` output, or :func:`compact_slates` of it.

        Raises:
            ValueError: a logged action outside 0..26.
        """
        logged = slates["action_id"].notna().to_numpy()
        actions = slates["action_id"][logged]
        _check_actions(actions)
        user, users = pd.factorize(slates["user_id"][logged], sort=True)
        if (user < 0).any():
            raise ValueError(f"{int((user < 0).sum())} logged slate(s) without a user_id: an episode is a user's "
                             "slates; drop them or give them their user")
        ts = pd.DatetimeIndex(pd.to_datetime(slates["ts"][logged], utc=True)).tz_localize(None).to_numpy()
        state = (slates["state"][logged].to_numpy(dtype=np.int64) if "state" in slates
                 else encode_states(slates[logged], settings))
        order = np.lexsort((ts, user))  # stable: the slates' order among a user's equal times
        return cls(users, user[order].astype(np.int64), ts[order], state[order],
                   actions.to_numpy(dtype=np.int64)[order], slates["reward"][logged].to_numpy(dtype=float)[order])

    def __len__(self) -> int:
        return len(self.user)

    def between(self, after: datetime | None = None, *, since: datetime | None = None, upto: datetime | None = None,
                before: datetime | None = None) -> ReplayLog:
        """The steps with ``after < ts``, ``since <= ts``, ``ts <= upto`` and ``ts < before`` (each bound where
        given; tz-aware)."""
        keep = np.ones(len(self), dtype=bool)
        for bound, keeps in ((after, np.greater), (since, np.greater_equal), (upto, np.less_equal),
                             (before, np.less)):
            if bound is not None:
                keep &= keeps(self.ts, np.datetime64(pd.Timestamp(bound).tz_convert("UTC").tz_localize(None)))
        if keep.all():
            return self
        return ReplayLog(self.users, self.user[keep], self.ts[keep], self.state[keep], self.action[keep],
                         self.reward[keep])

    def links(self) -> tuple[np.ndarray, np.ndarray]:
        """Each step's next state and whether it is its user's last (:func:`build_steps`' next_state, done)."""
        return _links(np.r_[self.user[1:] != self.user[:-1], True] if len(self) else np.zeros(0, dtype=bool),
                      self.state)

    def steps(self) -> pd.DataFrame:
        """:func:`build_steps`' frame of these steps, without request_id."""
        next_state, done = self.links()
        return pd.DataFrame({"user_id": self.users.take(self.user), "ts": pd.DatetimeIndex(self.ts).tz_localize("UTC"),
                             "state": self.state, "action": self.action, "reward": self.reward,
                             "next_state": next_state, "done": done})


def epsilon_greedy(best: np.ndarray, epsilon: float) -> np.ndarray:
    """Probabilities of an epsilon-greedy policy over the 27 actions given each row's greedy action,
    shape (n, 27) (the Q table and fitted Q share it).

    Raises:
        ValueError: ``epsilon`` outside [0, 1].
    """
    eps = float(epsilon)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {eps}")
    probs = np.full((len(best), N_ACTIONS), eps / N_ACTIONS)
    probs[np.arange(len(best)), best] += 1.0 - eps
    return probs


@dataclass(frozen=True)
class QTable:
    """Q values and visit counts of the states seen so far (``states`` sorted, rows align)."""

    # The PolicyTable interface (models/policy.py): its kind, saved meta file, serving verbs and settings.
    kind: ClassVar[str] = "qtable"
    meta_file: ClassVar[str] = META_FILE
    verbs: ClassVar[tuple[str, ...]] = ("best_action", "action_params")
    settings_field: ClassVar[str] = "qlearning"

    states: np.ndarray
    q: np.ndarray
    visits: np.ndarray
    settings: QLearningSettings
    episodes: int
    steps: int
    fitted_at: datetime
    data_end: datetime | None

    def __post_init__(self) -> None:
        shape = (len(self.states), N_ACTIONS)
        if self.q.shape != shape or self.visits.shape != shape:
            raise ValueError(f"QTable with {len(self.states)} states needs q and visits of shape {shape}, "
                             f"got {self.q.shape} and {self.visits.shape}")
        if len(self.states) > 1 and np.any(np.diff(self.states) <= 0):
            raise ValueError("QTable states must be sorted and unique")

    @property
    def epsilon(self) -> float:
        """Exploration rate after the episodes trained so far."""
        s = self.settings
        return float(max(s.epsilon_end, s.epsilon_start * s.epsilon_decay**self.episodes))

    def _rows(self, states: np.ndarray) -> np.ndarray:
        states = np.asarray(states, dtype=np.int64)
        pos = np.searchsorted(self.states, states)
        pos = np.minimum(pos, max(len(self.states) - 1, 0))
        found = (len(self.states) > 0) & (self.states[pos] == states) if len(self.states) else np.zeros(len(states), bool)
        return np.where(found, pos, -1)

    def best_actions(self, states: np.ndarray) -> np.ndarray:
        """Greedy action per state code; the default action where a state was never visited."""
        rows = self._rows(np.atleast_1d(states))
        out = np.full(len(rows), self.settings.default_action, dtype=np.int64)
        known = rows >= 0
        known[known] = self.visits[rows[known]].sum(axis=1) > 0
        out[known] = self.q[rows[known]].argmax(axis=1)
        return out

    def best_action(self, state: int | Mapping[str, Any]) -> int:
        """Greedy action of a state code or of a context mapping."""
        code = encode_state(state, self.settings) if isinstance(state, Mapping) else int(state)
        return int(self.best_actions(np.array([code]))[0])

    def action_params(self, action: int) -> dict[str, Any]:
        """Recommendation parameters of an action."""
        return action_params(action)

    def policy_probabilities(self, states: np.ndarray, epsilon: float | None = None) -> np.ndarray:
        """Epsilon-greedy probabilities, shape (n, 27); epsilon defaults to the table's."""
        return epsilon_greedy(self.best_actions(np.atleast_1d(states)), self.epsilon if epsilon is None else epsilon)

    def coverage(self) -> dict[str, Any]:
        """How much of the state and action space the logs have visited."""
        visited = self.visits.sum(axis=1) > 0
        per_action = self.visits.sum(axis=0)
        size = state_space_size(self.settings)
        n_visited = int(visited.sum())
        pairs = int((self.visits > 0).sum())
        return {
            "state_space_size": size, "states_visited": n_visited, "state_coverage": n_visited / size,
            "state_action_pairs_visited": pairs,
            "state_action_coverage": pairs / (size * N_ACTIONS),
            "action_coverage_in_visited_states": pairs / (n_visited * N_ACTIONS) if n_visited else 0.0,
            "actions_visited": int((per_action > 0).sum()), "visits_per_action": per_action.astype(int).tolist(),
            "episodes": self.episodes, "steps": self.steps,
        }

    def save(self, directory: Path) -> Path:
        """Write qtable.parquet (state, action, q, visits: visited or non-zero cells) and qtable.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        rows, cols = np.nonzero((self.visits > 0) | (self.q != 0))
        frame = pd.DataFrame({
            "state": self.states[rows], "action": cols.astype(np.int32), "q": self.q[rows, cols],
            "visits": self.visits[rows, cols].astype(np.int64),
        })
        atomic_write_parquet(frame, directory / TABLE_FILE)
        meta = {
            "kind": "qtable", "settings": self.settings.model_dump(mode="json"), "actions": action_table(),
            "episodes": self.episodes, "steps": self.steps, "epsilon": self.epsilon,
            "fitted_at": self.fitted_at.isoformat(), "coverage": self.coverage(),
            "data_end": self.data_end.isoformat() if self.data_end is not None else None,
        }
        atomic_write_json(meta, directory / META_FILE)
        return directory

    @classmethod
    def load_for_refit(cls, directory: Path) -> QTable:
        """:meth:`load` (a refit reads the whole table: it is small)."""
        return cls.load(directory)

    @classmethod
    def load(cls, directory: Path) -> QTable:
        """Read a table written by :meth:`save`."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        frame = pd.read_parquet(directory / TABLE_FILE)
        states, rows = np.unique(frame["state"].to_numpy(dtype=np.int64), return_inverse=True)
        q = np.zeros((len(states), N_ACTIONS))
        visits = np.zeros((len(states), N_ACTIONS), dtype=np.int64)
        cols = frame["action"].to_numpy(dtype=np.int64)
        q[rows, cols] = frame["q"].to_numpy(dtype=float)
        visits[rows, cols] = frame["visits"].to_numpy(dtype=np.int64)
        end = pd.Timestamp(meta["data_end"]).to_pydatetime() if meta["data_end"] else None
        return cls(states, q, visits, QLearningSettings(**meta["settings"]), int(meta["episodes"]),
                   int(meta["steps"]), pd.Timestamp(meta["fitted_at"]).to_pydatetime(), end)


def _q_updates(q: np.ndarray, s: np.ndarray, a: np.ndarray, r: np.ndarray, s2: np.ndarray,
               done: np.ndarray, alpha: float, gamma: float) -> None:
    """Sequential in-place Q-learning updates over integer row indices (the hot loop)."""
    for si, ai, ri, s2i, di in zip(s.tolist(), a.tolist(), r.tolist(), s2.tolist(), done.tolist(), strict=True):
        row = q[si]
        target = ri if di else ri + gamma * q[s2i].max()
        row[ai] += alpha * (target - row[ai])


def _grown(previous: QTable | None, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of previous and new state codes with the previous Q/visits copied in."""
    old = previous.states if previous is not None else np.empty(0, dtype=np.int64)
    union = np.union1d(old, states).astype(np.int64)
    q = np.zeros((len(union), N_ACTIONS))
    visits = np.zeros((len(union), N_ACTIONS), dtype=np.int64)
    if previous is not None and len(old):
        idx = np.searchsorted(union, old)
        q[idx], visits[idx] = previous.q, previous.visits
    return union, q, visits


def _discretisation(settings: QLearningSettings) -> tuple[Any, ...]:
    return settings.trait_bins, settings.content_types, settings.moods, settings.times_of_day


def refit(previous: QTable | None, slates: pd.DataFrame | ReplayLog, settings: QLearningSettings,
          now: datetime) -> QTable:
    """Replay the slates logged after ``previous.data_end``, starting from the previous Q values.

    Args:
        previous: last version's table (warm start) or None (all zeros).
        slates: output of :func:`models.rewards.q_rewards`, or its :class:`ReplayLog`.
        settings: alpha, gamma, epsilon schedule, state discretisation, default action.
        now: tz-aware time of the refit (later slates are ignored).

    Returns:
        A new QTable (previous is not modified).
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now!r}")
    if previous is not None and _discretisation(previous.settings) != _discretisation(settings):
        raise ValueError(
            f"the state discretisation changed: previous {_discretisation(previous.settings)}, "
            f"now {_discretisation(settings)}; start a new table (previous=None)"
        )
    log = slates if isinstance(slates, ReplayLog) else ReplayLog.of(slates, settings)
    steps = log.between(previous.data_end if previous is not None else None, upto=now)
    next_state, done = steps.links()
    states, q, visits = _grown(previous, np.r_[steps.state, next_state])
    s = np.searchsorted(states, steps.state)
    s2 = np.searchsorted(states, next_state)
    _q_updates(q, s, steps.action, steps.reward, s2, done, settings.alpha, settings.gamma)
    np.add.at(visits, (s, steps.action), 1)
    episodes = (previous.episodes if previous else 0) + int(done.sum())  # a user's steps are one run
    n_steps = (previous.steps if previous else 0) + len(steps)
    end = pd.Timestamp(steps.ts.max()).tz_localize("UTC") if len(steps) else None
    if previous is not None and previous.data_end is not None and (end is None or end < pd.Timestamp(previous.data_end)):
        end = pd.Timestamp(previous.data_end)
    end_dt = pd.Timestamp(end).to_pydatetime() if end is not None else None
    logger.info("Q-learning replayed %d step(s) over %d state(s)", len(steps), len(states))
    return QTable(states, q, visits, settings, episodes, n_steps, now, end_dt)


def step_probabilities(table: QTable, steps: pd.DataFrame, epsilon: float | None = None) -> np.ndarray:
    """Probability the table's epsilon-greedy policy gives each logged step's action, shape (n,).

    Used twice for OPE of a new table with :func:`models.ope.pdwis`: with the table that logged the
    slates (``pscore``) and with the new table (``target_prob``).
    """
    probs = table.policy_probabilities(steps["state"].to_numpy(dtype=np.int64), epsilon)
    return probs[np.arange(len(steps)), steps["action"].to_numpy(dtype=np.int64)]


def replay_metrics(table: QTable, slates: pd.DataFrame) -> dict[str, float]:
    """Average slate reward and like rate of the logs, plus the table's numeric coverage figures."""
    n_items = float(slates["n_items"].sum()) if "n_items" in slates else 0.0
    out = {
        "average_reward": float(slates["reward"].mean()) if len(slates) else float("nan"),
        "like_rate": float(slates["likes"].sum()) / n_items if n_items and "likes" in slates else float("nan"),
        "epsilon": table.epsilon,
    }
    numeric = {k: float(v) for k, v in table.coverage().items() if isinstance(v, int | float)}
    return out | {f"coverage_{k}": v for k, v in numeric.items()}
