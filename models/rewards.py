"""Rewards of logged impressions and slates, from the seed systems' reward tables.

Both functions take canonical events (``rankloop.schema.INTERACTION_SCHEMA`` columns). A response
(click, save, rating, ...) is attributed to the impression with the same ``request_id``,
``user_id`` and ``item_id`` shown at or before the response. Responses without a
``request_id`` cannot be attributed and are ignored.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from models.policy_config import RewardSettings
from rankloop.schema import TRAIT_COLUMNS, EventType

logger = logging.getLogger(__name__)

KEY = ["request_id", "user_id", "item_id"]
CONTEXT_COLUMNS = (
    "session_id", "policy_version", "action_id", "device", "content_type", "category", "mood",
    "time_of_day", *TRAIT_COLUMNS,
)
_NEEDED = ("user_id", "item_id", "event_type", "ts", "request_id")


def _check_events(events: pd.DataFrame) -> None:
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    missing = [c for c in _NEEDED if c not in events.columns]
    if missing:
        raise ValueError(f"events lack column(s) {missing}; expected at least {list(_NEEDED)}")


def _impressions(events: pd.DataFrame) -> pd.DataFrame:
    imp = events[(events["event_type"] == EventType.IMPRESSION.value) & events["request_id"].notna()]
    imp = imp.sort_values("ts", kind="stable").drop_duplicates(KEY, keep="first")
    keep = [*KEY, "ts", "position", "propensity", *CONTEXT_COLUMNS]
    out = imp.reindex(columns=keep).reset_index(drop=True)
    return out


def _attributed_responses(events: pd.DataFrame, impressions: pd.DataFrame) -> pd.DataFrame:
    """Response rows joined to their impression, keeping only those at/after the impression."""
    resp = events[(events["event_type"] != EventType.IMPRESSION.value) & events["request_id"].notna()]
    dropped = int(((events["event_type"] != EventType.IMPRESSION.value) & events["request_id"].isna()).sum())
    if dropped:
        logger.info("ignored %d response event(s) without request_id", dropped)
    cols = [*KEY, "event_type", "value", "ts"] + (["mood_delta"] if "mood_delta" in resp.columns else [])
    resp = resp.reindex(columns=cols)
    joined = resp.merge(impressions[[*KEY, "ts"]], on=KEY, suffixes=("", "_imp"))
    return joined[joined["ts"] >= joined["ts_imp"]]


def _once(resp: pd.DataFrame, event_type: str) -> pd.Series:
    """1.0 per impression key with at least one event of this type."""
    hit = resp.loc[resp["event_type"] == event_type, KEY].drop_duplicates()
    return pd.Series(1.0, index=pd.MultiIndex.from_frame(hit), dtype=float)


def _count(resp: pd.DataFrame, event_type: str) -> pd.Series:
    return resp[resp["event_type"] == event_type].groupby(KEY).size().astype(float)


def _rating(resp: pd.DataFrame, table: dict[int, float]) -> pd.Series:
    """Reward of the impression's last rating (stars rounded to an integer)."""
    rated = resp[(resp["event_type"] == EventType.RATING.value) & resp["value"].notna()]
    last = rated.sort_values("ts", kind="stable").groupby(KEY)["value"].last()
    stars = pd.Series(np.rint(last.to_numpy(dtype=float)).astype(int), index=last.index)
    return stars.map({int(k): float(v) for k, v in table.items()}).fillna(0.0).astype(float)


def _dwell(resp: pd.DataFrame, cap: float) -> pd.Series:
    timed = resp[resp["event_type"].isin([EventType.DWELL.value, EventType.VIEW.value]) & resp["value"].notna()]
    return timed.groupby(KEY)["value"].sum().clip(lower=0.0, upper=cap)


def _on(impressions: pd.DataFrame, series: pd.Series) -> np.ndarray:
    """Align a per-key series onto the impression rows (0 where absent)."""
    index = pd.MultiIndex.from_frame(impressions[KEY])
    return series.reindex(index).fillna(0.0).to_numpy(dtype=float)


def impression_rewards(events: pd.DataFrame, settings: RewardSettings) -> pd.DataFrame:
    """Bandit reward of every logged impression.

    reward = click (once) + save (once) + rating table[last stars] + dwell_per_second * seconds
    (view/dwell values, capped) + view_without_click when nobody clicked.

    Args:
        events: canonical events (impressions and responses).
        settings: the reward table.

    Returns:
        One row per impression: request_id, user_id, item_id, ts, position, propensity, the
        context columns, ``reward`` (float) and ``success`` (reward > success_threshold).
    """
    _check_events(events)
    imp = _impressions(events)
    resp = _attributed_responses(events, imp)
    clicked = _on(imp, _once(resp, EventType.CLICK.value))
    reward = (
        settings.click * clicked
        + settings.save * _on(imp, _once(resp, EventType.SAVE.value))
        + _on(imp, _rating(resp, settings.rating))
        + settings.dwell_per_second * _on(imp, _dwell(resp, settings.dwell_cap_seconds))
        + settings.view_without_click * (clicked == 0)
    )
    out = imp.assign(reward=reward, clicked=clicked > 0)
    return out.assign(success=out["reward"] > settings.success_threshold)


def _mood(resp: pd.DataFrame) -> pd.Series:
    if "mood_delta" not in resp.columns:
        return pd.Series(dtype=float)
    moods = resp[resp["mood_delta"].notna()]
    return moods.groupby(KEY)["mood_delta"].sum().clip(lower=-1.0, upper=1.0)


def q_item_rewards(events: pd.DataFrame, settings: RewardSettings) -> pd.DataFrame:
    """Q reward of every impression: like, dislike, completion (once), skip, share, mood change.

    Returns:
        The impression rows (as :func:`impression_rewards`) with ``q_reward`` and ``liked`` (bool).
    """
    _check_events(events)
    imp = _impressions(events)
    resp = _attributed_responses(events, imp)
    likes = _on(imp, _count(resp, EventType.LIKE.value))
    q = (
        settings.q_like * likes
        + settings.q_dislike * _on(imp, _count(resp, EventType.DISLIKE.value))
        + settings.q_complete * _on(imp, _once(resp, EventType.COMPLETE.value))
        + settings.q_skip * _on(imp, _count(resp, EventType.SKIP.value))
        + settings.q_share * _on(imp, _count(resp, EventType.SHARE.value))
        + settings.q_mood_improvement * _on(imp, _mood(resp))
    )
    return imp.assign(q_reward=q, liked=likes > 0)


def q_rewards(events: pd.DataFrame, settings: RewardSettings) -> pd.DataFrame:
    """Q reward of every logged slate: the sum of its items' Q rewards.

    Args:
        events: canonical events (impressions and responses).
        settings: the reward table.

    Returns:
        One row per (request_id, user_id), in time order: ts (first impression), action_id,
        the slate's context (content_type, mood, time_of_day, traits: first impression),
        ``reward``, ``n_items`` and ``likes``.
    """
    items = q_item_rewards(events, settings).sort_values("ts", kind="stable")
    context = ["ts", "action_id", "content_type", "mood", "time_of_day", *TRAIT_COLUMNS]
    grouped = items.groupby(["request_id", "user_id"], sort=False)
    slates = grouped[context].first()
    slates["reward"] = grouped["q_reward"].sum()
    slates["n_items"] = grouped.size()
    slates["likes"] = grouped["liked"].sum()
    return slates.reset_index().sort_values(["ts", "request_id"], kind="stable").reset_index(drop=True)
