"""Registry latency on the embedded SQLite store: publish, promote, rollback, and load (cold, warm, offline).

Uses a throw-away data home and a LightGBM ranker of realistic size (``--trees`` trees of
``--leaves`` leaves over ``--features`` features). Run from the repo root:

    .venv/bin/python bench/registry_bench.py --trees 400 --features 60 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ranker_text(trees: int, leaves: int, features: int) -> tuple[str, list[str]]:
    import lightgbm as lgb
    import numpy as np

    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(features)]
    X = rng.normal(size=(20_000, features))
    y = np.clip((X[:, 0] + rng.normal(size=len(X))).round(), 0, 3).astype(int)
    data = lgb.Dataset(X, y, group=[20] * 1000, feature_name=names)
    params = {"objective": "lambdarank", "verbose": -1, "num_leaves": leaves, "min_data_in_leaf": 5}
    return lgb.train(params, data, num_boost_round=trees).model_to_string(), names


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trees", type=int, default=400)
    parser.add_argument("--leaves", type=int, default=31)
    parser.add_argument("--features", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    os.environ["RANKLOOP_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    import shutil

    from mlflow.tracking import MlflowClient

    from core.settings import Settings
    from registry import load, rollback
    from registry.promote import promote
    from registry.publish import publish

    settings = Settings()
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    text, names = _ranker_text(args.trees, args.leaves, args.features)
    experiment = client.create_experiment("rankloop")
    client.create_registered_model("rankloop.ranker")
    versions, publish_s = [], []
    for _ in range(2):
        run_id = client.create_run(experiment).info.run_id
        client.log_text(run_id, text, "ranker/model.txt")
        client.log_text(run_id, json.dumps({"name": "bench", "hash": "h", "features": names}), "ranker/feature_set.json")
        version = int(client.create_model_version("rankloop.ranker", f"runs:/{run_id}/ranker", run_id=run_id).version)
        start = time.perf_counter()
        publish("ranker", version, client=client, settings=settings)
        publish_s.append(time.perf_counter() - start)
        versions.append(version)
    v1, v2 = versions
    start = time.perf_counter()
    promote("ranker", v1, decision=None, actor="bench", reason="bench", forced=True, client=client, settings=settings)
    promote_first = time.perf_counter() - start
    cache = settings.cache_dir / "models" / "ranker"

    def cold() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        load("ranker", settings=settings, client=client)

    def flip() -> None:
        rollback("ranker", actor="bench", reason="bench flip", client=client, settings=settings)

    promote("ranker", v2, decision=None, actor="bench", reason="bench", forced=True, client=client, settings=settings)
    offline = Settings(home=home, mlflow_tracking_uri="http://127.0.0.1:9")
    results = {
        "model_txt_bytes": len(text.encode()),
        "publish_s": statistics.median(publish_s),
        "promote_first_s": promote_first,
        "rollback_s": _timed(flip, args.repeats),
        "load_cold_s": _timed(cold, args.repeats),
        "load_warm_s": _timed(lambda: load("ranker", settings=settings, client=client), args.repeats),
        "load_offline_s": _timed(lambda: load("ranker", settings=offline, probe_timeout=1.0), args.repeats),
    }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}, indent=2))
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
