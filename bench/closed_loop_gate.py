"""Were the weekly gate's verdicts right? Each closed-loop retrain judged against the hidden truth.

Reads what ``bench/closed_loop.py`` left in its work folder (each trained loop's data home: the
served log, every registered ranker, and the loop's weekly results). For every weekly retrain
that registered a challenger, the challenger and the champion it was judged against rank the
same requests: the first ``--days`` days after the retrain (the requests the winner would serve;
the simulator draws them from the seed and the day, whatever was served), each request's 100
retrieved candidates, features as of the retrain's window end. Each ranks its top 10, scored by
true NDCG@10 (``rankloop.serving_sim.true_ndcg``). The paired per-request difference, with a 95%
interval, says which model was truly better; the gate said PASS (promote) or HOLD.

    flock /tmp/rankloop-heavy.lock .venv/bin/python bench/closed_loop_gate.py --work /tmp/closed_loop \
        --out bench/results/closed_loop_gate.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

TRAINED = ("ranker", "blend", "blend_noexp")


def _ranker(client: Any, settings: Any, version: int) -> Any:
    from registry.cache import ModelCache
    from registry.loader import RankerAdapter
    from registry.store import read_manifest

    manifest = read_manifest(client, "ranker", version)
    path = ModelCache(settings.cache_dir / "models").ensure(client, "ranker", version, manifest)
    return RankerAdapter(path, manifest), manifest


def judge_loop(result: dict[str, Any], home: Path, days: int) -> list[dict[str, Any]]:
    """One row per weekly retrain of a loop: the verdict, and both models' true NDCG@10."""
    from mlflow import MlflowClient

    import features
    from core.settings import Settings
    from rankloop.serving_sim import ServeConfig, candidate_frame, context_at, day_rng, retrieve, true_ndcg
    from rankloop.simulator import day_requests

    settings = Settings(home=home)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    job = result["job"]
    start = datetime.fromisoformat(job["start"])
    config = ServeConfig(seed=job["seed"])
    out = []
    models: dict[int, Any] = {}
    for row in result["weeks"]:
        retrain = row.get("retrain") or {}
        challenger = retrain.get("version")
        served = row["serving"]["ranker"][0]  # the champion of the week the gate judged on
        champion = int(re.match(r"ranker:(\d+)@", served).group(1))
        if challenger is None or challenger == champion:
            out.append({"week": row["week"], "verdict": retrain.get("verdict"), "skipped": "no new version"})
            continue
        end = start + timedelta(days=7 * row["week"])
        ctx = context_at(settings, end)
        scores: dict[int, list[np.ndarray]] = {champion: [], challenger: []}
        for d in range(days):
            day = end + timedelta(days=d)
            rng = day_rng(config, day)
            requests = day_requests(ctx.world, ctx.simulation, day, 0, rng)
            candidates = retrieve(ctx.world, len(requests), max(config.candidates, ctx.simulation.slate_size), rng)
            frame = candidate_frame(ctx.world, requests, candidates)
            built: dict[str, Any] = {}
            for version in (champion, challenger):
                if version not in models:
                    models[version] = _ranker(client, settings, version)
                model, manifest = models[version]
                fset = manifest["feature_set"]
                if fset["name"] not in built:
                    built[fset["name"]] = features.build_features(
                        frame, ctx.history, items=ctx.items, users=ctx.users, settings=settings.features,
                        feature_set=fset["name"])
                score = np.asarray(model.predict(built[fset["name"]][list(fset["features"])]), float)
                order = np.argsort(-score.reshape(len(requests), -1), axis=1, kind="stable")[:, :ctx.simulation.slate_size]
                scores[version].append(true_ndcg(ctx.world, requests, candidates,
                                                 np.take_along_axis(candidates, order, axis=1)))
        a, b = np.concatenate(scores[challenger]), np.concatenate(scores[champion])
        diff = a - b
        half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
        truth = "better" if diff.mean() - half > 0 else "worse" if diff.mean() + half < 0 else "equivalent"
        out.append({"week": row["week"], "verdict": retrain.get("verdict"), "promoted": retrain.get("promoted"),
                    "champion": champion, "challenger": challenger, "requests": int(len(diff)),
                    "logged_reason": (retrain.get("reasons") or [""])[0],
                    "true_ndcg_champion": float(b.mean()), "true_ndcg_challenger": float(a.mean()),
                    "difference": float(diff.mean()), "low": float(diff.mean() - half),
                    "high": float(diff.mean() + half), "truly": truth})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/closed_loop"))
    parser.add_argument("--days", type=int, default=2, help="Days of requests after each retrain to rank.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    began = time.perf_counter()
    rows = []
    for path in sorted((args.work / "results").glob("*.json")):
        result = json.loads(path.read_text())
        job = result["job"]
        if job["policy"] not in TRAINED or not result.get("weeks"):
            continue
        name = path.stem
        for row in judge_loop(result, args.work / "homes" / name, args.days):
            rows.append({"loop": name, "policy": job["policy"], "variant": job["variant"], "seed": job["seed"], **row})
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()
                              if k != "logged_reason"}), flush=True)
    judged = [r for r in rows if "truly" in r]
    table: dict[str, dict[str, int]] = {}
    for r in judged:
        verdict = "PASS" if r["verdict"] == "PASS" else "HOLD"
        table.setdefault(verdict, {}).setdefault(r["truly"], 0)
        table[verdict][r["truly"]] += 1
    from core.version import code_version

    summary = {"command": f"bench/closed_loop_gate.py --work {args.work} --days {args.days}"
                          + (f" --out {args.out}" if args.out else ""),
               "commit": code_version(), "seconds": round(time.perf_counter() - began),
               "retrains": len(rows), "judged": len(judged), "verdict_vs_truth": table, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({"judged": len(judged), "verdict_vs_truth": table}))
    for variant in sorted({r["variant"] for r in judged}):
        sub = [r for r in judged if r["variant"] == variant]
        passed = [r for r in sub if r["verdict"] == "PASS"]
        print(f"position_bias={variant}: {len(sub)} challengers, PASS {len(passed)} "
              f"(truly better {sum(r['truly'] == 'better' for r in passed)}, worse {sum(r['truly'] == 'worse' for r in passed)}); "
              f"HOLD {len(sub) - len(passed)} (truly better {sum(r['truly'] == 'better' for r in sub if r['verdict'] != 'PASS')})")


if __name__ == "__main__":
    main()
