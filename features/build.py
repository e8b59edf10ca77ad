"""Build the feature table of a feature set for a frame of impressions."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from core.config.features import FeatureSettings
from core.schema import TRAIT_COLUMNS
from features.context import ENGAGE, BuildContext
from features.registry import REGISTRY, FeatureSpec
from features.sets import get_feature_set

log = logging.getLogger(__name__)

_QUERY_COLUMNS = ("user_id", "item_id", "ts")
# The impression columns a feature may read (codes, time, the logged slot, the request's context).
QUERY_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "ts", "position", "device", "content_type", "category",
                                  "mood", "time_of_day")
_EVENT_COLUMNS = ("user_id", "item_id", "event_type", "ts")
# Features of one grain share timelines; computing them together bounds memory.
_GRAIN_ORDER = ("context", "impression", "item", "user_item", "user", "user_category")
# user_category features also read a user total (uc_engage_share_28d): its values outlive the user grain.
KEPT_COUNTS = frozenset({("user", ENGAGE, 28)})


def event_columns(users: pd.DataFrame | None = None) -> tuple[str, ...]:
    """The event columns :func:`build_features` reads (a caller may load only these).

    Codes and times (user, item, type, ts), ``value``, ``position``, ``session_id`` (exposures of
    sources without impressions), the events' own ``category``/``content_type`` (item attributes),
    and the Big Five traits logged on events, needed only when ``users`` lacks them.
    Keep in step with the feature functions: ``tests/features`` checks that these columns give the
    same features as the full events."""
    traits = tuple(c for c in TRAIT_COLUMNS if users is None or c not in users.columns)
    return ("user_id", "item_id", "event_type", "ts", "value", "position", "session_id", "category",
            "content_type", *traits)


def build_features(impressions: pd.DataFrame, events: pd.DataFrame, *, items: pd.DataFrame | None = None,
                   users: pd.DataFrame | None = None, settings: FeatureSettings,
                   feature_set: str | None = None) -> pd.DataFrame:
    """Point-in-time features, one row per impression: each uses only events strictly before its ``ts``.

    Args:
        impressions: rows to featurise (``user_id``, ``item_id``, ``ts``; optionally ``position`` and
            the context columns), e.g. the output of :func:`features.labels.impressions`.
        events: canonical interactions (the history; may include events after the impressions).
        items: optional item table (category, content_type, created_at, embedding).
        users: optional user table (trait_* columns, embedding).
        settings: feature hyper-parameters.
        feature_set: name of a registered set (default: ``settings.feature_set``).

    Returns:
        The set's features in declared order, with the dtypes declared, indexed like ``impressions``.
    """
    fset = get_feature_set(feature_set or settings.feature_set)
    return build_columns(impressions, events, fset.features, items=items, users=users, settings=settings)


def build_columns(impressions: pd.DataFrame, events: pd.DataFrame, names: tuple[str, ...], *,
                  items: pd.DataFrame | None = None, users: pd.DataFrame | None = None,
                  settings: FeatureSettings) -> pd.DataFrame:
    """:func:`build_features` for any registered features by name, ``logged`` ones included.

    For analysis and tests (what the logged slot explains, whether a declaration holds): models
    train and serve on feature sets, which hold request-time features only.

    Raises:
        KeyError: a name is not registered.
    """
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unregistered feature(s) {unknown}; `rankloop features` lists the registered ones")
    columns = dict(_iter(impressions, events, tuple(names), items, users, settings))
    # copy=False: the columns are fresh arrays; consolidating them would double the table's memory.
    return pd.DataFrame({n: columns[n] for n in names}, index=impressions.index, copy=False)


def iter_features(impressions: pd.DataFrame, events: pd.DataFrame, *, items: pd.DataFrame | None = None,
                  users: pd.DataFrame | None = None, settings: FeatureSettings,
                  feature_set: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """:func:`build_features` one column at a time: ``(name, values)`` in computation order (grain
    by grain, not the set's order), each array aligned with ``impressions``' rows. A caller that
    writes each column away as it comes never holds the whole table. The inputs are checked
    before the first column."""
    fset = get_feature_set(feature_set or settings.feature_set)
    return _iter(impressions, events, fset.features, items, users, settings)


def _iter(impressions: pd.DataFrame, events: pd.DataFrame, names: tuple[str, ...], items: pd.DataFrame | None,
          users: pd.DataFrame | None, settings: FeatureSettings,
          given: dict[Any, np.ndarray] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    _check(impressions, _QUERY_COLUMNS, "impressions")
    _check(events, _EVENT_COLUMNS, "events")
    _check_windows(names, settings)
    specs = _ordered(names)
    # Which memoised aggregate each feature reads, from the same features over a few rows first.
    probe = BuildContext(impressions.iloc[:_PROBE_ROWS].copy(), events.iloc[:_PROBE_ROWS].copy(), items, users,
                         settings, kept_counts=KEPT_COUNTS)
    last_use = _last_uses(probe, specs)
    del probe
    return _columns(BuildContext(impressions, events, items, users, settings, kept_counts=KEPT_COUNTS,
                                 given=dict(given or {})), specs, last_use)


# Rows of the impressions and events the memo probe computes the features on.
_PROBE_ROWS = 2_000


def iter_columns(impressions: pd.DataFrame, events: pd.DataFrame, names: tuple[str, ...], *,
                 items: pd.DataFrame | None = None, users: pd.DataFrame | None = None, settings: FeatureSettings,
                 given: dict[Any, np.ndarray] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """:func:`iter_features` for registered features by name, the builder ``given`` aggregates made elsewhere
    (``BuildContext.given``: what a build by key bucket is given from the whole window)."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unregistered feature(s) {unknown}; `rankloop features` lists the registered ones")
    return _iter(impressions, events, tuple(names), items, users, settings, given=given)


def keys_read(impressions: pd.DataFrame, events: pd.DataFrame, names: tuple[str, ...], *,
              items: pd.DataFrame | None = None, users: pd.DataFrame | None = None,
              settings: FeatureSettings) -> set[Any]:
    """The memoised aggregates (and event columns) the features ``names`` read, from the builder's probe
    (the features computed on a few rows: the keys name aggregates, not data)."""
    _check(impressions, _QUERY_COLUMNS, "impressions")
    _check(events, _EVENT_COLUMNS, "events")
    probe = BuildContext(impressions.iloc[:_PROBE_ROWS].copy(), events.iloc[:_PROBE_ROWS].copy(), items, users,
                         settings, kept_counts=KEPT_COUNTS)
    return set(_last_uses(probe, _ordered(tuple(names))))


def _ordered(names: tuple[str, ...]) -> list[FeatureSpec]:
    return sorted((REGISTRY[n] for n in names), key=lambda s: _GRAIN_ORDER.index(s.grain))


def _last_uses(ctx: BuildContext, specs: list[FeatureSpec]) -> dict[Any, int]:
    """The index of the last feature in ``specs`` that reads each memoised aggregate, as computing
    them on ``ctx`` (a few rows: the keys name aggregates, not data) shows."""
    last: dict[Any, int] = {}
    for i, spec in enumerate(specs):
        ctx.trace = lambda key, i=i: last.__setitem__(key, i)
        spec.fn(ctx)
    ctx.trace = None
    return last


def _columns(ctx: BuildContext, specs: list[FeatureSpec], last_use: dict[Any, int]) -> Iterator[tuple[str, np.ndarray]]:
    """Each feature in turn. A memoised aggregate is forgotten after the last feature that reads it
    (``last_use``; what the probe did not see stays until the grain ends, or to the end if kept across
    grains), and every one not kept across grains at the end of its grain: the cache never holds what no
    later feature reads. The ones kept across grains (masks, attribute codes, event values, kept counts)
    go after their last reader too. Forgetting only costs time: an
    aggregate read again is computed again, the same. An event column read through
    ``BuildContext.event_floats`` (the traits logged on events) is dropped after its last reader the same
    way; reading it again raises (the probe sees every reader, as for the aggregates)."""
    grain = None
    for i, spec in enumerate(specs):
        if spec.grain != grain:
            ctx.release()
            grain = spec.grain
        started = time.perf_counter()
        values = finish(spec, spec.fn(ctx))
        log.debug("feature %s: %.2fs", spec.name, time.perf_counter() - started)
        ctx.forget(key for key, last in last_use.items() if last == i)
        yield spec.name, values
    ctx.release()


def finish(spec: FeatureSpec, values: np.ndarray) -> np.ndarray:
    """Apply a spec's null policy and dtype to raw feature values."""
    values = np.asarray(values, dtype=np.float64)
    if spec.fill is not None:
        values = np.where(np.isfinite(values), values, spec.fill)
    else:
        values = np.where(np.isfinite(values), values, np.nan)
    return values.astype(spec.dtype)


def _check(frame: pd.DataFrame, required: tuple[str, ...], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lack required column(s) {missing}; found {list(frame.columns)}")
    if not isinstance(frame["ts"].dtype, pd.DatetimeTZDtype):
        raise TypeError(f"{what}.ts must be tz-aware datetime (UTC), got dtype {frame['ts'].dtype}")


def _check_windows(names: tuple[str, ...], settings: FeatureSettings) -> None:
    windows = {REGISTRY[n].window_days for n in names} - {None}
    outside = sorted(w for w in windows if w > max(settings.windows_days, default=0))
    if outside:
        offenders = [n for n in names if REGISTRY[n].window_days in outside]
        raise ValueError(
            f"features {offenders} look back {outside} days, beyond settings.windows_days={settings.windows_days}"
        )
