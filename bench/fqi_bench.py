"""Fitted Q iteration against the Q table, judged by the same off-policy estimate.

**Simulated logs** (the demo's world by default): both learners are fitted on the slates before
the test week (the table from scratch with ``models.qlearning.refit``, FQI with
``models.fqi.FittedQ``), and each is judged on the test week's episodes by
``rankloop.tables.step_policy_ope``, the weekly Q-table judgement (PDWIS, episode bootstrap
interval, epsilon-greedy at ``qlearning.epsilon_end``). Also reported: the logging policy's own
PDWIS (uniform actions), how many test steps fall in a state the table visited, and how often
each greedy action is the simulator's ideal action (``rankloop.simulator.ideal_action``: truth
neither learner sees).

**Open Bandit sample** (``--obd``, the men campaign's uniform-random log): no user ids, so each
impression is an episode of one step; state = the four user features and the slot, action = one
of the 34 items, reward = click. The table is the Q table's update rule over state codes
(``models.qlearning._q_updates``, unvisited states take the best item overall); FQI regresses
the click on the state codes and the item's id and features. Both are judged by PDWIS (on one-step
episodes it is SNIPS) with the episode bootstrap on the last 30% of the log (by time).

    flock /tmp/rankloop-heavy.lock .venv/bin/python bench/fqi_bench.py --obd ../shared/data/obd \
        --out bench/results/fqi_bench.json
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.schema import TRAIT_COLUMNS
from core.settings import Settings
from core.version import code_version
from models.fqi import FittedQ, FQISettings, fitted_q, q_matrix
from models.ope import OPEResult, episode_bootstrap, pdwis
from models.qlearning import _q_updates, build_steps, refit
from rankloop.simulator import MOODS, SimulationConfig, ideal_action, simulate
from rankloop.tables import step_policy_ope, table_frames


class Uniform:
    """The simulator's logging policy: every action with probability 1/27."""

    def policy_probabilities(self, states: np.ndarray, epsilon: float | None = None) -> np.ndarray:
        return np.full((len(np.atleast_1d(states)), 27), 1 / 27)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--end", default="2026-11-30", help="End of the simulated period and of the window.")
    parser.add_argument("--users", type=int, default=1500, help="Simulated users (the demo: 1500).")
    parser.add_argument("--weeks", type=int, default=5, help="Simulated weeks (the demo: 5).")
    parser.add_argument("--seeds", default="0", help="Simulation seeds, comma-separated (the demo: 0).")
    parser.add_argument("--obd", type=Path, help="The Open Bandit Dataset sample folder (skipped without).")
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    began = time.perf_counter()
    end = datetime.fromisoformat(args.end).replace(tzinfo=UTC)
    result: dict[str, Any] = {"command": "bench/fqi_bench.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                                        if v is not None),
                              "commit": code_version(), "fqi_settings": FQISettings().model_dump(), "simulated": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        config = SimulationConfig(n_users=args.users, weeks=args.weeks, end=end, seed=seed)
        result["simulated"].append(simulated(config, Settings()))
        print(json.dumps(result["simulated"][-1]))
    if args.obd:
        result["obd"] = open_bandit(args.obd, Settings())
        print(json.dumps(result["obd"]))
    result["seconds"] = round(time.perf_counter() - began, 1)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def simulated(config: SimulationConfig, settings: Settings) -> dict[str, Any]:
    """Both learners on one simulated log's window, judged on its test week."""
    end = config.end
    events = pa.concat_tables(list(simulate(config))).to_pandas()
    events = events[events["ts"] >= pd.Timestamp(end - timedelta(days=settings.window.history_days))]
    slates = table_frames(events, settings).slates
    test_start = pd.Timestamp(end - timedelta(days=settings.ranker.test_days))
    ts = pd.to_datetime(slates["ts"], utc=True)
    pre, test = slates[ts < test_start], slates[ts >= test_start]
    steps = build_steps(test, settings.qlearning)
    started = time.perf_counter()
    table = refit(None, pre, settings.qlearning, end)
    table_seconds = time.perf_counter() - started
    started = time.perf_counter()
    fqi = FittedQ(qlearning=settings.qlearning).fit(pre, end)
    fqi_seconds = time.perf_counter() - started
    ideal = ideal_action(test[list(TRAIT_COLUMNS)].to_numpy(dtype=float),
                         test["mood"].map({m: i for i, m in enumerate(MOODS)}).to_numpy(dtype=int))
    ideal = pd.Series(ideal, index=test.index).reindex(
        test.sort_values(["user_id", "ts"], kind="stable").index).to_numpy()  # build_steps' order
    states = steps["state"].to_numpy()
    return {
        "seed": config.seed, "users": config.n_users, "weeks": config.weeks, "window_end": end.isoformat(),
        "train_slates": len(pre), "test_steps": len(steps), "test_episodes": int(steps["user_id"].nunique()),
        "test_steps_in_a_visited_state": float(np.isin(states, table.states[table.visits.sum(axis=1) > 0]).mean()),
        "logging_policy": _ope(step_policy_ope(Uniform(), steps, settings)),
        "qtable": _ope(step_policy_ope(table, steps, settings)) | _agreement(table.best_actions(states), ideal)
        | {"fit_seconds": round(table_seconds, 2)},
        "fqi": _ope(step_policy_ope(fqi, steps, settings)) | _agreement(fqi.best_actions(states), ideal)
        | {"fit_seconds": round(fqi_seconds, 2)},
    }


def _agreement(greedy: np.ndarray, ideal: np.ndarray) -> dict[str, float]:
    return {"greedy_is_ideal": float((greedy == ideal).mean()),
            "mean_distance_to_ideal": float(np.abs(greedy - ideal).mean())}


def _ope(result: OPEResult) -> dict[str, Any]:
    if result.verdict != "ok":
        return {"verdict": result.verdict, "reason": result.reason, "ess": result.ess}
    low, high = result.intervals["pdwis"]
    return {"verdict": "ok", "pdwis": result.estimates["pdwis"], "low": low, "high": high, "ess": result.ess}


# --- the Open Bandit sample ------------------------------------------------------------------------
def open_bandit(data: Path, settings: Settings, campaign: str = "men", test_share: float = 0.3) -> dict[str, Any]:
    """The table and FQI on OBD's uniform-random log: fitted on the first 70% (by time), judged on the rest."""
    log = pd.read_csv(data / "random" / campaign / f"{campaign}.csv", index_col=0)
    log = log.sort_values("timestamp", kind="stable").reset_index(drop=True)
    items = pd.read_csv(data / "random" / campaign / "item_context.csv", index_col=0).sort_values("item_id")
    users = [c for c in log.columns if c.startswith("user_feature_")]
    codes = np.column_stack([pd.factorize(log[c])[0] for c in users] + [log["position"].to_numpy() - 1])
    state = pd.factorize(pd.Series(map(tuple, codes)))[0]
    cut = int(len(log) * (1 - test_share))
    train, test = slice(0, cut), slice(cut, len(log))
    reward = log["click"].to_numpy(dtype=float)
    action = log["item_id"].to_numpy(dtype=np.int64)
    n_items = len(items)
    eps = settings.qlearning.epsilon_end
    # The table: the Q-learner's update rule on one-step episodes, unvisited states take the best item.
    q = np.zeros((state.max() + 1, n_items))
    _q_updates(q, state[train], action[train], reward[train], state[train], np.ones(cut, bool),
               settings.qlearning.alpha, settings.qlearning.gamma)
    visited = np.bincount(state[train], minlength=len(q)) > 0
    best_item = int(np.argmax(np.bincount(action[train], weights=reward[train], minlength=n_items)
                              / np.maximum(np.bincount(action[train], minlength=n_items), 1)))
    table_greedy = np.where(visited[state[test]], q[state[test]].argmax(axis=1), best_item)
    # FQI: one regression (every step is terminal) over state codes and item features.
    item_x = _item_features(items)
    names = [*users, "position", "item", *[f"item_feature_{j}" for j in range(item_x.shape[1] - 1)]]
    booster = fitted_q(codes[train], action[train], reward[train], codes[train], np.ones(cut, bool), item_x,
                       FQISettings(iterations=1), feature_names=names, categorical=[*users, "position", "item"])
    fqi_greedy = q_matrix(booster, codes[test], item_x).argmax(axis=1)
    pscore = log["propensity_score"].to_numpy()[test]
    out = {"campaign": campaign, "rows": len(log), "train_rows": cut, "test_rows": len(log) - cut,
           "test_clicks": int(reward[test].sum()), "states": int(state.max() + 1),
           "test_rows_in_a_visited_state": float(visited[state[test]].mean())}
    for name, greedy in (("logging_policy", None), ("qtable", table_greedy), ("fqi", fqi_greedy)):
        target = pscore.copy() if greedy is None else np.where(action[test] == greedy, 1 - eps, 0.0) + eps / n_items
        out[name] = _one_step_ope(reward[test], pscore, target, settings)
    return out


def _item_features(items: pd.DataFrame) -> np.ndarray:
    """(items, 1 + features): the item code, then each item feature (numeric as is, hashed ones coded)."""
    columns = [items["item_id"].to_numpy(dtype=float)]
    for c in (c for c in items.columns if c.startswith("item_feature_")):
        values = items[c]
        columns.append(values.to_numpy(dtype=float) if pd.api.types.is_numeric_dtype(values)
                       else pd.factorize(values)[0].astype(float))
    return np.column_stack(columns)


def _one_step_ope(reward: np.ndarray, pscore: np.ndarray, target: np.ndarray, settings: Settings) -> dict[str, Any]:
    episodes = np.arange(len(reward))  # one step each
    w = target / pscore
    ess = float(w.sum() ** 2 / (w**2).sum())
    low, high = episode_bootstrap(episodes, reward, pscore, target, settings.ope)
    return {"pdwis": pdwis(episodes, reward, pscore, target), "low": low, "high": high, "ess": ess,
            "enough_ess": ess >= settings.ope.min_ess}


if __name__ == "__main__":
    main()
