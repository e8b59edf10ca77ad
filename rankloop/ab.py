"""The A/B report of live arms: what each served version's own traffic did.

From the source's logs (impressions with the ``policy_version`` of :mod:`rankloop.releases` and the
responses attributed to them, ``models.rewards.impression_rewards``), one row per served request:
its impressions, clicked impressions and engaged impressions (reward above
``rewards.success_threshold``). The unit of every interval and test is the request: responses
within one slate are not independent.

* per ``policy_version``: requests, impressions, click and engagement rates with 95% intervals;
* per kind and release: each arm (the champion and its previous version, served concurrently to
  the holdback share) and the champion's difference with a Welch t-test (a fixed-horizon test for
  a report; the guardrail's decision uses the always-valid test of :mod:`models.sequential`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from core.settings import Settings
from rankloop.releases import parse_policy

log = logging.getLogger(__name__)

METRICS = ("click_rate", "engagement_rate")
_EVENT_COLUMNS = ("user_id", "item_id", "event_type", "ts", "value", "request_id", "position", "propensity",
                  "policy_version")


def read_requests(settings: Settings, start: datetime, end: datetime) -> pd.DataFrame:
    """The served requests of ``[start, end)`` in the configured source, one row each (:func:`request_outcomes`)."""
    import pyarrow.parquet as pq

    from core.errors import ContractViolation, Reason
    from rankloop import stages

    try:
        extracted = stages.extract(settings, start, end, catalog=False)
    except ContractViolation as e:
        if e.reason is not Reason.EMPTY:
            raise
        return request_outcomes(pd.DataFrame(), settings)  # no traffic in the window
    names = set(pq.read_schema(extracted.snapshot_path).names)
    events = pq.read_table(extracted.snapshot_path, columns=[c for c in _EVENT_COLUMNS if c in names]).to_pandas()
    return request_outcomes(events, settings)


def request_outcomes(events: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """One row per request with a policy_version: ``request_id``, ``ts`` (its first impression),
    ``policy_version``, ``impressions``, ``clicks``, ``engaged``, ``click_rate``, ``engagement_rate``."""
    from models.rewards import impression_rewards

    columns = ["request_id", "ts", "policy_version", "impressions", "clicks", "engaged", *METRICS]
    if events.empty or "policy_version" not in events.columns:
        return pd.DataFrame(columns=columns)
    imps = impression_rewards(events, settings.rewards)
    imps = imps[imps["policy_version"].notna()]
    grouped = imps.groupby("request_id", sort=False)
    out = pd.DataFrame({"ts": grouped["ts"].min(), "policy_version": grouped["policy_version"].first(),
                        "impressions": grouped.size(), "clicks": grouped["clicked"].sum(),
                        "engaged": grouped["success"].sum()}).reset_index()
    out["click_rate"] = out["clicks"] / out["impressions"]
    out["engagement_rate"] = out["engaged"] / out["impressions"]
    out["ts"] = pd.to_datetime(out["ts"], utc=True)
    return out.sort_values("ts", kind="stable").reset_index(drop=True)[columns]


def with_arms(requests: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The requests ``kind`` served, with ``version``, ``champion``, ``previous`` and ``arm`` columns."""
    served = requests["policy_version"].map(lambda tag: parse_policy(tag).get(kind))
    mine = requests[served.notna()].copy()
    picked = served[served.notna()]
    mine["version"] = picked.map(lambda s: s.version).astype("int64")
    mine["champion"] = picked.map(lambda s: s.champion).astype("int64")
    mine["previous"] = picked.map(lambda s: s.previous).astype("Int64")
    mine["arm"] = picked.map(lambda s: s.arm)
    mine["release"] = picked.map(lambda s: s.release)
    return mine


def rate_summary(values: pd.Series | np.ndarray) -> dict[str, float | None]:
    """Mean of per-request rates with its 95% t-interval (None bounds below two requests)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size < 2 or np.all(x == x[0]):
        mean = float(x.mean()) if x.size else None
        return {"mean": mean, "low": mean if x.size >= 2 else None, "high": mean if x.size >= 2 else None}
    low, high = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    return {"mean": float(x.mean()), "low": float(low), "high": float(high)}


def difference(champion: np.ndarray, previous: np.ndarray) -> dict[str, float | None]:
    """Champion minus previous: the difference of mean rates, its 95% interval and Welch's p-value."""
    from scipy import stats

    a, b = np.asarray(previous, dtype=float), np.asarray(champion, dtype=float)
    if a.size < 2 or b.size < 2:
        return {"diff": None, "low": None, "high": None, "p_value": None}
    diff = float(b.mean() - a.mean())
    if a.var() == 0 and b.var() == 0:
        return {"diff": diff, "low": diff, "high": diff, "p_value": 1.0 if diff == 0 else 0.0}
    test = stats.ttest_ind(b, a, equal_var=False)
    low, high = test.confidence_interval(0.95)
    return {"diff": diff, "low": float(low), "high": float(high), "p_value": float(test.pvalue)}


def _arm_row(frame: pd.DataFrame) -> dict[str, Any]:
    return {"requests": int(len(frame)), "impressions": int(frame["impressions"].sum()),
            **{m: rate_summary(frame[m]) for m in METRICS}}


def ab_report(requests: pd.DataFrame, kinds: tuple[str, ...] = ("ranker", "bandit")) -> dict[str, Any]:
    """Per policy_version, and per kind and release: arms, rates with intervals, champion - previous.

    Returns:
        ``{"policy_versions": [...], "kinds": {kind: [{"release", "champion", "previous", "arms":
        {"champion": ..., "previous": ...}, "difference": {metric: ...}}]}}``.
    """
    versions = [{"policy_version": tag, **_arm_row(group)}
                for tag, group in requests.groupby("policy_version", sort=True)]
    out: dict[str, Any] = {"requests": int(len(requests)), "policy_versions": versions, "kinds": {}}
    for kind in kinds:
        mine = with_arms(requests, kind)
        releases = []
        for release, group in mine.groupby("release", sort=False):
            arms = {arm: g for arm, g in group.groupby("arm")}
            champion, previous = int(group["champion"].iloc[0]), group["previous"].iloc[0]
            releases.append({
                "release": release, "champion": champion, "previous": None if pd.isna(previous) else int(previous),
                "first": group["ts"].min().isoformat(), "last": group["ts"].max().isoformat(),
                "arms": {arm: _arm_row(g) for arm, g in arms.items()},
                "difference": {m: difference(arms["champion"][m], arms["previous"][m])
                               if {"champion", "previous"} <= set(arms) else None for m in METRICS},
            })
        out["kinds"][kind] = releases
    return out


def log_report(settings: Settings, report: dict[str, Any], start: datetime, end: datetime) -> str:
    """The report as an MLflow run of the experiment ``<experiment>-ab`` (JSON, Markdown, per-arm metrics)."""
    import mlflow

    from core.runtime import ensure_experiment

    experiment = ensure_experiment(settings, f"{settings.experiment}-ab")
    with mlflow.start_run(experiment_id=experiment, run_name=f"ab {start:%Y-%m-%d}..{end:%Y-%m-%d}",
                          tags={"rankloop.ab_start": start.isoformat(), "rankloop.ab_end": end.isoformat()}) as run:
        mlflow.log_dict(report, "ab/report.json")
        mlflow.log_text(markdown(report, start, end), "ab/report.md")
        metrics = {}
        for kind, releases in report["kinds"].items():
            for r in releases:
                for arm, row in r["arms"].items():
                    version = r["champion"] if arm == "champion" else r["previous"]
                    for m in METRICS:
                        if row[m]["mean"] is not None:
                            metrics[f"{kind}.v{version}.{arm}.{m}"] = row[m]["mean"]
                    metrics[f"{kind}.v{version}.{arm}.requests"] = row["requests"]
        mlflow.log_metrics(metrics)
    return run.info.run_id


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def lines(report: dict[str, Any]) -> list[str]:
    """The report as short text lines (what ``rankloop ab`` prints)."""
    out = [f"{report['requests']:,} served requests"]
    for row in report["policy_versions"]:
        c = row["click_rate"]
        out.append(f"  {row['policy_version']:<28} {row['requests']:>7,} req {row['impressions']:>8,} imp  "
                   f"click {_pct(c['mean'])} [{_pct(c['low'])}, {_pct(c['high'])}]  "
                   f"engaged {_pct(row['engagement_rate']['mean'])}")
    for kind, releases in report["kinds"].items():
        for r in releases:
            parts = []
            for arm, row in sorted(r["arms"].items()):
                version = r["champion"] if arm == "champion" else r["previous"]
                parts.append(f"v{version} ({arm}) click {_pct(row['click_rate']['mean'])} of {row['requests']:,} req")
            d = r["difference"]["click_rate"]
            if d is not None and d["diff"] is not None:
                parts.append(f"champion - previous {100 * d['diff']:+.2f} pts [{100 * d['low']:+.2f}, "
                             f"{100 * d['high']:+.2f}], Welch p {d['p_value']:.3g}")
            elif len(r["arms"]) < 2:
                parts.append("no concurrent previous arm to compare with")
            out.append(f"{kind} release {r['release']}: " + "; ".join(parts))
    return out


def markdown(report: dict[str, Any], start: datetime, end: datetime) -> str:
    """The report for MLflow and Prefect artifacts."""
    body = "\n".join(f"    {line}" for line in lines(report))
    return f"# RankLoop A/B report {start:%Y-%m-%d} .. {end:%Y-%m-%d}\n\n{body}\n"
