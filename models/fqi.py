"""Fitted Q iteration: the Q-learner's 27 actions and state with a gradient-boosted Q(s, a).

The table (``models.qlearning``) learns one value per visited (state, action) cell, so a state it
never saw gets the default action. Fitted Q iteration (Ernst et al., 2005) fits one regressor
over features of the state and of the action instead: ``Q_0 = 0`` and, for ``k = 1..K``,
``Q_k`` is a LightGBM regression of ``r + gamma * max_a' Q_{k-1}(s', a')`` (``r`` alone when the
step is terminal) on the logged ``(s, a)``. It is trained from the same episodes as the table
(:func:`models.qlearning.build_steps`) and its policy is epsilon-greedy on ``Q_K`` like the
table's, so the same off-policy estimate judges both.

State features are the table's own state code decoded into its digits (the Big Five bins,
content type, mood, time of day: no information the table lacks); action features are the
action's energy, diversity and novelty levels and its code. The model is saved as LightGBM text
(``fqi.txt``) and JSON (``fqi.json``), never pickled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.atomic import write_json, write_text
from core.config.policy import QLearningSettings
from core.schema import TRAIT_COLUMNS
from models.qlearning import (
    N_ACTIONS,
    _radices,
    action_params,
    action_table,
    build_steps,
    encode_state,
    epsilon_greedy,
)

logger = logging.getLogger(__name__)

MODEL_FILE = "fqi.txt"
META_FILE = "fqi.json"
STATE_FEATURES: tuple[str, ...] = (*(f"{c}_bin" for c in TRAIT_COLUMNS), "content_type", "mood", "time_of_day")
ACTION_FEATURES: tuple[str, ...] = ("energy", "diversity", "novelty", "action")
_NOMINAL: tuple[str, ...] = ("content_type", "mood", "time_of_day")
_PREDICT_ROWS = 1_000_000  # (state, action) rows scored at once


class FQISettings(BaseModel):
    """Fitted Q iteration: the number of iterations and the regressor fitted at each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iterations: int = Field(default=10, ge=1, description="K: Bellman backups (regressions) fitted in turn.")
    gamma: float = Field(default=0.9, ge=0, le=1, description="Discount of the next step's value (the table's gamma).")
    n_estimators: int = Field(default=100, ge=1, description="Boosting rounds of each iteration's regressor.")
    learning_rate: float = Field(default=0.1, gt=0, description="Shrinkage of each iteration's regressor.")
    num_leaves: int = Field(default=15, ge=2, description="Leaves per tree.")
    min_child_samples: int = Field(default=50, ge=1, description="Fewest logged steps per leaf (rewards are noisy).")
    num_threads: int = Field(default=0, ge=0, description="0 = LightGBM's default (all cores).")
    seed: int = Field(default=7, description="Seed of LightGBM's draws (training is deterministic given it).")


def fitted_q(state_x: np.ndarray, action: np.ndarray, reward: np.ndarray, next_x: np.ndarray, done: np.ndarray,
             action_x: np.ndarray, settings: FQISettings, *, feature_names: Sequence[str],
             categorical: Sequence[str] = ()) -> lgb.Booster:
    """``Q_K`` of fitted Q iteration over logged transitions.

    Args:
        state_x, next_x: (n, d) features of each step's state and next state.
        action: (n,) logged action codes in ``[0, A)``.
        reward: (n,) rewards; done: (n,) True where the episode ends (no next value).
        action_x: (A, m) features of each action.
        settings: iterations, discount and the regressor's parameters.
        feature_names: d + m names, state features then action features.
        categorical: the names among them that are nominal codes.

    Returns:
        The last iteration's LightGBM regressor of Q(s, a) on ``[state features, action features]``.
    """
    state_x, next_x, action_x = (np.asarray(a, dtype=np.float64) for a in (state_x, next_x, action_x))
    action, reward, done = np.asarray(action, dtype=np.int64), np.asarray(reward, np.float64), np.asarray(done, bool)
    _check_transitions(state_x, action, reward, next_x, done, action_x, feature_names)
    inputs = np.hstack([state_x, action_x[action]])
    params = _params(settings)
    booster: lgb.Booster | None = None
    target = reward
    for k in range(settings.iterations):
        if booster is not None:
            target = reward + settings.gamma * np.where(done, 0.0, q_matrix(booster, next_x, action_x).max(axis=1))
        data = lgb.Dataset(inputs, target, feature_name=list(feature_names), categorical_feature=list(categorical),
                           params=params, free_raw_data=True)
        booster = lgb.train(params, data, settings.n_estimators)
        logger.debug("FQI iteration %d: mean target %.4f", k + 1, float(target.mean()))
    return booster


def q_matrix(booster: lgb.Booster, state_x: np.ndarray, action_x: np.ndarray) -> np.ndarray:
    """Q(s, a) of every state row and action, shape (n, A)."""
    state_x, action_x = np.asarray(state_x, dtype=np.float64), np.asarray(action_x, dtype=np.float64)
    n_actions = len(action_x)
    out = np.empty((len(state_x), n_actions))
    step = max(1, _PREDICT_ROWS // n_actions)
    for lo in range(0, len(state_x), step):
        block = state_x[lo:lo + step]
        rows = np.hstack([np.repeat(block, n_actions, axis=0), np.tile(action_x, (len(block), 1))])
        out[lo:lo + step] = booster.predict(rows).reshape(len(block), n_actions)
    return out


def _params(settings: FQISettings) -> dict[str, Any]:
    return {"objective": "regression", "learning_rate": settings.learning_rate, "num_leaves": settings.num_leaves,
            "min_data_in_leaf": settings.min_child_samples, "num_threads": settings.num_threads,
            "seed": settings.seed, "deterministic": True, "force_row_wise": True, "verbosity": -1}


def _check_transitions(state_x, action, reward, next_x, done, action_x, feature_names) -> None:
    problems = []
    n = len(state_x)
    if n == 0:
        problems.append("no transitions to fit")
    lengths = {"action": len(action), "reward": len(reward), "next_x": len(next_x), "done": len(done)}
    problems += [f"{name} has {m} rows, state_x has {n}" for name, m in lengths.items() if m != n]
    if next_x.shape[1:] != state_x.shape[1:]:
        problems.append(f"next_x has {next_x.shape[1:]} columns, state_x {state_x.shape[1:]}")
    if len(feature_names) != state_x.shape[1] + action_x.shape[1]:
        problems.append(f"{len(feature_names)} feature names for {state_x.shape[1]} state + {action_x.shape[1]} "
                        "action features")
    if len(action) and (action.min() < 0 or action.max() >= len(action_x)):
        problems.append(f"actions must be in [0, {len(action_x) - 1}], found {action.min()}..{action.max()}")
    if not np.isfinite(reward).all():
        problems.append(f"{int((~np.isfinite(reward)).sum())} reward(s) are NaN or infinite")
    if problems:
        raise ValueError("fitted Q iteration: " + "; ".join(problems))


# --- the Q-learner's problem -------------------------------------------------------------------
def state_digits(states: np.ndarray, settings: QLearningSettings) -> np.ndarray:
    """The mixed-radix digits of state codes (``STATE_FEATURES`` order), shape (n, 8)."""
    codes = np.asarray(states, dtype=np.int64).copy()
    radices = _radices(settings)
    digits = np.empty((len(codes), len(radices)), dtype=np.int64)
    for j in range(len(radices) - 1, -1, -1):
        digits[:, j] = codes % radices[j]
        codes //= radices[j]
    return digits


def action_features() -> np.ndarray:
    """Energy, diversity and novelty level (0..2) and code of each of the 27 actions, shape (27, 4)."""
    a = np.arange(N_ACTIONS)
    return np.column_stack([a // 9, (a // 3) % 3, a % 3, a])


class FittedQ:
    """An epsilon-greedy policy on a fitted Q(s, a), with the Q table's verbs.

    ``FittedQ(settings=..., qlearning=...)`` only stores its configuration; :meth:`fit` learns
    ``booster_`` from logged slates. ``qlearning`` supplies the state discretisation, the default
    action (before fitting nothing is served) and the exploration rate of the evaluated policy.
    """

    def __init__(self, *, settings: FQISettings | None = None, qlearning: QLearningSettings | None = None):
        self.settings = settings or FQISettings()
        self.qlearning = qlearning or QLearningSettings()

    def fit(self, slates: pd.DataFrame, now: datetime) -> Self:
        """Learn Q from :func:`models.rewards.q_rewards` slates logged up to ``now`` (tz-aware)."""
        if now.tzinfo is None:
            raise ValueError(f"now must be timezone-aware (UTC), got naive {now!r}")
        ts = pd.to_datetime(slates["ts"], utc=True)
        keep = ts <= pd.Timestamp(now)
        steps = build_steps(slates.loc[keep].assign(ts=ts[keep]), self.qlearning)
        if len(steps) == 0:
            raise ValueError("no logged slate with an action_id up to now: nothing to fit")
        self.booster_ = fitted_q(
            state_digits(steps["state"].to_numpy(), self.qlearning), steps["action"].to_numpy(),
            steps["reward"].to_numpy(), state_digits(steps["next_state"].to_numpy(), self.qlearning),
            steps["done"].to_numpy(), action_features(), self.settings,
            feature_names=(*STATE_FEATURES, *ACTION_FEATURES), categorical=_NOMINAL)
        self.episodes_, self.steps_ = int(steps["user_id"].nunique()), len(steps)
        self.fitted_at_, self.data_end_ = now, pd.Timestamp(steps["ts"].max()).to_pydatetime()
        logger.info("fitted Q iteration: %d iterations over %d step(s) of %d episode(s)", self.settings.iterations,
                    self.steps_, self.episodes_)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise ValueError("this FittedQ is not fitted yet: call fit(slates, now) or FittedQ.load(directory)")

    def q_values(self, states: np.ndarray) -> np.ndarray:
        """Q of every action in each state code, shape (n, 27)."""
        self._check_fitted()
        return q_matrix(self.booster_, state_digits(np.atleast_1d(states), self.qlearning), action_features())

    def best_actions(self, states: np.ndarray) -> np.ndarray:
        """Greedy action per state code (the lowest code among ties), shape (n,)."""
        return self.q_values(states).argmax(axis=1)

    def best_action(self, state: int | Mapping[str, Any]) -> int:
        """Greedy action of a state code or of a context mapping (trait_*, content_type, mood, time_of_day)."""
        code = encode_state(state, self.qlearning) if isinstance(state, Mapping) else int(state)
        return int(self.best_actions(np.array([code]))[0])

    def action_params(self, action: int) -> dict[str, Any]:
        """Recommendation parameters of an action."""
        return action_params(action)

    def policy_probabilities(self, states: np.ndarray, epsilon: float | None = None) -> np.ndarray:
        """Epsilon-greedy probabilities, shape (n, 27); epsilon defaults to the Q-learner's floor."""
        return epsilon_greedy(self.best_actions(np.atleast_1d(states)),
                              self.qlearning.epsilon_end if epsilon is None else epsilon)

    # --- persistence -----------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """Write ``fqi.txt`` (the LightGBM text model) and ``fqi.json`` (settings and provenance)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text(directory / MODEL_FILE, self.booster_.model_to_string())
        meta = {"kind": "fqi", "settings": self.settings.model_dump(mode="json"),
                "qlearning": self.qlearning.model_dump(mode="json"), "actions": action_table(),
                "state_features": list(STATE_FEATURES), "action_features": list(ACTION_FEATURES),
                "episodes": self.episodes_, "steps": self.steps_, "fitted_at": self.fitted_at_.isoformat(),
                "data_end": self.data_end_.isoformat()}
        write_json(directory / META_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: Path) -> FittedQ:
        """A fitted policy from the files :meth:`save` wrote."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        policy = cls(settings=FQISettings(**meta["settings"]), qlearning=QLearningSettings(**meta["qlearning"]))
        policy.booster_ = lgb.Booster(model_str=(directory / MODEL_FILE).read_text())
        policy.episodes_, policy.steps_ = int(meta["episodes"]), int(meta["steps"])
        policy.fitted_at_ = pd.Timestamp(meta["fitted_at"]).to_pydatetime()
        policy.data_end_ = pd.Timestamp(meta["data_end"]).to_pydatetime()
        return policy
