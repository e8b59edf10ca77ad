"""Off-policy evaluation on the Open Bandit Dataset sample (men campaign).

Estimates, from the uniform-random logs, the click rate of ZOZOTOWN's Bernoulli Thompson-sampling
policy (its production Beta prior, prior_bts.yaml) with IPS, SNIPS and DR, and compares each
with the on-policy click rate observed in the Thompson-sampling logs, as in the obp quickstart.

The policy's probability of each item at each of the 3 positions comes from
``BetaTables.action_probabilities`` (sample the Betas, rank, count).

Run from /work/main:

    .venv/bin/python bench/obd_bench.py [--data /work/shared/data/obd] [--campaign men]
        [--n-sims 100000] [--reward-model ctr|logreg] [--out bench/results/obd_bench.json]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder

from core.config.policy import BanditSettings, OPESettings
from models.ope import evaluate_policy
from models.thompson import BetaTables

N_POSITIONS = 3
N_FOLDS = 3


def load_logs(data: Path, policy: str, campaign: str) -> pd.DataFrame:
    """One policy's logs with 0-based positions."""
    frame = pd.read_csv(data / policy / campaign / f"{campaign}.csv", index_col=0)
    return frame.assign(position=frame["position"] - 1)


def bts_tables(data: Path, campaign: str) -> BetaTables:
    """The production Beta(alpha_i, beta_i) as BetaTables (prior 1/1 plus alpha-1 / beta-1 counts)."""
    prior = yaml.safe_load((data / "prior_bts.yaml").read_text())[campaign]
    alpha, beta = np.asarray(prior["alpha"], dtype=float), np.asarray(prior["beta"], dtype=float)
    items = pd.DataFrame({"item_id": [str(i) for i in range(len(alpha))], "successes": alpha - 1, "failures": beta - 1})
    users = pd.DataFrame({"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object),
                          "successes": [], "failures": []})
    return BetaTables(items, users, BanditSettings(prior_alpha=1.0, prior_beta=1.0), datetime.now(UTC), None)


def ctr_model(train: pd.DataFrame, n_items: int) -> np.ndarray:
    """Smoothed click rate per (item, position), shape (n_items, 3); prior = position CTR, 10 pseudo-views."""
    table = np.zeros((n_items, N_POSITIONS))
    for pos in range(N_POSITIONS):
        at = train[train["position"] == pos]
        base = at["click"].mean()
        clicks = np.bincount(at["item_id"], weights=at["click"], minlength=n_items)
        views = np.bincount(at["item_id"], minlength=n_items)
        table[:, pos] = (clicks + 10 * base) / (views + 10)
    return table


def _design(frame: pd.DataFrame, encoder: OneHotEncoder) -> np.ndarray:
    cols = ["item_id", "position", "user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3"]
    return encoder.transform(frame[cols].astype(str))


def logreg_predict(train: pd.DataFrame, test: pd.DataFrame, n_items: int) -> np.ndarray:
    """Logistic regression on one-hot item, position and user features; returns (n_test, n_items, 3)."""
    cols = ["item_id", "position", "user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3"]
    encoder = OneHotEncoder(handle_unknown="ignore").fit(train[cols].astype(str))
    model = LogisticRegression(C=1.0, max_iter=500).fit(_design(train, encoder), train["click"])
    out = np.empty((len(test), n_items, N_POSITIONS))
    for item in range(n_items):
        for pos in range(N_POSITIONS):
            out[:, item, pos] = model.predict_proba(_design(test.assign(item_id=item, position=pos), encoder))[:, 1]
    return out


def reward_model(logs: pd.DataFrame, n_items: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Cross-fitted predictions (n_rows, n_items, 3): each fold predicted by a model fitted on the others."""
    folds = rng.integers(0, N_FOLDS, len(logs))
    out = np.empty((len(logs), n_items, N_POSITIONS))
    for k in range(N_FOLDS):
        train, test = logs[folds != k], logs[folds == k]
        if kind == "ctr":
            out[folds == k] = ctr_model(train, n_items)[None, :, :]
        else:
            out[folds == k] = logreg_predict(train, test, n_items)
    return out


def run(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    random_logs = load_logs(args.data, "random", args.campaign)
    bts_logs = load_logs(args.data, "bts", args.campaign)
    truth = float(bts_logs["click"].mean())
    truth_se = float(np.sqrt(truth * (1 - truth) / len(bts_logs)))
    tables = bts_tables(args.data, args.campaign)
    n_items = len(tables.items)
    started = time.perf_counter()
    dist = tables.action_probabilities(tables.items["item_id"].tolist(), N_POSITIONS, args.n_sims, rng)
    sim_seconds = time.perf_counter() - started
    item, pos = random_logs["item_id"].to_numpy(), random_logs["position"].to_numpy()
    qhat = reward_model(random_logs, n_items, args.reward_model, rng)
    rows = np.arange(len(random_logs))
    q_target = (qhat[rows, :, pos] * dist[:, pos].T).sum(axis=1)
    settings = OPESettings(bootstrap_samples=args.bootstrap, min_ess=100.0, seed=args.seed)
    result = evaluate_policy(
        random_logs["click"].to_numpy(dtype=float), random_logs["propensity_score"].to_numpy(dtype=float),
        dist[item, pos], qhat[rows, item, pos], q_target, settings=settings,
    )
    report = {
        "campaign": args.campaign, "n_random_rows": len(random_logs), "on_policy_ctr_bts": truth,
        "on_policy_ctr_bts_95ci": [truth - 1.96 * truth_se, truth + 1.96 * truth_se],
        "random_ctr": float(random_logs["click"].mean()),
        "reward_model": args.reward_model, "n_sims": args.n_sims, "simulation_seconds": round(sim_seconds, 2),
        "verdict": result.verdict, "reason": result.reason, "ess": result.ess, "max_weight": result.max_weight,
        "estimators": {},
    }
    for name, value in (result.estimates or {}).items():
        low, high = result.intervals[name]
        report["estimators"][name] = {
            "estimate": value, "ci_low": low, "ci_high": high, "relative_error": abs(value - truth) / truth,
            "truth_in_ci": bool(low <= truth <= high),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/obd"))
    parser.add_argument("--campaign", default="men")
    parser.add_argument("--n-sims", type=int, default=100_000)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--reward-model", choices=("ctr", "logreg"), default="ctr")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
