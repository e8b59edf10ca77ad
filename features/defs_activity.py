"""User and item activity: windowed counts, smoothed rates, trends, dwell, ratings, recency, position bias."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.config.features import FeatureSettings
from features.context import ANY, ENGAGE, EXPOSURE, BuildContext
from features.registry import family, feature, grid
from features.timeline import counts_before, to_fixed

WINDOWS: tuple[int, ...] = (1, 7, 28)
USER_COUNTED: tuple[str, ...] = (ANY, EXPOSURE, "click", "view", "save", "dismiss", ENGAGE)
ITEM_COUNTED: tuple[str, ...] = (EXPOSURE, "click", "save", "dismiss", ENGAGE)


def past_rate(ctx: BuildContext, what: str) -> np.ndarray:
    """Global rate of ``what`` per exposure over all events before t (the prior mean; configured default before any)."""
    return ctx.memo(("past_rate", what), lambda: _rate_before(ctx, what, ctx.q_ms), keep=True)


def _rate_before(ctx: BuildContext, what: str, at_ms: np.ndarray) -> np.ndarray:
    """Global hits of ``what`` per exposure over all events strictly before each time in ``at_ms``."""
    zero_e, zero_q = np.zeros(len(ctx.ev_ms), np.int8), np.zeros(len(at_ms), np.int8)
    shown = counts_before(np.where(ctx.mask(EXPOSURE), zero_e, -1), ctx.ev_ms, zero_q, at_ms)
    hits = counts_before(np.where(ctx.mask(what), zero_e, -1), ctx.ev_ms, zero_q, at_ms)
    return rate_from_counts(shown, hits, ctx.settings)


def rate_from_counts(shown: np.ndarray, hits: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """The global past rate from the counts of exposures and hits before t (the prior mean before any)."""
    rate = np.where(shown > 0, hits / np.maximum(shown, 1), settings.ctr_prior_mean)
    return np.clip(rate, 1e-6, 1.0)


def position_rate(prior: np.ndarray, clicks: np.ndarray, shown: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Fixed-point click-through at a position, (clicks + k * prior) / (shown + k), from the counts at that
    position before t (``prior`` is overwritten: the global past click-through at t)."""
    shown = shown.astype(np.float64)
    k = settings.ctr_prior_strength
    rate = prior
    rate *= k
    rate += clicks  # unknown position (bucket -1): no counts, the prior
    del clicks
    shown += k
    rate /= shown
    del shown
    return to_fixed(rate)


def smoothed_rate(ctx: BuildContext, grain: str, what: str, window: int | None) -> np.ndarray:
    """(hits + k * prior) / (exposures + k), k = ctr_prior_strength, prior = global past rate."""
    k = ctx.settings.ctr_prior_strength
    prior = past_rate(ctx, what)
    return (ctx.count(grain, what, window) + k * prior) / (ctx.count(grain, EXPOSURE, window) + k)


COUNTS = grid(grain=("user",), what=USER_COUNTED, window=WINDOWS) + grid(grain=("item",), what=ITEM_COUNTED, window=WINDOWS)
RATES = grid(grain=("user", "item"), what=("click", ENGAGE), window=(7, 28))
TRENDS = [dict(grain="user", what=ANY), dict(grain="item", what=EXPOSURE), dict(grain="item", what="click")]


@family("{grain}_{what}_count_{window}d", COUNTS, dtype="int32", grain="{grain}", known="request",
        group="{grain}_activity", fill=0,
        doc="Number of the {grain}'s events of kind '{what}' in the {window} days before t.")
def _windowed_count(ctx: BuildContext, grain: str, what: str, window: int) -> np.ndarray:
    return ctx.count(grain, what, window)


@family("{grain}_{what}_rate_{window}d", RATES, dtype="float32", grain="{grain}", known="request",
        group="{grain}_rates", fill=0.0,
        doc="Smoothed events of kind '{what}' per impression of the {grain} over {window} days (Bayesian prior: global past rate).")
def _smoothed_rate(ctx: BuildContext, grain: str, what: str, window: int) -> np.ndarray:
    return smoothed_rate(ctx, grain, what, window)


@family("{grain}_{what}_trend_7d_28d", TRENDS, dtype="float32", grain="{grain}", known="request",
        group="{grain}_rates", fill=1.0,
        window_days=28,
        doc="Daily {what} events of the {grain} over 7 days vs over 28 days, (n7/7 + 1) / (n28/28 + 1).")
def _trend(ctx: BuildContext, grain: str, what: str) -> np.ndarray:
    return (ctx.count(grain, what, 7) / 7 + 1.0) / (ctx.count(grain, what, 28) / 28 + 1.0)


@feature(dtype="float32", grain="item", known="request", group="item_rates", fill=1.0, window_days=28)
def item_click_rate_trend_7d_28d(ctx: BuildContext) -> np.ndarray:
    """Smoothed item click-through over 7 days divided by that over 28 days."""
    return smoothed_rate(ctx, "item", "click", 7) / smoothed_rate(ctx, "item", "click", 28)


@family("{grain}_{what}_seconds_mean_28d", grid(grain=("user", "item"), what=("view",)), dtype="float32",
        grain="{grain}", known="request", group="{grain}_dwell", window_days=28,
        doc="Mean seconds of the {grain}'s {what} events with a duration in the 28 days before t.")
def _value_mean(ctx: BuildContext, grain: str, what: str) -> np.ndarray:
    n = ctx.total(grain, what, "has_value", 28)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, ctx.total(grain, what, "value", 28) / n, np.nan)


@family("{grain}_rating_mean_28d", grid(grain=("user", "item")), dtype="float32", grain="{grain}",
        known="request", group="{grain}_dwell", window_days=28,
        doc="Mean stars of the {grain}'s ratings in the 28 days before t.")
def _rating_mean(ctx: BuildContext, grain: str) -> np.ndarray:
    return _value_mean(ctx, grain, "rating")


@family("user_view_seconds_sum_{window}d", grid(window=(1, 7)), dtype="float32", grain="user", known="request",
        group="user_dwell",
        fill=0.0, doc="Total seconds the user spent viewing items in the {window} days before t.")
def _view_seconds_sum(ctx: BuildContext, window: int) -> np.ndarray:
    return ctx.total("user", "view", "value", window)


RECENCY = [dict(grain="user", what=ANY, end="last"), dict(grain="user", what="click", end="last"),
           dict(grain="user", what=ANY, end="first"), dict(grain="item", what=EXPOSURE, end="first"),
           dict(grain="item", what=EXPOSURE, end="last"), dict(grain="item", what="click", end="last")]


@family("{grain}_secs_since_{end}_{what}", RECENCY, dtype="float32", grain="{grain}", known="request", group="recency",
        doc="Seconds from the {grain}'s {end} event of kind '{what}' before t to t (NaN if none).")
def _recency(ctx: BuildContext, grain: str, what: str, end: str) -> np.ndarray:
    return ctx.secs_since_last(grain, what) if end == "last" else ctx.secs_since_first(grain, what)


def position_weights(ctx: BuildContext) -> np.ndarray:
    """Per event: expected clicks of an exposure at its position, from the position CTR curve before it."""
    def make():
        exposed = ctx.mask(EXPOSURE)
        bucket = _position_bucket(ctx)
        rows = np.flatnonzero(exposed)
        at = ctx.ev_ms[rows]
        rate = _rate_before(ctx, "click", at)  # the prior, then (clicks + k * prior) / (shown + k) in place
        slot = bucket[rows]
        clicks = counts_before(np.where(ctx.mask("click"), bucket, -1), ctx.ev_ms, slot, at)
        shown = counts_before(np.where(exposed, bucket, -1), ctx.ev_ms, slot, at)
        del at, slot
        weights = np.zeros(len(bucket), dtype=np.int64)
        weights[rows] = position_rate(rate, clicks, shown, ctx.settings)
        return weights
    return ctx.memo(("values", "position_weight"), make, keep=True)


def _position_bucket(ctx: BuildContext) -> np.ndarray:
    return position_buckets(ctx.events, len(ctx.ev_ms), ctx.settings)


def position_buckets(events: pd.DataFrame, n: int, settings: FeatureSettings) -> np.ndarray:
    """Per event, its bucket of the position click-through curve (-1: no position)."""
    pos = events["position"] if "position" in events.columns else None
    if pos is None:
        return np.full(n, -1, dtype=np.int8)
    values = pos.to_numpy(dtype=np.float64, na_value=np.nan)
    if not (values.flags.owndata and values.flags.writeable):  # a view of the events' column: never changed
        values = values.copy()
    # The smallest integers that hold every bucket (1 byte a row, not 8): the counts take any integer keys, and
    # any negative one (a negative position) is no bucket, as -1 is. In place: one float array, not four.
    top = settings.max_position
    kind = np.int8 if top < 2**7 else np.int16 if top < 2**15 else np.int64
    missing = np.isnan(values)
    np.clip(values, -1, top, out=values)
    values[missing] = -1
    return values.astype(kind)


@family("{grain}_pbc_click_ratio_28d", grid(grain=("user", "item")), dtype="float32", grain="{grain}",
        known="request", group="position_bias", fill=1.0, window_days=28,
        doc="Position-bias-corrected click-through of the {grain} over 28 days: (clicks + a) / (expected clicks + a).")
def _pbc_ratio(ctx: BuildContext, grain: str) -> np.ndarray:
    position_weights(ctx)
    a = ctx.settings.ctr_prior_strength * ctx.settings.ctr_prior_mean
    expected = ctx.total(grain, EXPOSURE, "position_weight", 28)
    return (ctx.count(grain, "click", 28) + a) / (expected + a)
