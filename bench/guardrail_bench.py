"""The guardrail's false-revert rate on equal-quality releases and its days to detect a bad one.

One simulated world is trained once (the weekly retrain: ranker v1). Two releases are then
force-promoted over v1, each in its own copy of the data home:

* **equal**: the champion's own model registered again (an A/A release: any revert is false);
* **bad**: a ranker trained on shuffled labels (``rankloop.demo.bad_release``).

For each seed, a copy of each home serves ``--days`` days (``rankloop.serving_sim``, seed = the
traffic's randomness: who asks, Thompson draws, exploration, responses) and the guardrail judges
after every day (``dry_run``: the verdict a daily run would act on; the first ``would_revert`` is
when it would revert). Reported: the equal release's false-revert rate, the bad release's
detection rate and days to detect, per-seed verdicts.

    flock /tmp/rankloop-heavy.lock .venv/bin/python bench/guardrail_bench.py --work /tmp/guardbench \
        --seeds 20 --days 5 --out bench/results/guardrail.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from datetime import UTC, date, datetime
from pathlib import Path

END = datetime(2026, 11, 16, tzinfo=UTC)


def _use(home: Path) -> object:
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from core.runtime import apply_environment
    from core.settings import Settings

    os.environ["RANKLOOP_HOME"] = str(home)
    tracking_utils._tracking_uri = None
    registry_utils._registry_uri = None
    settings = Settings()
    apply_environment(settings)
    return settings


def base_home(work: Path, users: int) -> Path:
    """A simulated source and its first weekly retrain (ranker v1 champion)."""
    from flows.weekly import weekly_retrain
    from rankloop.demo import ensure_demo_source
    from rankloop.simulator import SimulationConfig

    home = work / "base"
    if (home / "trained").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    os.environ.setdefault("RANKLOOP_RANKER__N_ESTIMATORS", "120")
    settings = _use(home)
    ensure_demo_source(settings, SimulationConfig(n_users=users, n_items=120, weeks=5, requests_per_user_week=3.0,
                                                  end=END, seed=5))
    weekly_retrain(window_end=date(2026, 11, 16))
    (home / "trained").touch()
    return home


def release_home(work: Path, base: Path, quality: str) -> Path:
    """A copy of ``base`` with an equal or a bad ranker force-promoted over v1."""
    from rankloop import demo

    home = work / quality
    if (home / "released").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(base, home)
    settings = _use(home)
    if quality == "bad":
        demo.bad_release(settings)
    else:
        ranker, feature_set = demo.copy_of_champion(settings)
        version = demo.register_ranker(settings, ranker, feature_set, note="bench: equal release (the champion again)")
        demo.force_release(settings, version, reason="drill: equal-quality release (A/A)")
    (home / "released").touch()
    return home


def run_seed(work: Path, release: Path, seed: int, days: int) -> dict:
    """Serve ``days`` days with traffic seed ``seed``; the guardrail's dry-run verdict after each day."""
    from rankloop.guard import run_guard
    from rankloop.serving_sim import ServeConfig, serve

    home = work / f"{release.name}-{seed}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(release, home)
    settings = _use(home)
    verdicts = []
    for _ in range(days):
        serve(settings, 1, ServeConfig(seed=seed))
        verdict = run_guard(settings, ("ranker",), dry_run=True)[0]
        verdicts.append({"status": verdict.status, "p_value": verdict.figures.get("p_value"),
                         "difference": verdict.figures.get("difference"),
                         "requests": [verdict.figures.get("requests_champion"), verdict.figures.get("requests_previous")]})
    shutil.rmtree(home, ignore_errors=True)
    first = next((d + 1 for d, v in enumerate(verdicts) if v["status"] == "would_revert"), None)
    return {"seed": seed, "reverted_on_day": first, "verdicts": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(args.work / "prefect"))
    began = time.perf_counter()
    base = base_home(args.work, args.users)
    results = {}
    for quality in ("equal", "bad"):
        home = release_home(args.work, base, quality)
        results[quality] = [run_seed(args.work, home, seed, args.days) for seed in range(args.seeds)]
        print(quality, [r["reverted_on_day"] for r in results[quality]], flush=True)
    equal = [r["reverted_on_day"] for r in results["equal"]]
    bad = [r["reverted_on_day"] for r in results["bad"]]
    detected = [d for d in bad if d is not None]
    summary = {
        "seeds": args.seeds, "days": args.days, "users": args.users,
        "false_reverts": sum(d is not None for d in equal), "false_revert_rate": sum(d is not None for d in equal) / len(equal),
        "bad_detected": len(detected), "bad_days_to_detect": {"min": min(detected, default=None),
                                                               "median": sorted(detected)[len(detected) // 2] if detected else None,
                                                               "max": max(detected, default=None)},
        "seconds": round(time.perf_counter() - began, 1), "results": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
