"""Drift in every weekly run: the window's newest week (the test week) against the week before it.

Measured (``models.drift``: PSI, KS): every feature of the run's feature set (the top movers are
listed), the label rate, the impressions' click, success and mean reward, the event-type mix, the
action mix the Q policy logged, and the new ranker's score distribution. Logged to the run's
MLflow page (``drift.*`` metrics, ``drift/drift.json``, ``drift/drift.png``) and carried in the run
summary. With ``drift.hold_psi`` set, a PSI above it holds every version the run would promote
(the reason names what moved).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np

from core.settings import Settings

log = logging.getLogger(__name__)


def measure(settings: Settings, end: datetime, validated: Any, dataset: Any, model_path: Any) -> dict[str, Any]:
    """The drift report of a run (JSON-ready)."""
    from models.drift import feature_drift_of, numeric_psi
    from models.ranker import Ranker
    from rankloop.drift_events import event_drift

    bins, days = settings.drift.bins, settings.ranker.test_days
    cols = list(dataset.features)
    split = dataset.split
    # A few feature columns of each week at a time, then one week's matrix at a time: never the two weeks'
    # feature tables at once (~1 GB each at 10M rows, twice over while a frame became a matrix).
    moved = feature_drift_of(_column_pairs(split, cols), bins)
    ranker = Ranker.load(model_path)
    ref_scores, cur_scores = (_scores(ranker, split, part, cols) for part in ("valid", "test"))
    label_rate = {side: float((split.read(part, ["label"])["label"] > 0).mean())
                  for side, part in (("reference", "valid"), ("current", "test"))}
    events = event_drift(validated.events_path, end, days, settings.rewards)
    report = {
        "reference": "the week before the test week", "current": "the test week",
        "features": moved.head(settings.drift.top).to_dict("records"),
        "features_psi_max": float(moved["psi"].max()) if len(moved) else 0.0,
        "features_over_0.25": int((moved["psi"] > 0.25).sum()),
        "label_rate": label_rate,
        "event_mix": events["event_mix"],
        "action_mix": events["action_mix"],
        "scores": {"psi": numeric_psi(ref_scores, cur_scores, bins), "reference_mean": float(np.mean(ref_scores)),
                   "current_mean": float(np.mean(cur_scores)),
                   "reference_quantiles": np.quantile(ref_scores, [0.1, 0.5, 0.9]).tolist(),
                   "current_quantiles": np.quantile(cur_scores, [0.1, 0.5, 0.9]).tolist()},
        "rewards": events["rewards"],
    }
    report["_scores"] = (ref_scores, cur_scores)  # for the chart only, dropped before logging
    return report


# Feature columns read from each week at a time by the drift report. One: a column read alone costs what it costs
# read with others (8 columns of the 10M run's validation week: 0.40 s one by one, 0.42 s together), and 8 at a
# time held 16 columns of 3.9M rows (the two weeks at 10M interactions of a log without slates).
_DRIFT_COLUMNS_PER_READ = 1


def _column_pairs(split: Any, cols: list[str]) -> Any:
    """``(name, week before, test week)`` of each feature column, read ``_DRIFT_COLUMNS_PER_READ`` at a time."""
    for lo in range(0, len(cols), _DRIFT_COLUMNS_PER_READ):
        names = cols[lo:lo + _DRIFT_COLUMNS_PER_READ]
        ref, cur = split.read("valid", names), split.read("test", names)
        for name in names:
            yield name, ref[name], cur[name]
        del ref, cur


def _scores(ranker: Any, split: Any, part: str, cols: list[str]) -> np.ndarray:
    """The ranker's scores of a split part's rows: read a batch of rows at a time into the matrix LightGBM
    reads where the part is one file (``models.training.iter_matrix``: the same values ``Ranker.predict``
    makes of the frame; the week's matrix, ~2 GB at 30M interactions, is never whole), else from the
    part's frame."""
    from models.training import predict_in_batches

    if part in getattr(split, "paths", {}):
        return predict_in_batches(ranker.predict, split.iter_matrix(part, cols))[0]
    return ranker.predict(split.read(part, cols))


def over_threshold(report: dict[str, Any], hold_psi: float | None) -> list[str]:
    """What moved beyond ``hold_psi`` (empty: nothing, or no threshold)."""
    if hold_psi is None:
        return []
    found = [f"feature {f['feature']} PSI {f['psi']:.3f}" for f in report["features"] if f["psi"] > hold_psi]
    for name, value in (("event-type mix", report["event_mix"]["psi"]), ("Q action mix", report["action_mix"]["psi"]),
                        ("ranker score", report["scores"]["psi"])):
        if value is not None and np.isfinite(value) and value > hold_psi:
            found.append(f"{name} PSI {value:.3f}")
    return found


def chart(report: dict[str, Any], scores: tuple[np.ndarray, np.ndarray]) -> Any:
    """Four panels: top feature movers, event-type mix, score distributions, rates (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 8.5), layout="constrained")
    ax = fig.subplots(2, 2)
    top = report["features"][::-1]
    ax[0, 0].barh([f["feature"] for f in top], [f["psi"] for f in top], color="#4C72B0")
    for value, color in ((0.1, "#DD8452"), (0.25, "#C44E52")):
        ax[0, 0].axvline(value, color=color, linestyle="--", linewidth=1)
    ax[0, 0].set_title("top feature movers (PSI; 0.1 / 0.25 lines)")
    mix = report["event_mix"]
    kinds = sorted(set(mix["reference"]) | set(mix["current"]))
    x = np.arange(len(kinds))
    ax[0, 1].bar(x - 0.2, [mix["reference"].get(k, 0) for k in kinds], 0.4, label="week before")
    ax[0, 1].bar(x + 0.2, [mix["current"].get(k, 0) for k in kinds], 0.4, label="test week")
    ax[0, 1].set_xticks(x, kinds, rotation=45, ha="right")
    ax[0, 1].set_title(f"event-type mix (PSI {mix['psi']:.3f})")
    ax[0, 1].legend()
    ref_scores, cur_scores = scores
    edges = np.histogram_bin_edges(np.concatenate([ref_scores, cur_scores]), bins=40)
    ax[1, 0].hist(ref_scores, edges, alpha=0.55, density=True, label="week before")
    ax[1, 0].hist(cur_scores, edges, alpha=0.55, density=True, label="test week")
    ax[1, 0].set_title(f"ranker score distribution (PSI {report['scores']['psi']:.3f})")
    ax[1, 0].legend()
    rates = {"label rate": report["label_rate"], **{k.replace("_", " "): v for k, v in report["rewards"].items()
                                                     if k != "mean_reward"}}
    names = list(rates)
    x = np.arange(len(names))
    ax[1, 1].bar(x - 0.2, [rates[n]["reference"] or 0 for n in names], 0.4, label="week before")
    ax[1, 1].bar(x + 0.2, [rates[n]["current"] or 0 for n in names], 0.4, label="test week")
    ax[1, 1].set_xticks(x, names)
    action = report["action_mix"]["psi"]
    ax[1, 1].set_title("label and reward rates" + (f" (Q action mix PSI {action:.3f})" if action is not None else ""))
    ax[1, 1].legend()
    fig.suptitle("RankLoop drift: the test week against the week before")
    return fig


def metrics(report: dict[str, Any]) -> dict[str, float]:
    """The ``drift.*`` metrics of the run."""
    out = {"drift.features_psi_max": report["features_psi_max"], "drift.event_mix_psi": report["event_mix"]["psi"],
           "drift.score_psi": report["scores"]["psi"], "drift.label_rate_reference": report["label_rate"]["reference"],
           "drift.label_rate_current": report["label_rate"]["current"]}
    if report["action_mix"]["psi"] is not None:
        out["drift.action_mix_psi"] = report["action_mix"]["psi"]
    for name, pair in report["rewards"].items():
        for side in ("reference", "current"):
            if pair[side] is not None:
                out[f"drift.{name}_{side}"] = pair[side]
    for f in report["features"]:
        out[f"drift.psi.{f['feature']}"] = f["psi"]
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def check_drift(settings: Settings, ctx: Any, validated: Any, dataset: Any, trained: Any, candidates: list[Any],
                run_id: str | None) -> tuple[list[Any], dict[str, Any]]:
    """Measure drift, log it to the run, and hold every passing candidate when it is over ``drift.hold_psi``.

    Returns:
        The candidates (held ones replaced) and the drift summary for the run summary.
    """
    import mlflow

    from core.memory import release_memory

    release_memory()  # what the tables stage freed goes back before this stage reads its columns
    report = measure(settings, ctx.end, validated, dataset, trained.model_path)
    scores = report.pop("_scores")
    moved = over_threshold(report, settings.drift.hold_psi)
    report["hold_psi"], report["held"] = settings.drift.hold_psi, moved
    if run_id is not None:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(metrics(report))
            mlflow.log_dict(report, "drift/drift.json")
            mlflow.log_figure(chart(report, scores), "drift/drift.png")
            mlflow.set_tag("rankloop.drift", "held: " + "; ".join(moved) if moved else
                           f"max feature PSI {report['features_psi_max']:.3f}")
    if moved:
        candidates = [_hold(c, f"drift above hold_psi {settings.drift.hold_psi}: {', '.join(moved)}") for c in candidates]
    return candidates, summary(report)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The drift section of the run summary."""
    return {"features_psi_max": report["features_psi_max"],
            "top_movers": [{"feature": f["feature"], "psi": f["psi"]} for f in report["features"][:5]],
            "event_mix_psi": report["event_mix"]["psi"], "action_mix_psi": report["action_mix"]["psi"],
            "score_psi": report["scores"]["psi"], "label_rate": report["label_rate"], "rewards": report["rewards"],
            "held": report["held"]}


def _hold(candidate: Any, reason: str) -> Any:
    """A passing candidate held by drift: HOLD, the reason added to its decision record."""
    from rankloop.checks import rerecord
    from rankloop.promotion import Status
    from registry.decision import Decision, Verdict

    if candidate.status is not Status.PASSED:
        return candidate
    old = candidate.decision
    return rerecord(candidate, Decision(old.kind, Verdict.HOLD, (*old.reasons, reason), dict(old.figures),
                                        old.challenger_version, old.champion_version))
