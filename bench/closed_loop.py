"""Closed-loop study: what a weekly retrain buys when its own slates make next week's training data.

For each seed, the simulator draws a world (users with hidden tastes, items) and five weeks of
history logged by a popularity policy. Then the same simulated users (same requests, same
candidates each day, whatever the policy) are served for ``--weeks`` weeks by each policy:

* ``random``: a uniformly random order of the request's 100 retrieved candidates;
* ``popularity``: the candidates ordered by their clicks in the feature window (updated daily);
* ``ranker``: the champion LightGBM ranker alone (``rankloop.serving_sim``, no bandit, no exploration);
* ``blend``: 0.6 x ranker relevance + 0.4 x a Thompson draw from the champion bandit, 15% exploration
  per slot (the Thompson seed's recipe, ``serving.reference.ServingConfig()``);
* ``blend_noexp``: the same blend without exploration.

The three trained policies start from the champions of a real ``weekly_retrain`` flow run on the
history and, after each served week, the real flow (Prefect, MLflow, the gates) retrains on what
that policy served and promotes only what passes; each runs once per position-bias setting
(``ranker.position_bias``: ``none`` and ``lightgbm``).

Measured per served week against the simulator's hidden relevance: the click rate (clicks per
impression) and the true NDCG@10 of the slate (gain ``sigmoid(relevance)``, the click probability
once examined; the ideal is the best 10 of the request's candidates). Figures are means over seeds
with 95% t-intervals; lifts over popularity are paired per seed.

    flock /tmp/rankloop-heavy.lock .venv/bin/python bench/closed_loop.py --seeds 5 --weeks 8 --jobs 2 \
        --work /tmp/closed_loop --out bench/results/closed_loop.json --charts docs

Each loop's weeks are written to ``<work>/results`` as they finish; ``--report-only`` rebuilds the
summary and the charts from there.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

TRAINED = ("ranker", "blend", "blend_noexp")
GUARDED_HOLDBACK = 0.2  # serving's default: each kind's previous version serves 20% of requests
FIXED = ("random", "popularity")
POLICIES = (*FIXED, *TRAINED)
VARIANTS = ("none", "lightgbm")
LIFT_WEEKS = (1, 4, 8)
HISTORY_WEEKS = 5
REPO = Path(__file__).resolve().parents[1]


# --- one loop (in its own process) --------------------------------------------------------------
def _blend(policy: str) -> Any:
    from serving.reference import ServingConfig

    return {"ranker": ServingConfig(similarity_weight=1.0, bandit_weight=0.0, exploration_rate=0.0),
            "blend": ServingConfig(),
            "blend_noexp": ServingConfig(exploration_rate=0.0)}[policy]


def _world_config(job: dict[str, Any]) -> Any:
    from rankloop.simulator import SimulationConfig

    return SimulationConfig(n_users=job["users"], n_items=job["items"], weeks=HISTORY_WEEKS, seed=job["seed"],
                            end=datetime.fromisoformat(job["start"]))


def prepare(job: dict[str, Any]) -> dict[str, Any]:
    """Simulate the seed's history into a new home and run the real weekly flow once on it."""
    from core.runtime import apply_environment
    from core.settings import load_settings
    from rankloop.demo import ensure_demo_source

    settings = load_settings()
    apply_environment(settings)
    ensure_demo_source(settings, _world_config(job))
    if job["variant"] is None:
        return {"job": job}
    from flows.weekly import weekly_retrain

    summary = weekly_retrain(window_end=date.fromisoformat(job["start"][:10]))
    return {"job": job, "week0": _flow_figures(summary)}


def run_loop(job: dict[str, Any], out: Path) -> dict[str, Any]:
    """Serve ``job['weeks']`` weeks with one policy, retraining after each week when it is a trained one."""
    from core.runtime import apply_environment
    from core.settings import load_settings
    from rankloop.serving_sim import ServeConfig, live_arms, record_served, serving_state

    settings = load_settings()
    apply_environment(settings)
    ctx, start, first = serving_state(settings)
    policy, trained = job["policy"], job["policy"] in TRAINED
    holdback = GUARDED_HOLDBACK if job.get("guarded") else 0.0
    config = ServeConfig(seed=job["seed"], holdback=holdback, blend=_blend(policy) if trained else _blend("blend"))
    result: dict[str, Any] = {"job": job, "weeks": []}
    for week in range(1, job["weeks"] + 1):
        began = time.perf_counter()
        tally = {"requests": 0, "impressions": 0, "clicks": 0, "ndcg_sum": 0.0}
        guard_events: list[str] = []
        for d in range(7):
            arms = live_arms(settings, holdback) if trained else None  # daily: the guardrail may have moved them
            if arms is not None and policy == "ranker":
                arms = {"ranker": arms["ranker"]}
            day = start + timedelta(days=7 * (week - 1) + d)
            table, requests, candidates, shown = _serve_day(ctx, arms, settings, config, policy, day, first)
            _score(tally, ctx.world, table, requests, candidates, shown)
            first += len(requests)
            if trained:
                from rankloop.serving_sim import demo_uri
                from sources import write_table

                write_table(demo_uri(settings), "interactions", table, mode="append")
            from rankloop.serving_sim import advance

            ctx.history = advance(ctx.history, table, day + timedelta(days=1), settings.window.history_days)
            if job.get("guarded"):
                from rankloop.guard import run_guard

                kinds = ("ranker",) if policy == "ranker" else ("ranker", "bandit")
                for verdict in run_guard(settings, kinds, now=day + timedelta(hours=23)):
                    if verdict.status == "reverted":
                        guard_events.append(f"{day.date()} {verdict.kind} v{verdict.champion} -> v{verdict.previous}")
        week_end = start + timedelta(days=7 * week)
        row: dict[str, Any] = {"week": week, "requests": tally["requests"], "impressions": tally["impressions"],
                               "click_rate": tally["clicks"] / max(tally["impressions"], 1),
                               "true_ndcg_at_10": tally["ndcg_sum"] / max(tally["requests"], 1),
                               "serving": (arms and {k: [a.served.tag() for a in v] for k, v in arms.items()}) or policy,
                               "serve_seconds": round(time.perf_counter() - began, 1)}
        if job.get("guarded"):
            row["guardrail_reverts"] = guard_events
        if trained:
            record_served(settings, week_end, first)
            from flows.weekly import weekly_retrain

            t0 = time.perf_counter()
            row["retrain"] = _flow_figures(weekly_retrain(window_end=week_end.date()))
            row["retrain"]["seconds"] = round(time.perf_counter() - t0, 1)
        result["weeks"].append(row)
        _write_json(out, result)
        print(json.dumps({"loop": _name(job), **{k: v for k, v in row.items() if k != "serving"}}), flush=True)
    return result


def _serve_day(ctx: Any, arms: Any, settings: Any, config: Any, policy: str, day: datetime,
               first: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """One day's events, requests, candidates and slates under ``policy``. Every policy draws the
    same requests and candidates for the same seed and day (the day's stream starts the same)."""
    from rankloop.serving_sim import day_rng, retrieve, serve_day_detail
    from rankloop.simulator import day_requests, respond

    if arms is not None:
        served = serve_day_detail(ctx, arms, settings, config, day, first)
        return served.table, served.requests, served.candidates, served.shown
    rng = day_rng(config, day)
    requests = day_requests(ctx.world, ctx.simulation, day, first, rng)
    n, k = len(requests), ctx.simulation.slate_size
    candidates = retrieve(ctx.world, n, max(config.candidates, k), rng) if n else np.zeros((0, k), int)
    if policy == "random":
        order = np.argsort(rng.random(candidates.shape), axis=1)[:, :k]
        propensity = np.full((n, k), 1.0 / candidates.shape[1])
    else:  # popularity: clicks per item in the feature window, ties in retrieval order
        history = ctx.history
        clicks = history.loc[history["event_type"] == "click", "item_id"].str[1:].astype(int).value_counts()
        count = np.zeros(len(ctx.world.item_quality))
        count[clicks.index.to_numpy()] = clicks.to_numpy()
        order = np.argsort(-count[candidates], axis=1, kind="stable")[:, :k]
        propensity = np.ones((n, k))
    shown = np.take_along_axis(candidates, order, axis=1)
    table = respond(ctx.world, ctx.simulation, requests, shown, propensity, np.full(n, policy, dtype=object), rng)
    return table, requests, candidates, shown


def _score(tally: dict[str, Any], world: Any, table: Any, requests: Any, candidates: np.ndarray,
           shown: np.ndarray) -> None:
    """Add a day's requests, impressions, clicks and true NDCG@10 sum to ``tally``."""
    import pyarrow.compute as pc

    from rankloop.serving_sim import true_ndcg

    n = len(shown)
    if n == 0:
        return
    tally["ndcg_sum"] += float(true_ndcg(world, requests, candidates, shown).sum())
    kinds = table["event_type"]
    tally["requests"] += n
    tally["impressions"] += int(pc.sum(pc.equal(kinds, "impression")).as_py() or 0)
    tally["clicks"] += int(pc.sum(pc.equal(kinds, "click")).as_py() or 0)


def _flow_figures(summary: dict[str, Any]) -> dict[str, Any]:
    tables = summary.get("tables") or {}
    return {"status": summary.get("status"), "verdict": summary.get("verdict"), "reasons": summary.get("reasons"),
            "promoted": summary.get("promoted"),
            "version": summary.get("version"), "champion_after": summary.get("champion_after"),
            "test_ndcg_at_10": summary.get("ndcg_at_10"), "popularity_ndcg_at_10": summary.get("popularity_ndcg_at_10"),
            "best_iteration": summary.get("best_iteration"),
            "tables": {kind: info.get("status") or info.get("verdict") for kind, info in tables.items()}}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def _arm(job: dict[str, Any]) -> str:
    return (job["policy"] + (f"/{job['variant']}" if job.get("variant") else "")
            + ("+guardrail" if job.get("guarded") else ""))


def _name(job: dict[str, Any]) -> str:
    return (f"s{job['seed']}-{job['policy']}" + (f"-{job['variant']}" if job.get("variant") else "")
            + ("-guarded" if job.get("guarded") else ""))


# --- orchestration ------------------------------------------------------------------------------
def _worker_main(argv: list[str]) -> None:
    job = json.loads(argv[0])
    out = Path(argv[1])
    result = prepare(job) if job["policy"] == "prepare" else run_loop(job, out)
    _write_json(out, result)


def _launch(job: dict[str, Any], work: Path, slots: queue.Queue, extra_env: dict[str, str]) -> dict[str, Any]:
    out = work / "results" / f"{_name(job)}.json"
    if out.exists() and (job["policy"] == "prepare" or len(json.loads(out.read_text()).get("weeks", [])) == job["weeks"]):
        return json.loads(out.read_text())  # done by an earlier invocation
    slot = slots.get()
    try:
        env = os.environ | extra_env | {
            "RANKLOOP_HOME": str(job["home"]), "PREFECT_HOME": str(work / f"prefect-{slot}"),
            "RANKLOOP_RANKER__POSITION_BIAS": job.get("variant") or "none", "PYTHONPATH": str(REPO)}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("PREFECT_API_URL", None)
        log = (work / "logs" / f"{_name(job)}.log").open("w")
        done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job), str(out)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"{_name(job)} failed (exit {done.returncode}); see {log.name}")
        return json.loads(out.read_text())
    finally:
        slots.put(slot)


def run(args: argparse.Namespace) -> None:
    work: Path = args.work
    (work / "results").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    start = args.end - timedelta(weeks=args.weeks)
    slots: queue.Queue = queue.Queue()
    for i in range(args.jobs):
        slots.put(i)
    extra = ({"RANKLOOP_RANKER__NUM_THREADS": "1"} if args.jobs > 1 else {}) | dict(
        item.split("=", 1) for item in args.setting)
    base = {"users": args.users, "items": args.items, "start": start.isoformat(), "weeks": args.weeks}
    policies = [p for p in args.policies.split(",") if p]
    variants = [v for v in args.variants.split(",") if v]
    began = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        prepared: dict[tuple[int, str | None], Future] = {}
        for seed in range(args.seeds):
            for variant in (*variants, None):
                home = work / "homes" / f"s{seed}-base-{variant or 'fixed'}"
                job = base | {"seed": seed, "policy": "prepare", "variant": variant, "home": str(home)}
                prepared[(seed, variant)] = pool.submit(_launch, job, work, slots, extra)
        loops = []
        for seed in range(args.seeds):
            for policy in policies:
                for variant in (variants if policy in TRAINED else [None]):
                    job = base | {"seed": seed, "policy": policy, "variant": variant}
                    if args.guarded and policy in TRAINED:
                        job["guarded"] = True
                    loops.append(pool.submit(_loop_after, prepared[(seed, variant)], job, work, slots, extra))
        for future in loops:
            future.result()
    print(f"all loops done in {time.perf_counter() - began:.0f} s", flush=True)


def _loop_after(prep: Future, job: dict[str, Any], work: Path, slots: queue.Queue,
                extra: dict[str, str]) -> dict[str, Any]:
    base_home = Path(prep.result()["job"]["home"])
    home = work / "homes" / _name(job)
    out = work / "results" / f"{_name(job)}.json"
    if not (out.exists() and len(json.loads(out.read_text()).get("weeks", [])) == job["weeks"]):
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(base_home, home, ignore=shutil.ignore_patterns("locks"))
    return _launch(job | {"home": str(home)}, work, slots, extra)


# --- report -------------------------------------------------------------------------------------
def _interval(values: list[float]) -> dict[str, float]:
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(len(x))}


def report(work: Path, weeks: int) -> dict[str, Any]:
    """Per arm (policy and position setting) and week: click rate and true NDCG@10 over seeds; lifts."""
    loops = [json.loads(p.read_text()) for p in sorted((work / "results").glob("*.json"))]
    loops = [x for x in loops if x["job"]["policy"] != "prepare" and len(x.get("weeks", [])) == weeks]
    seeds_of: dict[str, dict[int, list[dict]]] = {}
    for loop in loops:
        job = loop["job"]
        arm = _arm(job)
        seeds_of.setdefault(arm, {})[job["seed"]] = loop["weeks"]
    popularity = seeds_of.get("popularity", {})
    arms: dict[str, Any] = {}
    for arm, by_seed in sorted(seeds_of.items()):
        rows = []
        for w in range(weeks):
            row: dict[str, Any] = {"week": w + 1}
            for metric in ("click_rate", "true_ndcg_at_10"):
                row[metric] = _interval([s[w][metric] for s in by_seed.values()])
                paired = [by_seed[s][w][metric] / popularity[s][w][metric] - 1 for s in by_seed if s in popularity]
                row[f"{metric}_lift_over_popularity"] = _interval(paired) if paired else None
            retrains = [s[w].get("retrain") for s in by_seed.values() if s[w].get("retrain")]
            if retrains:
                row["ranker_promoted"] = sum(bool(r["promoted"]) for r in retrains)
                row["retrains"] = len(retrains)
                row["logged_test_ndcg_at_10"] = _interval([r["test_ndcg_at_10"] for r in retrains])
            rows.append(row)
        arms[arm] = {"seeds": sorted(by_seed), "weeks": rows}
    return {"arms": arms}


def charts(summary: dict[str, Any], folder: Path) -> list[str]:
    """One PNG per question: quality over weeks, clicks over weeks, exploration, position correction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    colours = {"random": "0.6", "popularity": "k", "ranker": "tab:blue", "blend": "tab:orange",
               "blend_noexp": "tab:green"}
    written = []

    def by_week(ax: Any, metric: str, title: str) -> None:
        for arm, data in arms.items():
            if "+guardrail" in arm:  # a question of its own (docs/learning.md), not these charts'
                continue
            policy, _, variant = arm.partition("/")
            weeks = [r["week"] for r in data["weeks"]]
            mean = [r[metric]["mean"] for r in data["weeks"]]
            ax.plot(weeks, mean, color=colours.get(policy, "tab:red"), linestyle="--" if variant == "none" else "-",
                    marker="o", markersize=3, label=arm)
            ax.fill_between(weeks, [r[metric]["low"] for r in data["weeks"]], [r[metric]["high"] for r in data["weeks"]],
                            color=colours.get(policy, "tab:red"), alpha=0.12)
        ax.set_xlabel("served week")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)

    for metric, name, title in (
            ("true_ndcg_at_10", "closed_loop_ndcg.png", "True NDCG@10 of served slates (mean, 95% CI over seeds)"),
            ("click_rate", "closed_loop_clicks.png", "Click rate per impression (mean, 95% CI over seeds)")):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        by_week(ax, metric, title)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(name)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (question, pairs) in zip(axes, (
            ("Exploration: blend (15%) minus blend without", [("blend/" + v, "blend_noexp/" + v) for v in VARIANTS]),
            ("Position correction: lightgbm minus none", [(p + "/lightgbm", p + "/none") for p in TRAINED])),
            strict=True):
        for a, b in pairs:
            if a not in arms or b not in arms:
                continue
            seeds = sorted(set(arms[a]["seeds"]) & set(arms[b]["seeds"]))
            loops_a, loops_b = _per_seed(summary, a), _per_seed(summary, b)
            weeks = list(range(1, len(arms[a]["weeks"]) + 1))
            stats = [_interval([loops_a[s][w - 1]["true_ndcg_at_10"] - loops_b[s][w - 1]["true_ndcg_at_10"] for s in seeds])
                     for w in weeks]
            ax.errorbar(weeks, [x["mean"] for x in stats],
                        yerr=[[x["mean"] - x["low"] for x in stats], [x["high"] - x["mean"] for x in stats]],
                        marker="o", markersize=3, capsize=2, label=f"{a} - {b}")
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_title(question, fontsize=9)
        ax.set_xlabel("served week")
        ax.set_ylabel("difference in true NDCG@10 (paired, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "closed_loop_differences.png", dpi=110)
    plt.close(fig)
    written.append("closed_loop_differences.png")
    return written


PAIRS = {
    "exploration (15% minus none)": [(f"blend/{v}", f"blend_noexp/{v}") for v in VARIANTS],
    "position correction (lightgbm minus none)": [(f"{p}/lightgbm", f"{p}/none") for p in TRAINED],
    "bandit in the blend (blend without exploration minus ranker alone)": [(f"blend_noexp/{v}", f"ranker/{v}")
                                                                          for v in VARIANTS],
}


def paired(loops: dict[str, dict[int, list[dict]]], weeks: int) -> dict[str, Any]:
    """Per question and pair of arms: the per-seed difference in true NDCG@10 and click rate by week."""
    out: dict[str, Any] = {}
    for question, pairs in PAIRS.items():
        for a, b in pairs:
            if a not in loops or b not in loops:
                continue
            seeds = sorted(set(loops[a]) & set(loops[b]))
            out.setdefault(question, {})[f"{a} - {b}"] = [
                {"week": w + 1, **{metric: _interval([loops[a][s][w][metric] - loops[b][s][w][metric] for s in seeds])
                                   for metric in ("true_ndcg_at_10", "click_rate")}}
                for w in range(weeks)]
    for arm, by_seed in sorted(loops.items()):  # does serving get better as the loop runs?
        out.setdefault("change since week 1", {})[f"{arm}: week w - week 1"] = [
            {"week": w + 1, **{metric: _interval([by_seed[s][w][metric] - by_seed[s][0][metric] for s in by_seed])
                               for metric in ("true_ndcg_at_10", "click_rate")}}
            for w in range(weeks)]
    return out


def _per_seed(summary: dict[str, Any], arm: str) -> dict[int, list[dict]]:
    return summary["_loops"][arm]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(REPO))
        _worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--end", type=lambda s: datetime.fromisoformat(s).replace(tzinfo=UTC),
                        default=datetime(2026, 11, 30, tzinfo=UTC), help="Monday that ends the last served week.")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2, help="Loops run side by side (each its own process).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/closed_loop"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--charts", type=Path, help="Folder for the PNG charts.")
    parser.add_argument("--setting", action="append", default=[], metavar="RANKLOOP_X=VALUE",
                        help="A setting (environment variable) of every run of the study; repeatable.")
    parser.add_argument("--guarded", action="store_true",
                        help="Trained policies serve with a 20%% holdback and the guardrail judges them daily.")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    began = time.perf_counter()
    if not args.report_only:
        run(args)
    summary = report(args.work, args.weeks)
    summary["_loops"] = _loops(args.work, args.weeks)
    summary["paired"] = paired(summary["_loops"], args.weeks)
    written = charts(summary, args.charts) if args.charts else []
    summary.pop("_loops")
    from core.version import code_version

    given = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False)
                     and k != "report_only")
    summary = {"command": f"bench/closed_loop.py {given}", "commit": code_version(),
               "seconds": round(time.perf_counter() - began), "charts": written, **summary}
    if args.out:
        _write_json(args.out, summary)
    _print_tables(summary)


def _loops(work: Path, weeks: int) -> dict[str, dict[int, list[dict]]]:
    out: dict[str, dict[int, list[dict]]] = {}
    for p in sorted((work / "results").glob("*.json")):
        loop = json.loads(p.read_text())
        job = loop["job"]
        if job["policy"] == "prepare" or len(loop.get("weeks", [])) != weeks:
            continue
        arm = _arm(job)
        out.setdefault(arm, {})[job["seed"]] = loop["weeks"]
    return out


def _print_tables(summary: dict[str, Any]) -> None:
    def ci(x: dict[str, float] | None, scale: float = 1.0, digits: int = 4) -> str:
        if not x:
            return "-"
        return f"{x['mean'] * scale:.{digits}f} [{x['low'] * scale:.{digits}f}, {x['high'] * scale:.{digits}f}]"

    arms = summary["arms"]
    print("\n| arm | seeds | " + " | ".join(f"week {w} true NDCG@10" for w in LIFT_WEEKS) + " |")
    print("| --- | --- |" + " --- |" * len(LIFT_WEEKS))
    for arm, data in arms.items():
        cells = [ci(data["weeks"][w - 1]["true_ndcg_at_10"]) if w <= len(data["weeks"]) else "-" for w in LIFT_WEEKS]
        print(f"| {arm} | {len(data['seeds'])} | " + " | ".join(cells) + " |")
    print("\n| arm | " + " | ".join(f"week {w} click rate" for w in LIFT_WEEKS) + " |")
    print("| --- |" + " --- |" * len(LIFT_WEEKS))
    for arm, data in arms.items():
        cells = [ci(data["weeks"][w - 1]["click_rate"], 100, 2) if w <= len(data["weeks"]) else "-" for w in LIFT_WEEKS]
        print(f"| {arm} | " + " | ".join(cells) + " |")
    print("\n| arm | " + " | ".join(f"week {w} lift over popularity: NDCG / clicks (%)" for w in LIFT_WEEKS) + " |")
    print("| --- |" + " --- |" * len(LIFT_WEEKS))
    for arm, data in arms.items():
        cells = []
        for w in LIFT_WEEKS:
            if w > len(data["weeks"]):
                cells.append("-")
                continue
            row = data["weeks"][w - 1]
            cells.append(f"{ci(row['true_ndcg_at_10_lift_over_popularity'], 100, 1)} / "
                         f"{ci(row['click_rate_lift_over_popularity'], 100, 1)}")
        print(f"| {arm} | " + " | ".join(cells) + " |")
    for question, pairs in summary.get("paired", {}).items():
        print(f"\n| {question} | " + " | ".join(f"week {w}: NDCG@10 / clicks (pp)" for w in LIFT_WEEKS) + " |")
        print("| --- |" + " --- |" * len(LIFT_WEEKS))
        for pair, rows in pairs.items():
            cells = [f"{ci(rows[w - 1]['true_ndcg_at_10'])} / {ci(rows[w - 1]['click_rate'], 100, 2)}"
                     if w <= len(rows) else "-" for w in LIFT_WEEKS]
            print(f"| {pair} | " + " | ".join(cells) + " |")
    print("\n| arm | promoted rankers / retrains | logged test NDCG@10 (week 1, 8) |")
    print("| --- | --- | --- |")
    for arm, data in arms.items():
        if "retrains" not in data["weeks"][0]:
            continue
        promoted = sum(r.get("ranker_promoted", 0) for r in data["weeks"])
        total = sum(r.get("retrains", 0) for r in data["weeks"])
        print(f"| {arm} | {promoted} / {total} | {ci(data['weeks'][0]['logged_test_ndcg_at_10'])}, "
              f"{ci(data['weeks'][-1]['logged_test_ndcg_at_10'])} |")


if __name__ == "__main__":
    main()
