"""Ranker vs popularity on a ratings-only log, weekly window after weekly window.

A log of star ratings alone (user, item, stars, time: the layout of a public ratings log) has no
slates, so the weekly retrain builds implicit queries (``features/implicit.py``): per user session
or day, the rated items graded by their stars plus sampled unrated candidates. This runs the
retrain's own stages (``rankloop.stages.build_dataset`` and ``train_ranker``, no MLflow) on each of
the last ``--windows`` weekly windows of months of simulated history (``SimulationConfig(log_layout=
"ratings")``), and prints test NDCG@10 of the ranker and of popularity on the same test rows:

    flock /tmp/rankloop-heavy.lock .venv/bin/python bench/implicit_quality.py --weeks 30 --windows 8

``--json PATH`` also writes the figures. The source has no catalogue or user profiles.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.settings import Settings
from rankloop import stages
from rankloop.simulator import SimulationConfig, simulate

END = datetime(2026, 6, 1, tzinfo=UTC)


def ratings_log(args: argparse.Namespace) -> pa.Table:
    config = SimulationConfig(n_users=args.users, n_items=args.items, weeks=args.weeks,
                              requests_per_user_week=args.requests, end=END, seed=args.seed, log_layout="ratings")
    return pa.concat_tables(list(simulate(config)))


def window(settings: Settings, log: pa.Table, end: datetime, folder: Path) -> dict:
    start = end - timedelta(days=settings.window.history_days)
    ts = log.column("ts")
    rows = log.filter(pc.and_(pc.greater_equal(ts, pa.scalar(start, ts.type)), pc.less(ts, pa.scalar(end, ts.type))))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, folder / "events.parquet")
    validated = stages.Validated(events_path=folder / "events.parquet", rows_in=rows.num_rows, rows_valid=rows.num_rows,
                                 rows_quarantined=0, quarantine_path=None, suite_name="bench", suite_version="0")
    extracted = stages.Extracted(snapshot_path=folder / "events.parquet", digest="bench", rows=rows.num_rows,
                                 reused=False, source="simulator")
    started = time.perf_counter()
    dataset = stages.build_dataset(settings, validated, extracted, end, folder)
    trained = stages.train_ranker(settings, dataset, folder)
    sizes = dataset.split.sizes()
    return {"window_end": end.date().isoformat(), "ratings": rows.num_rows, "protocol": dataset.protocol["name"],
            "rows": dataset.impressions, **{k: v for k, v in sizes.items() if k.endswith("queries")},
            "best_iteration": trained.best_iteration, "ranker_ndcg_at_10": trained.report["ndcg_at_10"],
            "popularity_ndcg_at_10": trained.baselines["popularity"]["ndcg_at_10"],
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--weeks", type=int, default=30, help="weeks of simulated history")
    parser.add_argument("--requests", type=float, default=3.0, help="slates per user per week behind the ratings")
    parser.add_argument("--windows", type=int, default=8, help="weekly windows to train, the last ones")
    parser.add_argument("--history-days", type=int, default=35, help="days each window extracts (window.history_days)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = Settings(window={"history_days": args.history_days})
    log = ratings_log(args)
    print(f"ratings log: {log.num_rows} ratings, {len(pc.unique(log['user_id']))} users, "
          f"{len(pc.unique(log['item_id']))} items, {args.weeks} weeks; window {settings.window.history_days} days")
    results = []
    with tempfile.TemporaryDirectory(prefix="rankloop-implicit-") as tmp:
        for k in reversed(range(args.windows)):
            end = END - timedelta(weeks=k)
            results.append(window(settings, log, end, Path(tmp) / end.date().isoformat()))
            r = results[-1]
            print(f"{r['window_end']}  ratings {r['ratings']:6d}  rows {r['rows']:7d}  train/valid/test queries "
                  f"{r['train_queries']}/{r['valid_queries']}/{r['test_queries']}  best it {r['best_iteration']:3d}  "
                  f"ranker {r['ranker_ndcg_at_10']:.4f}  popularity {r['popularity_ndcg_at_10']:.4f}  ({r['seconds']} s)")
    wins = sum(r["ranker_ndcg_at_10"] > r["popularity_ndcg_at_10"] for r in results)
    print(f"ranker beats popularity in {wins} of {len(results)} windows ({results[0]['protocol']})")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "windows": results}, indent=2))


if __name__ == "__main__":
    main()
