"""Time ``impressions`` and ``build_features`` on synthetic canonical events.

    .venv/bin/python bench/features_bench.py --events 1000000
    .venv/bin/python bench/features_bench.py --events 10000000

The data is generated once into Parquet (cached in the temp dir), then a fresh subprocess reads it
and times the two steps, so the peak RSS reported is that of reading + labels + features only.

Events: ~20% impressions in slates of 10 (request_id, position, propensity), the rest responses to
them (position-biased) at later times; 100k users, 20k items, 35 days; items carry embeddings.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.config.features import FeatureSettings, LabelSettings
from features import build_features, impressions

RESPONSES = {"view": 0.40, "click": 0.22, "dismiss": 0.06, "save": 0.07, "share": 0.04, "implement": 0.03,
             "like": 0.05, "skip": 0.05, "rating": 0.03, "complete": 0.03, "cart_add": 0.02}
DAY_US = 86_400_000_000


def _strings(prefix: str, codes: np.ndarray, n: int) -> pd.Series:
    names = np.array([f"{prefix}{i}" for i in range(n)], dtype=object)
    return pd.Series(names[codes], dtype="str")


def synth(n_events: int, n_users: int = 100_000, n_items: int = 20_000, slate: int = 10, seed: int = 0):
    """(events, items) with the canonical columns."""
    rng = np.random.default_rng(seed)
    n_req = max(int(n_events * 0.2) // slate, 1)
    n_imp = n_req * slate
    start = pd.Timestamp("2026-01-01", tz="UTC").value // 1000
    req_ts = start + rng.integers(0, 35 * DAY_US, n_req)
    req_user = rng.integers(0, n_users, n_req)
    item = (rng.pareto(1.2, n_imp) * 500).astype(np.int64) % n_items
    n_resp = n_events - n_imp
    pos = np.minimum(rng.geometric(0.3, n_resp) - 1, slate - 1)
    idx = rng.integers(0, n_req, n_resp) * slate + pos
    types = np.array(list(RESPONSES), dtype=object)
    etype = np.r_[np.full(n_imp, "impression", dtype=object), rng.choice(types, n_resp, p=list(RESPONSES.values()))]
    imp_req = np.repeat(np.arange(n_req), slate)
    src = np.r_[np.arange(n_imp), idx]
    ts = req_ts[imp_req[src]] + np.r_[np.zeros(n_imp, np.int64), rng.exponential(600e6, n_resp).astype(np.int64) + 1]
    value = np.where(etype == "view", rng.exponential(40, n_events),
                     np.where(etype == "rating", rng.integers(1, 6, n_events),
                              np.where(etype == "complete", rng.uniform(0, 100, n_events), np.nan)))
    user = req_user[imp_req[src]]
    events = pd.DataFrame({
        "event_id": _strings("e", np.arange(n_events), n_events),
        "user_id": _strings("u", user, n_users),
        "item_id": _strings("i", item[src], n_items),
        "event_type": pd.Series(etype, dtype="str"),
        "value": value,
        "ts": pd.to_datetime(ts, unit="us", utc=True),
        "session_id": _strings("s", imp_req[src], n_req),
        "request_id": _strings("r", imp_req[src], n_req),
        "position": pd.array(np.tile(np.arange(slate), n_req)[src], dtype="Int32"),
        "propensity": np.full(n_events, 0.1),
        "policy_version": pd.Series(np.full(n_events, "v1", dtype=object), dtype="str"),
        "device": pd.Series(np.array(["mobile", "desktop", "tablet"], dtype=object)[user % 3], dtype="str"),
        "category": _strings("c", item[src] % 30, 30),
    })
    items = pd.DataFrame({
        "item_id": _strings("i", np.arange(n_items), n_items),
        "category": _strings("c", np.arange(n_items) % 30, 30),
        "content_type": pd.Series(np.full(n_items, "article", dtype=object), dtype="str"),
        "created_at": pd.to_datetime(start - rng.integers(0, 90 * DAY_US, n_items), unit="us", utc=True),
        "embedding": list(rng.normal(size=(n_items, 16)).astype(np.float32)),
    })
    return events.sample(frac=1.0, random_state=seed).reset_index(drop=True), items


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run(events_path: Path, items_path: Path, feature_set: str) -> None:
    """Read the Parquet data and time both steps (wall and CPU seconds, peak RSS)."""
    events, items = pd.read_parquet(events_path), pd.read_parquet(items_path)
    items["embedding"] = list(np.stack(items["embedding"].to_numpy()).astype(np.float32))
    print(f"read {len(events):,} events; peak RSS {peak_gb():.2f} GB")
    wall, cpu = time.perf_counter(), time.process_time()
    imps = impressions(events, LabelSettings())
    t_imp, c_imp = time.perf_counter() - wall, time.process_time() - cpu
    print(f"impressions: {len(imps):,} rows in {t_imp:.1f}s wall / {c_imp:.1f}s CPU; peak RSS {peak_gb():.2f} GB; "
          f"mean label {imps['label'].mean():.2f}")
    wall, cpu = time.perf_counter(), time.process_time()
    feats = build_features(imps, events, items=items, settings=FeatureSettings(), feature_set=feature_set)
    t_feat, c_feat = time.perf_counter() - wall, time.process_time() - cpu
    print(f"build_features: {feats.shape[1]} features x {len(feats):,} rows in {t_feat:.1f}s wall / "
          f"{c_feat:.1f}s CPU; peak RSS {peak_gb():.2f} GB")
    print(f"total impressions + build_features: {t_imp + t_feat:.1f}s wall / {c_imp + c_feat:.1f}s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--feature-set", default="ranker_default")
    parser.add_argument("--run", nargs=2, metavar=("EVENTS", "ITEMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run(Path(args.run[0]), Path(args.run[1]), args.feature_set)
        return
    events_path = Path(tempfile.gettempdir()) / f"rankloop_features_bench_{args.events}.parquet"
    items_path = events_path.with_suffix(".items.parquet")
    if not events_path.exists():
        t = time.perf_counter()
        events, items = synth(args.events)
        items.to_parquet(items_path)
        events.to_parquet(events_path)
        print(f"generated {len(events):,} events in {time.perf_counter() - t:.1f}s -> {events_path}")
        del events, items
    cmd = [sys.executable, __file__, "--feature-set", args.feature_set, "--run", str(events_path), str(items_path)]
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
