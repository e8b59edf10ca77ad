"""Rewards of logged impressions and slates, from the seed systems' reward tables.

Both functions take canonical events (``core.schema.INTERACTION_SCHEMA`` columns). A response
(click, save, rating, ...) is attributed to the impression with the same ``request_id``,
``user_id`` and ``item_id`` shown at or before the response. Responses without a
``request_id`` cannot be attributed and are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.config.policy import RewardSettings
from core.schema import TRAIT_COLUMNS, EventType

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


# What an impression's row carries besides its key and time, unless a caller asks for less.
_CARRIED: tuple[str, ...] = ("position", "propensity", *CONTEXT_COLUMNS)


def _impressions(events: pd.DataFrame, carry: Sequence[str] = _CARRIED) -> pd.DataFrame:
    """The first impression (by ts) of each KEY, in ts order, with its key, time and ``carry`` columns
    (null where the events lack one).

    Rows are chosen on integer codes and the needed columns taken once (no sorted full-width copy)."""
    rows = np.flatnonzero(((events["event_type"] == EventType.IMPRESSION.value) & events["request_id"].notna()).to_numpy())
    rows = rows[np.argsort(_ns(events["ts"].iloc[rows]), kind="stable")]
    code = _key_codes(events[KEY].take(rows), events[KEY].iloc[:0])[0]  # only the key columns are copied
    rows = rows[np.sort(np.unique(code, return_index=True)[1])]
    keep = [*KEY, "ts", *carry]
    present = [c for c in keep if c in events.columns]
    return events[present].take(rows).reindex(columns=keep).reset_index(drop=True)


def _attributed_responses(events: pd.DataFrame, impressions: pd.DataFrame) -> pd.DataFrame:
    """Response rows with ``imp``, the row of their impression in ``impressions``, keeping only
    those at/after the impression. Keys are matched as integer codes, not strings."""
    cols = ["event_type", "value", "ts"] + (["mood_delta"] if "mood_delta" in events.columns else [])
    # only the columns read are copied: the responses' keys and what the rewards read
    resp = events.loc[(events["event_type"] != EventType.IMPRESSION.value) & events["request_id"].notna(), [*KEY, *cols]]
    dropped = int(((events["event_type"] != EventType.IMPRESSION.value) & events["request_id"].isna()).sum())
    if dropped:
        logger.info("ignored %d response event(s) without request_id", dropped)
    imp_key, resp_key = _key_codes(impressions, resp)
    row_of = np.full(int(max(imp_key.max(initial=-1), resp_key.max(initial=-1))) + 1, -1, dtype=np.int64)
    row_of[imp_key] = np.arange(len(impressions))  # impression keys are unique
    imp_row = row_of[resp_key]
    found = imp_row >= 0
    joined = resp.loc[found, cols].reset_index(drop=True).assign(imp=imp_row[found])
    imp_ts = _ns(impressions["ts"])[joined["imp"].to_numpy()]
    return joined[_ns(joined["ts"]) >= imp_ts]


def _ns(ts: pd.Series) -> np.ndarray:
    """Timestamps as naive UTC datetime64[ns] (comparable whatever the unit and zone)."""
    return pd.to_datetime(ts, utc=True).to_numpy(dtype="datetime64[ns]")


def _key_codes(left: pd.DataFrame, right: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One int64 code per KEY tuple, shared by both frames (equal tuples, equal codes)."""
    code = np.zeros(len(left) + len(right), dtype=np.int64)
    for col in KEY:
        values = pd.concat([left[col], right[col]], ignore_index=True)
        col_code, uniques = pd.factorize(values)
        code = pd.factorize(code * (len(uniques) + 1) + (col_code + 1))[0].astype(np.int64)
    return code[: len(left)], code[len(left):]


def _per_impression(resp: pd.DataFrame, mask: np.ndarray | pd.Series, n: int,
                    weights: np.ndarray | None = None) -> np.ndarray:
    rows = resp["imp"].to_numpy()[np.asarray(mask)]
    return np.bincount(rows, weights=None if weights is None else weights[np.asarray(mask)], minlength=n)


def _once(resp: pd.DataFrame, event_type: str, n: int) -> np.ndarray:
    """1.0 per impression with at least one event of this type."""
    return (_per_impression(resp, resp["event_type"] == event_type, n) > 0).astype(float)


def _count(resp: pd.DataFrame, event_type: str, n: int) -> np.ndarray:
    return _per_impression(resp, resp["event_type"] == event_type, n).astype(float)


def _rating(resp: pd.DataFrame, table: dict[int, float], n: int) -> np.ndarray:
    """Reward of the impression's last rating (stars rounded to an integer)."""
    rated = resp[(resp["event_type"] == EventType.RATING.value) & resp["value"].notna()]
    last = rated.sort_values("ts", kind="stable").groupby("imp")["value"].last()
    stars = pd.Series(np.rint(last.to_numpy(dtype=float)).astype(int), index=last.index)
    out = np.zeros(n)
    out[last.index.to_numpy()] = stars.map({int(k): float(v) for k, v in table.items()}).fillna(0.0).to_numpy(float)
    return out


def _dwell(resp: pd.DataFrame, cap: float, n: int) -> np.ndarray:
    timed = resp["event_type"].isin([EventType.DWELL.value, EventType.VIEW.value]) & resp["value"].notna()
    total = _per_impression(resp, timed, n, resp["value"].to_numpy(dtype=float, na_value=0.0))
    return np.clip(total, 0.0, cap)


def impression_rewards(events: pd.DataFrame, settings: RewardSettings, *,
                       carry: Sequence[str] = _CARRIED) -> pd.DataFrame:
    """Bandit reward of every logged impression.

    reward = click (once) + save (once) + rating table[last stars] + dwell_per_second * seconds
    (view/dwell values, capped) + view_without_click when nobody clicked.

    Args:
        events: canonical events (impressions and responses).
        settings: the reward table.
        carry: the impression's columns each row keeps besides its key and time (default: position,
            propensity and the context columns; a caller that reads only the rewards passes ``()``).

    Returns:
        One row per impression: request_id, user_id, item_id, ts, the ``carry`` columns,
        ``reward`` (float), ``clicked`` and ``success`` (reward > success_threshold).
    """
    _check_events(events)
    imp = _impressions(events, carry)
    return _bandit_rewards(imp, _attributed_responses(events, imp), settings)


def _bandit_rewards(imp: pd.DataFrame, resp: pd.DataFrame, settings: RewardSettings) -> pd.DataFrame:
    n = len(imp)
    clicked = _once(resp, EventType.CLICK.value, n)
    reward = (
        settings.click * clicked
        + settings.save * _once(resp, EventType.SAVE.value, n)
        + _rating(resp, settings.rating, n)
        + settings.dwell_per_second * _dwell(resp, settings.dwell_cap_seconds, n)
        + settings.view_without_click * (clicked == 0)
    )
    out = imp.assign(reward=reward, clicked=clicked > 0)
    return out.assign(success=out["reward"] > settings.success_threshold)


def _mood(resp: pd.DataFrame, n: int) -> np.ndarray:
    if "mood_delta" not in resp.columns:
        return np.zeros(n)
    delta = resp["mood_delta"]
    return np.clip(_per_impression(resp, delta.notna(), n, delta.to_numpy(dtype=float, na_value=0.0)), -1.0, 1.0)


def q_item_rewards(events: pd.DataFrame, settings: RewardSettings) -> pd.DataFrame:
    """Q reward of every impression: like, dislike, completion (once), skip, share, mood change.

    Returns:
        The impression rows (as :func:`impression_rewards`) with ``q_reward`` and ``liked`` (bool).
    """
    _check_events(events)
    imp = _impressions(events)
    return _q_item_rewards(imp, _attributed_responses(events, imp), settings)


def _q_item_rewards(imp: pd.DataFrame, resp: pd.DataFrame, settings: RewardSettings) -> pd.DataFrame:
    n = len(imp)
    likes = _count(resp, EventType.LIKE.value, n)
    q = (
        settings.q_like * likes
        + settings.q_dislike * _count(resp, EventType.DISLIKE.value, n)
        + settings.q_complete * _once(resp, EventType.COMPLETE.value, n)
        + settings.q_skip * _count(resp, EventType.SKIP.value, n)
        + settings.q_share * _count(resp, EventType.SHARE.value, n)
        + settings.q_mood_improvement * _mood(resp, n)
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
    return _slates(q_item_rewards(events, settings))


def _slates(items: pd.DataFrame) -> pd.DataFrame:
    items = items.sort_values("ts", kind="stable")
    context = ["ts", "action_id", "content_type", "mood", "time_of_day", *TRAIT_COLUMNS]
    grouped = items.groupby(["request_id", "user_id"], sort=False)
    slates = grouped[context].first()
    slates["reward"] = grouped["q_reward"].sum()
    slates["n_items"] = grouped.size()
    slates["likes"] = grouped["liked"].sum()
    return slates.reset_index().sort_values(["ts", "request_id"], kind="stable").reset_index(drop=True)


def reward_frames(events: pd.DataFrame, settings: RewardSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(impression_rewards(events), q_rewards(events))`` from one impression frame and one
    attribution of the responses (each would otherwise build both again)."""
    _check_events(events)
    imp = _impressions(events)
    resp = _attributed_responses(events, imp)
    slates = _slates(_q_item_rewards(imp, resp, settings))
    return _bandit_rewards(imp, resp, settings), slates


def has_logged_impressions(events: pd.DataFrame) -> bool:
    """Whether ``events`` hold an impression with a request_id (what the reward functions attribute to)."""
    if "request_id" not in events.columns:
        return False
    return bool(((events["event_type"] == EventType.IMPRESSION.value) & events["request_id"].notna()).any())


def with_exposure_requests(events: pd.DataFrame) -> pd.DataFrame:
    """``events`` with every missing request_id filled as :func:`exposure_events` groups trials:
    ``user|s:<session>``, else ``user|d:<UTC day>``. Row by row, so a partition of the rows gets the
    same requests as the whole window."""
    if "request_id" not in events.columns:
        events = events.assign(request_id=pd.Series(None, index=events.index, dtype=object))
    day = pd.to_datetime(events["ts"], utc=True).dt.strftime("%Y-%m-%d").astype("string")
    session = events["session_id"].astype("string") if "session_id" in events.columns else None
    user = events["user_id"].astype("string")
    group = user + "|" + (("s:" + session).fillna("d:" + day) if session is not None else "d:" + day)
    request = events["request_id"].astype("string").fillna(group)
    return events.assign(request_id=request.astype(object))


def exposure_events(events: pd.DataFrame) -> pd.DataFrame:
    """``events`` with one synthetic impression per (user, item, request) at its first event.

    For logs without impressions: the views, clicks, ratings or purchases themselves are the
    trials. The request is the event's request_id, else ``user|session``, else ``user|UTC day``
    (written into ``request_id`` of every row), so the reward functions attribute each group's
    events to its synthetic impression. The synthetic rows copy their first event's context and
    carry no position, propensity or value: nothing logged says how likely the item was to be
    shown, so off-policy estimates cannot be made from them.

    Returns:
        A new frame (``events`` is not modified), the synthetic impressions first.
    """
    ev = with_exposure_requests(events)
    _check_events(ev)
    first = ev.take(np.argsort(_ns(ev["ts"]), kind="stable")).drop_duplicates(KEY)
    shown = first.assign(event_type=EventType.IMPRESSION.value, value=np.nan,
                         **{c: np.nan for c in ("position", "propensity") if c in ev.columns})
    if "event_id" in shown.columns:
        shown = shown.assign(event_id="exposure:" + shown["event_id"].astype("string"))
    return pd.concat([shown, ev], ignore_index=True)


# --- partitions of whole requests (the Dask executor, docs/scale-out.md) --------------------------
# A reward needs every row of its request (the impressions, and the responses after them, which may
# fall on a later day). A request belongs to the UTC day of its first impression (its "home", as a
# query does in features/partitioned.py): that day's partition takes the request's rows from every
# day they fall on, and no other partition sees them. Responses before their request's first
# impression cannot be attributed (their impression comes later) and rows without a request_id
# are ignored, so rows of requests without a home do not change any reward.
def request_index(events: pd.DataFrame) -> pd.DataFrame:
    """Every request_id in ``events`` with its first impression's ts in ``events`` (NaT: none there).

    Needs request_id, event_type and ts; one row per request."""
    missing = [c for c in ("request_id", "event_type", "ts") if c not in events.columns]
    if missing:
        raise ValueError(f"events lack column(s) {missing}; expected at least request_id, event_type, ts")
    rows = events[events["request_id"].notna()]
    ts = pd.to_datetime(rows["ts"], utc=True).where(rows["event_type"] == EventType.IMPRESSION.value)
    out = ts.groupby(rows["request_id"].to_numpy(), sort=True).min()
    return pd.DataFrame({"request_id": out.index.to_numpy(dtype=object), "first_impression": out.to_numpy()})


def request_moves(index_by_day: dict) -> pd.DataFrame:
    """The rows that leave their day's partition for their request's home.

    Args:
        index_by_day: per UTC day (``datetime.date``), :func:`request_index` of that day's events.

    Returns:
        request_id, day (where some of its rows are), home (the day of its first impression,
        earlier than ``day``): the day's partition leaves these requests out and the home's
        partition reads them from that day.
    """
    frames = [f.assign(day=pd.Timestamp(day)) for day, f in index_by_day.items() if len(f)]
    if not frames:
        return pd.DataFrame({"request_id": pd.Series(dtype=object), "day": pd.Series(dtype="datetime64[ns]"),
                             "home": pd.Series(dtype="datetime64[ns]")})
    both = pd.concat(frames, ignore_index=True)
    first = both.groupby("request_id", sort=False)["first_impression"].transform("min")
    home = pd.to_datetime(first, utc=True).dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
    moved = home.notna() & (home < both["day"])
    return pd.DataFrame({"request_id": both.loc[moved, "request_id"].to_numpy(dtype=object),
                         "day": both.loc[moved, "day"].to_numpy(), "home": home[moved].to_numpy()})
