"""The guardrail: revert a release whose live traffic shows it worse than the version it replaced.

For each kind, every day (the ``guardrail`` deployment, or ``rankloop guard``):

1. **Whose decision is it?** The ledger's last committed move of the kind's ``champion`` alias says
   how the champion got there. A rollback (by on-call, by an offline rollback, or by the guardrail
   itself) and a forced promotion by anyone but a drill actor (``guard.guarded_forced_actors``) are
   on-call decisions: *respected*, never reverted. Promotions by the weekly run or the bandit
   refresh, and drills, are guarded. No ``previous`` version: nothing to revert to.
2. **Traffic since the promotion.** Serving tags every request with the release it belongs to
   (:mod:`rankloop.releases`) and keeps a holdback share on the previous version, so the champion
   and its previous version have concurrent traffic. The release's traffic is its requests after
   the last request of any other release of the kind: no clock is trusted.
3. **Test.** Per request, the share of the slate clicked (or engaged with: ``guard.metric``); the
   champion's mean minus the previous version's, by the mixture SPRT of
   :mod:`models.sequential` against ``-guard.margin``, looked at once per day since the release
   started. It reverts when at some look the champion is behind by more than the margin and the
   mixture likelihood ratio reached ``1/alpha``: the false-revert rate stays below ``alpha`` however
   many days are looked at. Either arm below ``guard.min_requests`` requests: *insufficient traffic*.
4. **Revert** through the normal locked path: under the kind's lock, after healing, only if the
   aliases and the ledger's last move are still the ones judged (an on-call action in between wins);
   a rollback with actor ``guardrail``, the evidence in the ledger entry (decision record and
   ``guardrail/evidence.json``), and a notification.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from core.config.guard import GuardSettings
from core.settings import Settings
from models.policy import MODEL_KINDS
from registry.promote import GUARDRAIL_ACTOR

log = logging.getLogger(__name__)

ACTOR = GUARDRAIL_ACTOR  # the ledger actor of every revert (a plain `rankloop rollback` refuses to undo one)
KINDS = MODEL_KINDS


@dataclass(frozen=True)
class GuardVerdict:
    """What the guardrail concluded about one kind (``status``: reverted, would_revert, keep,
    insufficient_traffic, respected, no_previous, no_champion, stood_down)."""

    kind: str
    status: str
    champion: int | None
    previous: int | None
    reasons: tuple[str, ...]
    figures: dict[str, Any] = field(default_factory=dict)
    looks: tuple[dict[str, Any], ...] = ()
    ledger_entry: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"], data["looks"] = list(self.reasons), list(self.looks)
        return data


# --- the test (pure) -----------------------------------------------------------------------------
def current_stretch(served: pd.DataFrame, champion: int, previous: int | None) -> pd.DataFrame:
    """The requests of release ``champion/previous`` after the last request of any other release."""
    release = f"{champion}/{previous if previous is not None else '-'}"
    others = served.loc[served["release"] != release, "ts"]
    mine = served[served["release"] == release]
    return mine[mine["ts"] > others.max()] if len(others) else mine


def judge(stretch: pd.DataFrame, guard: GuardSettings) -> tuple[str, tuple[str, ...], dict[str, Any], list[dict]]:
    """The sequential test on a release's requests (``with_arms`` rows): (status, reasons, figures, looks).

    Status ``revert``, ``keep`` or ``insufficient_traffic``.
    """
    from models.sequential import msprt

    metric = guard.metric
    arm = stretch["arm"].to_numpy()
    n_champion, n_previous = int((arm == "champion").sum()), int((arm == "previous").sum())
    figures: dict[str, Any] = {"metric": metric, "requests_champion": n_champion, "requests_previous": n_previous,
                               "margin": guard.margin, "alpha": guard.alpha, "mixture_sd": guard.mixture_sd}
    if min(n_champion, n_previous) < guard.min_requests:
        return ("insufficient_traffic",
                (f"insufficient traffic: {n_champion} champion and {n_previous} previous request(s) since the "
                 f"promotion, {guard.min_requests} needed for each",), figures, [])
    start = stretch["ts"].min()
    cuts = [start + pd.Timedelta(days=d) for d in range(1, int((stretch["ts"].max() - start).days) + 1)]
    looks = []
    for cut in [*cuts, stretch["ts"].max() + pd.Timedelta(microseconds=1)]:
        upto = stretch[stretch["ts"] < cut]
        a, b = (upto.loc[upto["arm"] == side, metric].to_numpy() for side in ("previous", "champion"))
        if min(a.size, b.size) < guard.min_requests:
            continue
        look = msprt(a, b, theta0=-guard.margin, tau=guard.mixture_sd)
        looks.append({"until": cut.isoformat(), **asdict(look), "p_value": look.p_value,
                      "behind": look.delta < -guard.margin})
    behind = [look for look in looks if look["behind"]]
    p_value = min((look["p_value"] for look in behind), default=1.0)
    last = looks[-1]
    figures |= {"champion_rate": last["mean_b"], "previous_rate": last["mean_a"], "difference": last["delta"],
                "std_error": last["std_error"], "p_value": p_value, "looks": len(looks)}
    summary = (f"champion {metric} {last['mean_b']:.4f} vs previous {last['mean_a']:.4f} "
               f"({last['delta']:+.4f}, margin {guard.margin}), always-valid p {p_value:.3g} over {len(looks)} "
               f"daily look(s), {n_champion}/{n_previous} requests since the promotion")
    if p_value <= guard.alpha:
        first = next(look for look in behind if look["p_value"] <= guard.alpha)
        return "revert", (f"worse than its previous version: {summary} (crossed 1/alpha at the look "
                          f"ending {first['until'][:16]})",), figures, looks
    return "keep", (f"no evidence of harm: {summary} > alpha {guard.alpha}",), figures, looks


# --- the registry side ---------------------------------------------------------------------------
def _champion_move(entries: list[Any]) -> Any:
    """The ledger's last committed move of the champion alias."""
    moves = [e for e in entries if e.alias == "champion" and e.status == "committed"]
    return moves[-1] if moves else None


def _respected(move: Any, champion: int, guard: GuardSettings, pinned: bool) -> str | None:
    """Why the champion is an on-call decision the guardrail leaves alone (None: it is guarded)."""
    if pinned:
        return "an offline rollback is pinned on this host: on-call's decision stands"
    if move is None or move.to_version != champion:
        return f"the ledger does not record how v{champion} became champion: not the guardrail's to revert"
    if move.action == "rollback":
        return (f"v{champion} was put back by {move.actor} at {move.when[:16]} (rollback: {move.reason}); "
                "a rollback is never reverted")
    if move.forced and move.actor not in guard.guarded_forced_actors:
        return f"v{champion} was promoted by hand by {move.actor} at {move.when[:16]} ({move.reason}): respected"
    return None


def guard_kind(settings: Settings, kind: str, requests: pd.DataFrame, *, client: Any,
               dry_run: bool = False) -> GuardVerdict:
    """Judge ``kind``'s champion on its live traffic and revert it when the test says so."""
    from rankloop.ab import with_arms
    from registry.ledger import history
    from registry.offline import read_pin
    from registry.store import CHAMPION, PREVIOUS, aliases

    state = aliases(client, kind)
    champion, previous = state.get(CHAMPION), state.get(PREVIOUS)
    if champion is None:
        return GuardVerdict(kind, "no_champion", None, previous, (f"{kind} has no champion",))
    move = _champion_move(history(kind, client=client))
    why = _respected(move, champion, settings.guard, read_pin(settings, kind) is not None)
    if why is not None:
        return GuardVerdict(kind, "respected", champion, previous, (why,))
    if previous is None:
        return GuardVerdict(kind, "no_previous", champion, None, (f"v{champion} has no previous version to revert to",))
    stretch = current_stretch(with_arms(requests, kind), champion, previous)
    status, reasons, figures, looks = judge(stretch, settings.guard)
    figures |= {"release": f"{champion}/{previous}", "promoted_by": move.actor, "promoted_at": move.when,
                "ledger_entry": move.operation_id}
    if status != "revert":
        return GuardVerdict(kind, status, champion, previous, reasons, figures, tuple(looks))
    if dry_run:
        return GuardVerdict(kind, "would_revert", champion, previous, reasons, figures, tuple(looks))
    return _revert(settings, client, kind, GuardVerdict(kind, "reverted", champion, previous, reasons, figures,
                                                        tuple(looks)), move.operation_id)


def _revert(settings: Settings, client: Any, kind: str, verdict: GuardVerdict, judged_entry: str) -> GuardVerdict:
    """Roll back under the kind's lock, unless the aliases or the ledger moved since they were judged."""
    from registry.decision import Decision, Verdict
    from registry.ledger import history
    from registry.lock import registry_lock
    from registry.move import move_locked
    from registry.recover import heal_kind
    from registry.store import CHAMPION, PREVIOUS, aliases

    with registry_lock(settings, kind):
        heal_kind(client, settings, kind)
        state = aliases(client, kind)
        move = _champion_move(history(kind, client=client))
        now = (state.get(CHAMPION), state.get(PREVIOUS), move.operation_id if move else None)
        if now != (verdict.champion, verdict.previous, judged_entry):
            return GuardVerdict(kind, "stood_down", *now[:2], (
                f"the registry moved while the guardrail judged v{verdict.champion} (champion now {now[0]}, "
                f"previous {now[1]}): nothing reverted", *verdict.reasons), verdict.figures, verdict.looks)
        figures = {k: v for k, v in verdict.figures.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        decision = Decision(kind, Verdict.PASS, (f"guardrail: {verdict.reasons[0]}",), figures | {"guardrail": 1},
                            challenger_version=verdict.previous, champion_version=verdict.champion)
        result = move_locked(kind, verdict.previous, action="rollback", decision=decision, actor=ACTOR,
                             reason=f"guardrail: v{verdict.champion} {verdict.reasons[0]}", forced=True,
                             client=client, settings=settings, faults=())
    done = GuardVerdict(kind, "reverted", verdict.champion, verdict.previous, verdict.reasons, verdict.figures,
                        verdict.looks, result.entry_id)
    try:
        client.log_dict(result.entry_id, done.to_dict(), "guardrail/evidence.json")
        client.set_tag(result.entry_id, "ledger.guardrail", "true")
    except Exception as e:  # noqa: BLE001 - the revert happened; the decision record in the entry carries the figures
        log.error("reverted %s v%s, but could not attach the evidence to ledger entry %s: %s", kind,
                  verdict.champion, result.entry_id, e)
    log.warning("guardrail reverted %s v%d -> v%d: %s", kind, verdict.champion, verdict.previous, verdict.reasons[0])
    return done


def window(settings: Settings, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The part of the source the guardrail reads: ``lookback_days`` before today to ``ahead_days`` after."""
    now = now or datetime.now(UTC)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    return today - timedelta(days=settings.guard.lookback_days), today + timedelta(days=1 + settings.guard.ahead_days)


def run_guard(settings: Settings, kinds: tuple[str, ...] = KINDS, *, dry_run: bool = False,
              now: datetime | None = None) -> list[GuardVerdict]:
    """Judge (and revert, unless ``dry_run``) each kind; notifies every revert.

    Raises:
        RegistryError: UNREACHABLE when the registry cannot be asked; BUSY when a kind's lock stays held.
    """
    from rankloop import ops
    from rankloop.ab import read_requests
    from registry.store import make_client

    start, end = window(settings, now)
    requests = read_requests(settings, start, end)
    client = make_client(settings)
    verdicts = [guard_kind(settings, kind, requests, client=client, dry_run=dry_run) for kind in kinds]
    for v in verdicts:
        if v.status == "reverted":
            ops.notify(settings, {"flow": "guardrail", "status": "reverted", "kind": v.kind,
                                  "from_version": v.champion, "to_version": v.previous, "reasons": list(v.reasons),
                                  "figures": v.figures, "ledger_entry": v.ledger_entry})
    return verdicts


def verdict_line(v: GuardVerdict) -> str:
    """One line per kind (``rankloop guard``)."""
    versions = "" if v.champion is None else f" v{v.champion}" + (
        f" (previous v{v.previous})" if v.previous is not None else "")
    if v.status == "reverted":
        versions = f" v{v.champion} -> v{v.previous}"
    return f"{v.kind:<7} {v.status.replace('_', ' ')}{versions}: {'; '.join(v.reasons)}"
