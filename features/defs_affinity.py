"""User x item and user x category affinity: this user's past exposures and engagements."""

from __future__ import annotations

import numpy as np

from features.context import ENGAGE, EXPOSURE, BuildContext
from features.defs_activity import smoothed_rate
from features.registry import family, feature, grid

PAIR_COUNTS = [
    *grid(grain=("user_item",), short=("ui",), what=(EXPOSURE, "click", "dismiss"), window=(28,), span=("28d",)),
    dict(grain="user_item", short="ui", what=ENGAGE, window="all", span="all"),
    *grid(grain=("user_category",), short=("uc",), what=(EXPOSURE, "click", ENGAGE), window=(28,), span=("28d",)),
]


@family("{short}_{what}_count_{span}", PAIR_COUNTS, dtype="int32", grain="{grain}", known="request",
        group="affinity", fill=0,
        doc="Number of this user's {what} events on this {grain} before t ({span}).")
def _pair_count(ctx: BuildContext, grain: str, short: str, what: str, window: int | str, span: str) -> np.ndarray:
    return ctx.count(grain, what, None if window == "all" else window)


@family("ui_secs_since_last_{what}", grid(what=(EXPOSURE, ENGAGE)), dtype="float32", grain="user_item",
        known="request", group="affinity",
        doc="Seconds since this user's latest {what} event on this item before t (NaN if none).")
def _pair_recency(ctx: BuildContext, what: str) -> np.ndarray:
    return ctx.secs_since_last("user_item", what)


@feature(dtype="float32", grain="user_category", known="request", group="affinity", fill=0.0, window_days=28)
def uc_click_rate_28d(ctx: BuildContext) -> np.ndarray:
    """Smoothed click-through of this user on this item's category over 28 days."""
    return smoothed_rate(ctx, "user_category", "click", 28)


@feature(dtype="float32", grain="user_category", known="request", group="affinity", fill=0.0, window_days=28)
def uc_engage_share_28d(ctx: BuildContext) -> np.ndarray:
    """Share of the user's engagements in the 28 days before t that were on this item's category."""
    return ctx.count("user_category", ENGAGE, 28) / np.maximum(ctx.count("user", ENGAGE, 28), 1)
