"""The table stage: refit the Thompson, LinUCB and Q tables on top of their champions, judge each
off-policy on the test week, register, and promote only when the gate passes.

Judging is held out: the challenger that is *evaluated* is refit on the data before the test
week (on top of the champion), and compared on the test week's logged slates with the champion.
The challenger that is *registered* is the refit on the whole window. When nothing new arrived
before the test week (the champion already saw it) the two tables are equal and the gate holds:
a table only moves when the logs show it is better.

What each table needs from the log (docs/policies.md): the bandit and LinUCB tables learn from
trials, which are logged impressions (with a request_id) or, in logs without any, the first
event of each user/item/request-or-session-or-day (:func:`models.rewards.exposure_events`); their
off-policy judgement needs logged propensities at the top slot, so tables fitted on derived
trials are registered and held (HOLD), never promoted by the gate. The Q table needs slates
logged with the Q-learner's ``action_id``. A kind the log cannot fit is :class:`Skipped` with its
reason: nothing is registered, and the run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.config.ranker import split_starts
from core.memory import empty_like, release_memory
from core.settings import Settings
from models.policy import POLICY_TABLES

if TYPE_CHECKING:
    from core.config.policy import BanditSettings
    from models.linucb import ArmContextStats, LinUCB
    from models.ope import OPEResult
    from models.policy import PolicyTable
    from models.qlearning import QTable
    from models.thompson import BetaCounts, BetaTables
    from rankloop.partitions import Runner
    from rankloop.promotion import Candidate
    from registry.gate import OPEEvidence
    from registry.loader import LoadedModel

log = logging.getLogger(__name__)

TOP = 0  # OPE judges the top slot: its logged propensity is the policy's exact marginal probability.


@dataclass(frozen=True)
class Skipped:
    """A table kind this window's log cannot fit: nothing is registered or promoted, the run goes on."""

    kind: str
    reason: str

    def summary(self) -> dict[str, Any]:
        """The table's entry in the run summary."""
        return {"version": None, "verdict": "SKIPPED", "reasons": [self.reason], "promoted": False,
                "headline": f"skipped: {self.reason}", "run_id": None, "skipped": self.reason}

    def candidate(self, champion_version: int | None) -> Candidate:
        """The kind's ``rankloop.promotion.Candidate``: skipped, the champion stays."""
        from rankloop.promotion import Candidate, Status

        return Candidate(self.kind, Status.SKIPPED, None, champion_version, (self.reason,),
                         headline=f"skipped: {self.reason}", verdict="SKIPPED")


@dataclass(frozen=True)
class TableFrames:
    """The rewards the tables fit on, and where their trials came from."""

    imps: pd.DataFrame  # models.rewards.impression_rewards: one row per trial
    slates: pd.DataFrame  # models.rewards.q_rewards: one row per (request, user)
    trials: str  # "impressions" (logged) or "exposures" (derived from the log's own events)


def table_frames(events: pd.DataFrame, settings: Settings) -> TableFrames:
    """Reward frames from the logged impressions, or from exposures when the window logs none."""
    from models.rewards import exposure_events, has_logged_impressions, reward_frames

    if len(events) == 0 or has_logged_impressions(events):
        return TableFrames(*reward_frames(events, settings.rewards), trials="impressions")
    log.info("no logged impressions in window: the tables' trials are the first event of each user/item/request")
    return TableFrames(*reward_frames(exposure_events(events), settings.rewards), trials="exposures")


def skip_table(skipped: Skipped, parent_run_id: str | None) -> None:
    """Say on the week's MLflow run (tag ``rankloop.<kind>``) why a table was skipped."""
    from mlflow import MlflowClient

    if parent_run_id:
        MlflowClient().set_tag(parent_run_id, f"rankloop.{skipped.kind}", f"skipped: {skipped.reason}")
    log.info("%s: skipped (%s)", skipped.kind, skipped.reason)


NO_TRIALS = "no impressions in window (and no events to use as trials)"
NO_ACTIONS = ("no slates with an action_id in window: the Q table replays slates logged with the "
              "Q-learner's action")


@dataclass(frozen=True)
class Judged:
    kind: str
    final: PolicyTable
    evidence: OPEEvidence
    ope: OPEResult
    champion_estimate: float | None
    champion_version: int | None
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrialSummary:
    """What judging the bandit and LinUCB refits reads of a window's trials, besides the refits: per
    item the trials over the window and the trials and successes before the test week (the arms, and
    the doubly robust reward model); the window's totals; the test week's top-slot trials (what
    off-policy evaluation replays), in ts order. Request days add up (:func:`combine_trials`): the
    stage never holds the window's trials (7.5M rows at 10M interactions), only ~1/10 of a week's."""

    items: pd.DataFrame  # item_id, trials, pre_trials, pre_successes: one row per item, sorted by item_id
    trials: int
    successes: int
    reward_sum: float  # math.fsum of the rewards (of the days' sums, when combined)
    logged: bool  # some trial has a logged propensity (else the trials were derived from events)
    test: pd.DataFrame  # the test week's top-slot trials: JUDGED_COLUMNS present in the log

    def item_ids(self) -> list[Any]:
        """Every item with a trial in the window, sorted."""
        return sorted(self.items["item_id"])

    def item_model(self) -> pd.Series:
        """Smoothed per-item success rate before the test week (the DR reward model), by item_id."""
        pre = self.items[self.items["pre_trials"] > 0].set_index("item_id")
        total = int(pre["pre_trials"].sum())
        prior = int(pre["pre_successes"].sum()) / total if total else 0.0
        return (pre["pre_successes"] + 10 * prior) / (pre["pre_trials"] + 10)

    def metrics(self) -> dict[str, float]:
        """How many trials the table saw, their mean reward, and whether they were logged impressions (1)
        or derived (0)."""
        return {"average_reward": self.reward_sum / self.trials if self.trials else float("nan"),
                "trials": float(self.trials), "trials_logged": float(self.logged)}


JUDGED_COLUMNS = ("item_id", "ts", "success", "reward", "position", "propensity")


def summarise_trials(imps: pd.DataFrame, settings: Settings, end: datetime) -> TrialSummary:
    """The :class:`TrialSummary` of ``imps`` (``models.rewards.impression_rewards`` rows: a window, or
    the requests of one day), its test week's rows in the frame's order."""
    import math

    ts = pd.to_datetime(imps["ts"], utc=True)
    test_start = pd.Timestamp(settings.ranker.test_start(end))
    before = (ts < test_start).to_numpy()
    success = imps["success"].to_numpy(dtype=bool)
    items = pd.DataFrame({"item_id": imps["item_id"].to_numpy(), "trials": np.ones(len(imps), dtype=np.int64),
                          "pre_trials": before.astype(np.int64), "pre_successes": (before & success).astype(np.int64)})
    items = items.groupby("item_id", as_index=False, sort=True).sum()
    in_test = ((ts >= test_start) & (ts < pd.Timestamp(end))).to_numpy()
    top = (imps["position"] == TOP).to_numpy() if "position" in imps else np.zeros(len(imps), dtype=bool)
    judged = [c for c in (*JUDGED_COLUMNS, *settings.linucb.context_features) if c in imps]
    logged = bool(imps["propensity"].notna().any()) if "propensity" in imps else False
    return TrialSummary(items=items, trials=len(imps), successes=int(success.sum()),
                        reward_sum=math.fsum(imps["reward"].to_numpy(dtype=float)), logged=logged,
                        test=imps.loc[in_test & top, judged].reset_index(drop=True))


def combine_trials(parts: list[TrialSummary]) -> TrialSummary:
    """The summaries of the request days together (a trial lives in one day); the test rows in ts order
    (stable: the days' order among equal times)."""
    import math

    if not parts:
        raise ValueError("combine_trials needs at least one day's TrialSummary")
    items = pd.concat([p.items for p in parts], ignore_index=True).groupby("item_id", as_index=False, sort=True).sum()
    tests = [p.test for p in parts if len(p.test)]
    test = pd.concat(tests, ignore_index=True) if tests else parts[0].test
    test = test.sort_values("ts", kind="stable").reset_index(drop=True) if len(test) else test
    return TrialSummary(items=items, trials=sum(p.trials for p in parts), successes=sum(p.successes for p in parts),
                        reward_sum=math.fsum(p.reward_sum for p in parts), logged=any(p.logged for p in parts),
                        test=test)


def _split(frame: pd.DataFrame, end: datetime, test_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    test_start = pd.Timestamp(split_starts(end, valid_days=0, test_days=test_days)[1])
    ts = pd.to_datetime(frame["ts"], utc=True)
    return frame[ts < test_start], frame[(ts >= test_start) & (ts < pd.Timestamp(end))]


def _evidence(result: OPEResult, estimator: str) -> OPEEvidence:
    from registry.gate import OPEEvidence

    if result.verdict != "ok":
        return OPEEvidence(float("nan"), float("nan"), float("nan"), status="cannot_evaluate", note=result.reason)
    low, high = result.intervals[estimator]
    return OPEEvidence(result.estimates[estimator], low, high)


def judge_bandit(imps: pd.DataFrame, champion: BetaTables | None, champion_version: int | None, settings: Settings,
                 end: datetime) -> Judged | Skipped:
    """Refit the bandit on ``imps`` (a window's ``models.rewards.impression_rewards``) before the test
    week (the challenger judged) and over all of it (the table registered), and judge it. No trials:
    :class:`Skipped`."""
    return _judge_window("bandit", imps, champion, champion_version, settings, end)


def _judge_window(kind: str, imps: pd.DataFrame, champion: Any, champion_version: int | None, settings: Settings,
                  end: datetime) -> Judged | Skipped:
    """:func:`judge_bandit` or :func:`judge_linucb`: both refits from the frame, then the kind's judge."""
    from models import linucb, thompson

    if len(imps) == 0:
        return Skipped(kind, NO_TRIALS)
    refit = {"bandit": thompson.refit, "linucb": linucb.refit}[kind]
    own = getattr(settings, POLICY_TABLES[kind].settings_field)
    pre, _ = _split(imps, end, settings.ranker.test_days)
    fitted = refit(champion, pre, own, end), refit(champion, imps, own, end)
    judge = {"bandit": judge_bandit_fitted, "linucb": judge_linucb_fitted}[kind]
    return judge(summarise_trials(imps, settings, end), fitted, champion, champion_version, settings)


def judge_bandit_fitted(trials: TrialSummary, fitted: tuple[BetaTables, BetaTables], champion: BetaTables | None,
                        champion_version: int | None, settings: Settings) -> Judged | Skipped:
    """Judge the (challenger, final) bandit refits on the test week's top-slot trials, against the champion.
    Only the per-item tables are read (the top slot's policy is context-free): the stage refits the
    challenger without user x item rows."""
    if trials.trials == 0:
        return Skipped("bandit", NO_TRIALS)
    challenger, final = fitted
    test = trials.test
    items = trials.item_ids()
    q_item = trials.item_model()

    def value(table: Any) -> Any:
        from models.ope import evaluate_policy

        if (unsupported := _without_propensities(test)) is not None:
            return unsupported
        probs = table.action_probabilities(items, 1, None, np.random.default_rng(settings.ope.seed))[:, 0]
        prior = float(q_item.mean()) if len(q_item) else 0.0
        q_all = pd.Series(items).map(q_item).fillna(prior).to_numpy()
        target = test["item_id"].map(pd.Series(probs, index=items)).fillna(0.0).to_numpy()
        q_logged = test["item_id"].map(q_item).fillna(prior).to_numpy()
        q_target = np.full(len(test), float(probs @ q_all))  # context-free policy: same expectation per row
        return evaluate_policy(test["success"].astype(float).to_numpy(), test["propensity"].to_numpy(),
                               target, q_logged, q_target, settings=settings.ope)

    metrics = trials.metrics()
    return _judged("bandit", final, value(challenger), value(champion) if champion else None, champion_version,
                   {"average_reward": metrics.pop("average_reward"), "success_rate": trials.successes / trials.trials,
                    "items": float(len(final.items)), **metrics})


def judge_linucb(imps: pd.DataFrame, champion: LinUCB | None, champion_version: int | None, settings: Settings,
                 end: datetime) -> Judged | Skipped:
    """As :func:`judge_bandit`, for LinUCB."""
    return _judge_window("linucb", imps, champion, champion_version, settings, end)


def judge_linucb_fitted(trials: TrialSummary, fitted: tuple[LinUCB, LinUCB], champion: LinUCB | None,
                        champion_version: int | None, settings: Settings) -> Judged | Skipped:
    """Judge the (challenger, final) LinUCB refits on the test week's top-slot trials, against the champion."""
    if trials.trials == 0:
        return Skipped("linucb", NO_TRIALS)
    challenger, final = fitted
    test = trials.test
    items = trials.item_ids()
    q_item = trials.item_model()
    context_cols = list(settings.linucb.context_features)

    def value(table: Any) -> Any:
        if (unsupported := _without_propensities(test)) is not None:
            return unsupported
        eps = settings.linucb.exploration
        contexts = test[context_cols].astype("string").fillna("")
        group = contexts.groupby(context_cols, sort=False).ngroup().to_numpy()  # one argmax per distinct context
        firsts = np.unique(group, return_index=True)[1]
        best_of = np.array([items[int(np.argmax(table.scores(contexts.iloc[i].to_dict(), items)))] for i in firsts],
                           dtype=object)
        best = pd.Series(best_of[group], index=test.index, dtype=object)
        target = np.where(test["item_id"].to_numpy() == best.to_numpy(), 1 - eps, 0.0) + eps / len(items)
        # q_target: eps * mean q + (1 - eps) * q(best item)
        prior = float(q_item.mean()) if len(q_item) else 0.0
        q_best = best.map(q_item).fillna(prior).to_numpy()
        from models.ope import evaluate_policy

        q_logged = test["item_id"].map(q_item).fillna(prior).to_numpy()
        q_target = (1 - eps) * q_best + eps * prior
        return evaluate_policy(test["success"].astype(float).to_numpy(), test["propensity"].to_numpy(),
                               target, q_logged, q_target, settings=settings.ope)

    metrics = trials.metrics()
    return _judged("linucb", final, value(challenger), value(champion) if champion else None, champion_version,
                   {"average_reward": metrics.pop("average_reward"), "arms": float(len(items)), **metrics})


def judge_qtable(slates: pd.DataFrame, champion: QTable | None, champion_version: int | None, settings: Settings,
                 end: datetime) -> Judged | Skipped:
    """``slates``: the window's :func:`models.rewards.q_rewards` (one row per logged slate, in its order), or
    their :func:`models.qlearning.compact_slates`. Without a slate that carries an action_id: :class:`Skipped`.

    The window's steps are put in replay order once (:class:`models.qlearning.ReplayLog`); the challenger
    (before the test week), the final table (all of it) and the test week's OPE each take a selection."""
    from models.qlearning import ReplayLog, refit, replay_metrics

    if len(slates) == 0 or not slates["action_id"].notna().any():
        return Skipped("qtable", NO_ACTIONS if len(slates) else NO_TRIALS)
    log = ReplayLog.of(slates, settings.qlearning)
    test_start = split_starts(end, valid_days=0, test_days=settings.ranker.test_days)[1]
    challenger = refit(champion, log.between(before=test_start), settings.qlearning, end)
    final = refit(champion, log, settings.qlearning, end)
    steps = log.between(since=test_start, before=end).steps()
    del log
    return _judged("qtable", final, step_policy_ope(challenger, steps, settings),
                   step_policy_ope(champion, steps, settings) if champion else None, champion_version,
                   replay_metrics(final, slates), estimator="pdwis")


def step_policy_ope(policy: Any, steps: pd.DataFrame, settings: Settings) -> OPEResult:
    """PDWIS of a sequential policy on logged steps (:func:`models.qlearning.build_steps`) with the
    episode bootstrap interval (:func:`models.ope.evaluate_steps`; ``cannot_evaluate`` below
    ``ope.min_ess``). ``policy`` has ``policy_probabilities(states, epsilon)`` (the Q table, the
    fitted-Q policy) and is evaluated epsilon-greedy at ``qlearning.epsilon_end``; the logging policy
    chose each action with ``qlearning.logging_action_probability``."""
    from models.ope import evaluate_steps
    from models.qlearning import step_probabilities

    pscore = np.full(len(steps), settings.qlearning.logging_action_probability)
    target = step_probabilities(policy, steps, settings.qlearning.epsilon_end)
    episodes = pd.factorize(steps["user_id"])[0]
    return evaluate_steps(episodes, steps["reward"].to_numpy(), pscore, target, settings=settings.ope)


def _without_propensities(test: pd.DataFrame) -> OPEResult | None:
    """A cannot-evaluate result when the test week has no top-slot trial with a logged propensity
    (trials derived from views/clicks have none), else None."""
    from models.ope import OPEResult

    if len(test) and test["propensity"].notna().any():
        return None
    return OPEResult("cannot_evaluate", "no logged impressions with a propensity at the top slot in the test week "
                     "(trials derived from the log's own events): off-policy evaluation needs the logging "
                     "policy's propensities; review the table and promote it by hand if wanted", len(test))


def _judged(kind: str, final: PolicyTable, ope: OPEResult, champion_ope: OPEResult | None, champion_version: int | None,
            metrics: dict[str, float], estimator: str = "snips") -> Judged:
    champion_estimate = None
    if champion_ope is not None and champion_ope.verdict == "ok":
        champion_estimate = champion_ope.estimates[estimator]
    return Judged(kind, final, _evidence(ope, estimator), ope, champion_estimate, champion_version, metrics)


def record_table(judged: Judged | Skipped, settings: Settings, workdir: Path, actor: str,
                 window: tuple[datetime, datetime], parent_run_id: str | None,
                 champion: LoadedModel | None = None) -> Candidate:
    """Log, register and gate one table; returns its ``rankloop.promotion.Candidate`` (the run
    promotes at its end). A refit whose files equal those of ``champion`` (the loaded champion:
    ``version``, ``manifest``) is UNCHANGED: logged, not registered. A :class:`Skipped` kind is
    only noted on the week's run."""
    import mlflow

    from models.policy_tracking import log_policy_run
    from rankloop.promotion import Candidate, Status, candidate_from_decision
    from registry.decision import log_decision
    from registry.gate import policy_gate
    from registry.manifest import file_checksums
    from registry.publish import publish

    if isinstance(judged, Skipped):
        skip_table(judged, parent_run_id)
        return judged.candidate(champion.version if champion is not None else None)
    start, end = window
    directory = judged.final.save(workdir / judged.kind)
    ope = judged.ope
    headline = (f"{ope.verdict}" if ope.verdict != "ok" else
                ", ".join(f"{k} {v:.4f}" for k, v in (ope.estimates or {}).items()))
    from registry import owner_tags

    tags = ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {}) | owner_tags()
    same = champion is not None and file_checksums(directory) == champion.manifest.get("files")
    with mlflow.start_run(run_name=f"{judged.kind} {end:%Y-%m-%d}", tags=tags | {"rankloop.kind": judged.kind}) as run:
        metrics = judged.metrics | ({"champion_ope_estimate": judged.champion_estimate}
                                    if judged.champion_estimate is not None else {})
        if same:
            reason = f"the same table as champion v{judged.champion_version} (identical files)"
            mlflow.log_metrics({k: float(v) for k, v in (metrics | ope.as_metrics()).items() if v is not None})
            mlflow.set_tags({"rankloop.verdict": "UNCHANGED", "rankloop.unchanged": reason})
            return Candidate(judged.kind, Status.UNCHANGED, judged.champion_version, judged.champion_version,
                             (reason,), headline=headline, run_id=run.info.run_id, verdict="UNCHANGED")
        params = getattr(settings, POLICY_TABLES[judged.kind].settings_field).model_dump(mode="json")
        version = log_policy_run(judged.kind, directory, metrics=metrics, params=params, ope=judged.ope)
        publish(judged.kind, version, settings=settings, artifact_dir=directory,
                window={"start": start.isoformat(), "end": end.isoformat()}, params=params, metrics=metrics | judged.ope.as_metrics(),
                config={"rewards": settings.rewards.model_dump(mode="json"), "gate": settings.gate.model_dump(mode="json")})
        decision = policy_gate(judged.kind, judged.evidence, judged.champion_estimate, settings=settings.gate,
                               challenger_version=version, champion_version=judged.champion_version)
        log_decision(decision, run_id=run.info.run_id)
    return candidate_from_decision(judged.kind, decision, version=version, champion_before=judged.champion_version,
                                   headline=headline, run_id=run.info.run_id)


@dataclass(frozen=True)
class Champion:
    """A kind's serving champion as the tables stage needs it: the loaded version (its files verified)
    and the table read from them; both None before the kind's first promotion."""

    loaded: LoadedModel | None
    table: PolicyTable | None

    @property
    def version(self) -> int | None:
        return self.loaded.version if self.loaded is not None else None


def load_champions(settings: Settings) -> dict[str, Champion]:
    """Every policy kind's champion (:data:`models.policy.POLICY_TABLES` order), as a refit reads it: the
    bandit's user x item rows stay in the champion's file (~7M rows at 10M interactions), read a user range
    at a time by the refit."""
    from models.policy import load_policy_table
    from registry.loader import champion_or_none

    out = {}
    for kind in POLICY_TABLES:
        loaded = champion_or_none(kind, settings)
        out[kind] = Champion(loaded, load_policy_table(loaded.path, for_refit=True) if loaded is not None else None)
    return out


def record_judged(settings: Settings, champion: Champion, judged: Judged | Skipped, *, workdir: Path, actor: str,
                  window: tuple[datetime, datetime], parent_run_id: str | None) -> Candidate:
    """Log, register and gate one kind's judged refit against its champion (:func:`record_table`)."""
    candidate = record_table(judged, settings, workdir, actor, window, parent_run_id, champion.loaded)
    log.info("%s: version %s %s (%s)", judged.kind, candidate.version, candidate.status, candidate.headline)
    return candidate


# --- the stage, per request day ---------------------------------------------------------------
# A reward needs every row of its request (the impressions and the responses after them, which may
# fall on a later day): a request belongs to the UTC day of its first impression, whose partition
# reads the request's rows from every day they fall on (models.rewards.request_moves). Each request
# day yields the refits' sufficient statistics (summed across days, so the refit equals the refit on
# the whole window to float summation order) and the judges' summary of its trials (per-item counts,
# totals, the test week's top-slot rows: TrialSummary); no frame of the window's trials is built. The
# Q table, sequential over episodes, is replayed from the collected slates. A window without logged impressions uses
# exposures (models.rewards.exposure_events): requests are then filled row by row
# (with_exposure_requests), so each day's rows get the requests the whole window would.
@dataclass(frozen=True)
class ParkedCounts:
    """One request day's Thompson statistics with their user x item rows on disk (the bulk: ~270K rows
    a day at 10M interactions, which the stage would otherwise hold for every day until the refit)."""

    counts: BetaCounts  # user_items without rows
    path: Path


def refit_bandit(champion: BetaTables | None, parked: list[ParkedCounts], which: str, settings: BanditSettings,
                 end: datetime, folder: Path | None = None) -> BetaTables:
    """The bandit refit over ``which`` days (``pre``: before the test week; ``all``) from the days'
    parked statistics: their user x item rows, and the champion's, are summed one range of users at a
    time (:func:`models.thompson.refit_from_count_files`: the table one group-by would give, to the last
    bit). The challenger (``pre``) is judged by its per-item table alone (:func:`judge_bandit_fitted`: a
    context-free top slot), so its refit leaves out the user x item rows, the champion's and the days'.
    ``folder``: where the ``all`` refit writes its user x item rows as they are summed (the table holds
    them there, ``user_items_path``, until it is saved: never a frame of them; ~20M rows at 30M interactions)."""
    from models.thompson import combine_counts, refit_from_count_files, refit_from_counts, without_user_items

    if which == "all":
        return refit_from_count_files(champion, [p.counts for p in parked], [p.path for p in parked], settings, end,
                                      write_to=folder / "bandit-all.user_items.parquet" if folder is not None else None)
    return refit_from_counts(without_user_items(champion), combine_counts(p.counts for p in parked), settings,
                             end)  # no file is read


def _park(counts: BetaCounts, path: Path) -> ParkedCounts:
    from dataclasses import replace

    _write_frame(counts.user_items, path, row_group_size=_PARKED_ROW_GROUP)  # read back a user range at a time
    return ParkedCounts(replace(counts, user_items=empty_like(counts.user_items)), path)


@dataclass(frozen=True)
class TablePart:
    """One request day's share of the tables: the refits' statistics before the test week (``*_pre``)
    and in it (``*_test``; the whole window's are both combined), the judges' :class:`TrialSummary`,
    and its slates as a file."""

    day: date
    impressions: int
    trials: TrialSummary
    bandit_pre: ParkedCounts
    bandit_test: ParkedCounts
    linucb_pre: ArmContextStats
    linucb_test: ArmContextStats
    slates_path: Path

    def stats(self, kind: str, which: str) -> list[Any]:
        """``kind``'s statistics of this day before the test week (``pre``) or over all of it (``all``):
        :class:`ParkedCounts` (bandit) or :class:`models.linucb.ArmContextStats`."""
        return [getattr(self, f"{kind}_pre")] + ([getattr(self, f"{kind}_test")] if which == "all" else [])


@dataclass(frozen=True)
class DayIndex:
    """What the tables stage learns from one day file in one read: whether it holds logged impressions,
    and its :func:`models.rewards.request_index` as logged (``logged``) and, for a day without logged
    impressions, as exposures would make it (``exposures``, else None)."""

    has_impressions: bool
    logged: pd.DataFrame
    exposures: pd.DataFrame | None


_INDEX_COLUMNS = ["request_id", "event_type", "ts", "user_id", "item_id", "session_id"]


def _read_day(path: Path, columns: list[str], exposures: bool) -> pd.DataFrame:
    from models.rewards import with_exposure_requests

    names = set(pq.read_schema(path).names)
    frame = pq.read_table(path, columns=[c for c in columns if c in names]).to_pandas()
    return with_exposure_requests(frame) if exposures else frame


def day_index(path: Path) -> DayIndex:
    """:class:`DayIndex` of one day file (one read of the columns it needs)."""
    from models.rewards import exposure_events, has_logged_impressions, request_index, with_exposure_requests

    frame = _read_day(path, _INDEX_COLUMNS, exposures=False)
    logged = has_logged_impressions(frame)
    base = frame if "request_id" in frame else frame.assign(request_id=pd.Series(None, index=frame.index, dtype=object))
    index = request_index(base[["request_id", "event_type", "ts"]])
    if logged:
        return DayIndex(True, index, None)
    # a request's first "impression" is its first event
    shown = exposure_events(with_exposure_requests(frame))
    return DayIndex(False, index, request_index(shown[["request_id", "event_type", "ts"]]))


def _day_rows(path: Path, columns: list[str], ids: Any, keep: bool, exposures: bool) -> pd.DataFrame:
    """Rows of one day file with a request_id, those whose request is in ``ids`` (``keep``) or is not."""
    frame = _read_day(path, columns, exposures)
    frame = frame[frame["request_id"].notna()]
    inside = frame["request_id"].isin(ids) if len(ids) else np.zeros(len(frame), dtype=bool)
    return frame[inside if keep else ~inside]


def request_day_events(day: date, day_paths: dict[date, Path], moves: pd.DataFrame,
                       columns: list[str], exposures: bool = False) -> pd.DataFrame:
    """The events of the requests whose first impression falls on ``day``: the day's rows without the
    requests that started earlier, then the later days' rows of requests that started on ``day``."""
    d = pd.Timestamp(day)
    parts = [_day_rows(day_paths[day], columns, moves.loc[moves["day"] == d, "request_id"].to_numpy(), False,
                       exposures)]
    mine = moves[moves["home"] == d]
    for later in sorted(mine["day"].unique()):
        ids = mine.loc[mine["day"] == later, "request_id"].to_numpy()
        parts.append(_day_rows(day_paths[pd.Timestamp(later).date()], columns, ids, True, exposures))
    return pd.concat(parts, ignore_index=True)


def table_partition(day: date, settings: Settings, day_paths: dict[date, Path], moves: pd.DataFrame,
                    since: dict[str, datetime | None], end: datetime, folder: Path,
                    exposures: bool = False) -> TablePart:
    """Rewards of one request day and its Thompson/LinUCB statistics (with the decay and the
    champion's ``data_end`` the refit applies: ``since[kind]``), the judges' summary of its trials,
    and its slates as Parquet."""
    from core.schema import INTERACTION_SCHEMA
    from models.linucb import arm_context_stats
    from models.rewards import exposure_events, reward_frames
    from models.thompson import beta_counts

    columns = [c for c in INTERACTION_SCHEMA.names if c != "event_id"]
    events = request_day_events(day, day_paths, moves, columns, exposures)
    imps, slates = reward_frames(exposure_events(events) if exposures else events, settings.rewards)
    del events
    test_start = pd.Timestamp(settings.ranker.test_start(end))
    before = (pd.to_datetime(imps["ts"], utc=True) < test_start).to_numpy()
    pre, test = imps[before], imps[~before]
    name = day.isoformat()
    return TablePart(
        day=day, impressions=len(imps), trials=summarise_trials(imps, settings, end),
        bandit_pre=_park(beta_counts(pre, settings.bandit, end, since["bandit"]), folder / f"{name}.bandit-pre.parquet"),
        bandit_test=_park(beta_counts(test, settings.bandit, end, since["bandit"]),
                          folder / f"{name}.bandit-test.parquet"),
        linucb_pre=arm_context_stats(pre, settings.linucb, end, since["linucb"]),
        linucb_test=arm_context_stats(test, settings.linucb, end, since["linucb"]),
        slates_path=_write_frame(slates, folder / f"{name}.slates.parquet"),
    )


def _write_frame(frame: pd.DataFrame, path: Path, row_group_size: int | None = None) -> Path:
    from core.atomic import write_parquet

    return write_parquet(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)


_PARKED_ROW_GROUP = 1 << 16  # rows per row group of a day's parked user x item counts


def _slates(parts: list[TablePart], settings: Settings) -> pd.DataFrame:
    """The window's slates as ``models.rewards.q_rewards`` orders them (a request lives in one part), each
    part's compacted as it is read (``models.qlearning.compact_slates``: the context as its state code)."""
    from models.qlearning import compact_slates

    held = [f for f in (compact_slates(pq.read_table(p.slates_path).to_pandas(), settings.qlearning) for p in parts)
            if len(f)]
    if not held:  # no slate in the window: judge_qtable skips the Q table
        return pd.DataFrame()
    slates = pd.concat(held, ignore_index=True) if len(held) > 1 else held[0]
    del held
    return slates.sort_values(["ts", "request_id"], kind="stable").reset_index(drop=True)


def fit_tables_by_day(settings: Settings, day_paths: dict[date, Path], runner: Runner, *, end: datetime,
                      workdir: Path, actor: str, window: tuple[datetime, datetime],
                      parent_run_id: str | None) -> list[Candidate]:
    """The tables stage: rewards and the Thompson/LinUCB statistics per request day (``runner``: in this
    process one day at a time, or on a cluster), combined into the refits, then each kind judged,
    recorded and gated (:func:`record_judged`). One :class:`rankloop.promotion.Candidate` per kind."""
    import mlflow

    from core.runtime import ensure_experiment
    from models.linucb import combine_stats, refit_from_stats
    from models.rewards import request_moves

    mlflow.set_experiment(experiment_id=ensure_experiment(settings))
    champions = load_champions(settings)
    since = {k: getattr(champions[k].table, "data_end", None) for k in ("bandit", "linucb")}
    days = sorted(day_paths)
    indexes = runner.map(day_index, [day_paths[d] for d in days])
    exposures = not any(i.has_impressions for i in indexes)
    if exposures and days:
        log.info("no logged impressions in window: the tables' trials are the first event of each "
                 "user/item/request")
    index = [i.exposures if exposures else i.logged for i in indexes]
    del indexes
    moves = runner.share(request_moves(dict(zip(days, index, strict=True))))
    parts = runner.map(table_partition, days, settings=settings, day_paths=day_paths, moves=moves, since=since,
                       end=end, folder=workdir / "data" / "table_days", exposures=exposures)
    log.info("tables: %d %s over %d request days", sum(p.impressions for p in parts),
             "exposures" if exposures else "impressions", len(parts))
    release_memory()  # the days' reads, before the combines gather the partitions' statistics
    fits = {
        "bandit": lambda champ, which: refit_bandit(champ, [s for p in parts for s in p.stats("bandit", which)],
                                                    which, settings.bandit, end, folder=workdir / "data" / "table_days"),
        "linucb": lambda champ, which: refit_from_stats(
            champ, combine_stats([s for p in parts for s in p.stats("linucb", which)]), settings.linucb, end),
    }
    common = {"workdir": workdir, "actor": actor, "window": window, "parent_run_id": parent_run_id}
    trials = combine_trials([p.trials for p in parts]) if parts else None
    judges = {"bandit": judge_bandit_fitted, "linucb": judge_linucb_fitted}
    out = []
    for kind in ("bandit", "linucb"):
        champion = champions[kind]
        if trials is None or trials.trials == 0:
            judged: Judged | Skipped = Skipped(kind, NO_TRIALS)
        else:
            fitted = fits[kind](champion.table, "pre"), fits[kind](champion.table, "all")
            judged = judges[kind](trials, fitted, champion.table, champion.version, settings)
            del fitted
        out.append(record_judged(settings, champion, judged, **common))
        del judged
    # the Q table's updates are sequential over episodes: replayed here, from the slates
    champion = champions["qtable"]
    judged = judge_qtable(_slates(parts, settings), champion.table, champion.version, settings, end)
    return [*out, record_judged(settings, champion, judged, **common)]
