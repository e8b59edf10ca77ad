"""Seeded synthetic canonical interactions, and one injected bad row per rule (tests and benches)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.schema import INTERACTION_SCHEMA, SNAPSHOT_SCHEMA, SOURCE_ERRORS, TRAIT_COLUMNS, EventType
from data_contracts.rules import ID_COLUMNS, LENGTH_CHECKED

ENGAGEMENT_TYPES = (EventType.CLICK.value, EventType.SAVE.value, EventType.CART_ADD.value, EventType.PURCHASE.value)
_EVENT_MIX: dict[str, float] = {
    EventType.IMPRESSION: 0.55, EventType.VIEW: 0.12, EventType.CLICK: 0.12, EventType.DWELL: 0.06,
    EventType.RATING: 0.05, EventType.COMPLETE: 0.04, EventType.SAVE: 0.02, EventType.PURCHASE: 0.02,
    EventType.SKIP: 0.02,
}


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def _pick(vocab: tuple[str, ...], rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array(vocab, pa.string()).take(pa.array(rng.integers(0, len(vocab), n)))


def _values(event_type: np.ndarray, rng: np.random.Generator) -> pa.Array:
    n = len(event_type)
    value = np.full(n, np.nan)
    for kind, draw in ((EventType.RATING, lambda k: rng.integers(1, 6, k).astype(float)),
                       (EventType.DWELL, lambda k: rng.exponential(60.0, k)),
                       (EventType.VIEW, lambda k: rng.exponential(30.0, k)),
                       (EventType.COMPLETE, lambda k: rng.uniform(0, 100, k))):
        where = event_type == kind.value
        value[where] = np.minimum(draw(int(where.sum())), 3600.0)
    return pa.array(value, mask=np.isnan(value))


def synthetic_interactions(n: int, *, window: tuple[datetime, datetime], seed: int = 0) -> pa.Table:
    """``n`` valid canonical rows with ts in ``[start, end)`` (every rule holds on them).

    Args:
        n: row count.
        window: ``(start, end)``, timezone-aware.
        seed: numpy seed; equal seeds give equal tables.
    """
    rng = np.random.default_rng(seed)
    kinds = np.array(list(_EVENT_MIX))
    event_type = kinds[rng.choice(len(kinds), n, p=np.array(list(_EVENT_MIX.values())))]
    keys = {"user_id": rng.integers(0, max(n // 20, 1), n), "item_id": rng.integers(0, max(n // 50, 1), n),
            "session_id": rng.integers(0, max(n // 8, 1), n), "request_id": rng.integers(0, max(n // 10, 1), n)}
    # Engagements (click, save, purchase) happen on an item an impression showed the same user in the
    # same session and request (the contract's exposure rule holds on clean data).
    shown = np.flatnonzero(event_type == EventType.IMPRESSION.value)
    engaged = np.flatnonzero(np.isin(event_type, list(ENGAGEMENT_TYPES)))
    if len(shown) and len(engaged):
        source = shown[rng.integers(0, len(shown), len(engaged))]
        for numbers in keys.values():
            numbers[engaged] = numbers[source]
    span_us = int((window[1] - window[0]) / timedelta(microseconds=1))
    start_us = int(window[0].timestamp() * 1_000_000)
    traits = {c: pa.array(rng.uniform(0, 1, n), mask=rng.random(n) < 0.3) for c in TRAIT_COLUMNS}
    columns: dict[str, Any] = {
        "event_id": _ids("e", np.arange(n)), "user_id": _ids("u", keys["user_id"]),
        "item_id": _ids("i", keys["item_id"]), "event_type": pa.array(event_type, pa.string()),
        "value": _values(event_type, rng), "ts": pa.array(start_us + rng.integers(0, span_us, n)),
        "session_id": _ids("s", keys["session_id"]), "request_id": _ids("r", keys["request_id"]),
        "position": pa.array(rng.integers(0, 10, n, dtype=np.int32)),
        "propensity": pa.array(rng.uniform(0.01, 1.0, n)), "policy_version": _pick(("v1", "v2"), rng, n),
        "action_id": pa.array(rng.integers(0, 27, n, dtype=np.int32)),
        "device": _pick(("mobile", "desktop", "tablet", "tv"), rng, n),
        "content_type": _pick(("music", "video", "article"), rng, n),
        "category": _pick(("news", "sport", "jazz", "drama"), rng, n), "mood": _pick(("calm", "happy", "sad"), rng, n),
        "mood_delta": pa.array(rng.integers(-1, 2, n).astype(float)),
        "time_of_day": _pick(("morning", "afternoon", "evening", "night"), rng, n), **traits,
    }
    arrays = [columns[f.name].cast(f.type) for f in INTERACTION_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=INTERACTION_SCHEMA)


Fault = Callable[[dict[str, Any], tuple[datetime, datetime], str], None]


def _set(**changes: Any) -> Fault:
    return lambda row, window, first_id: row.update(changes)


# rule name -> how to break one row for it (each breaks exactly that rule and no other).
FAULTS: dict[str, Fault] = {
    "event_id_not_null": _set(event_id=None),
    "user_id_not_null": _set(user_id=None),
    "item_id_not_null": _set(item_id=None),
    "event_type_not_null": _set(event_type=None, value=None),
    "ts_not_null": _set(ts=None),
    "event_type_known": _set(event_type="teleport", value=None),
    # a value extraction could not convert: null, with its raw text kept beside it
    "source_values_converted": _set(value=None, source_errors='{"value":"abc"}'),
    # as impressions: an engagement under a changed user or item would lose its exposure too
    # (distinct per copy: equal event ids would be duplicates as well)
    **{f"{c}_not_blank": lambda row, window, first_id, c=c: row.update(
        {c: " " * (1 + int(row["event_id"].rsplit("-", 1)[1])), "event_type": "impression"}) for c in ID_COLUMNS},
    **{f"{c}_length": lambda row, window, first_id, c=c: row.update(
        {c: row["event_id"] + "x" * 300, "event_type": "impression"}) for c in LENGTH_CHECKED},
    # a ts before the floor is outside a later window too: it carries both reasons
    "ts_after_floor": _set(ts=datetime(1969, 12, 31, tzinfo=UTC)),
    "value_finite": _set(event_type="impression", value=float("nan")),
    "propensity_finite": _set(propensity=float("nan")),  # inf is out of (0, 1] as well
    "mood_delta_finite": _set(mood_delta=float("-inf")),
    "ts_in_window": lambda row, window, first_id: row.update(ts=window[1]),
    # a future row in a past window is outside the window too: it carries both reasons
    "ts_not_in_future": lambda row, window, first_id: row.update(ts=window[1] + timedelta(days=400)),
    "event_id_unique": lambda row, window, first_id: row.update(event_id=first_id),
    # a client retry: the same (user, item, type, ts) under a new event id
    "event_key_unique": lambda row, window, first_id: row.update(ts=row["_copied_ts"]),
    "engagement_has_impression": lambda row, window, first_id: row.update(
        event_type="click", value=None, session_id=f"lost-{row['event_id']}", request_id=f"lost-{row['event_id']}",
        item_id=f"never-shown-{row['event_id']}"),
    "position_non_negative": _set(position=-1),
    "propensity_in_range": _set(propensity=0.0),
    "rating_in_range": _set(event_type="rating", value=6.0),
    "dwell_in_range": _set(event_type="dwell", value=-3.0),  # negative dwell
    "completion_in_range": _set(event_type="complete", value=100.5),
    **{f"{c}_in_unit_interval": _set(**{c: 1.25}) for c in TRAIT_COLUMNS},
    "action_id_in_range": _set(action_id=27),
}


def inject_faults(
    table: pa.Table, *, window: tuple[datetime, datetime], per_rule: int = 1, seed: int = 0,
    faults: Mapping[str, Fault] | None = None,
) -> tuple[pa.Table, dict[str, int]]:
    """Append ``per_rule`` copies of random rows broken for each rule in ``faults`` (default :data:`FAULTS`).

    ``window`` is the validation window (the ``ts_in_window`` fault puts ts at its excluded end). Each
    copy's ts moves 1 microsecond later (so a copy is not a duplicate event unless the fault makes it one).

    Returns:
        (table with the bad rows appended after the clean ones, rule name -> bad rows injected). The
        table has the snapshot's schema (``SNAPSHOT_SCHEMA``: nullable, with ``source_errors``).
    """
    rng = np.random.default_rng(seed)
    bad: list[dict[str, Any]] = []
    faults = FAULTS if faults is None else faults
    for name, fault in faults.items():
        for row in table.take(pa.array(rng.integers(0, table.num_rows, per_rule))).to_pylist():
            row["event_id"] = f"bad-{name}-{len(bad)}"
            row["_copied_ts"], row["ts"] = row["ts"], row["ts"] + timedelta(microseconds=1)
            fault(row, window, table["event_id"][0].as_py())
            del row["_copied_ts"]
            bad.append(row)
    clean = table.append_column(SOURCE_ERRORS, pa.nulls(table.num_rows, pa.string())) \
        if SOURCE_ERRORS not in table.column_names else table
    extra = pa.Table.from_pylist(bad, schema=SNAPSHOT_SCHEMA)
    return pa.concat_tables([clean.cast(SNAPSHOT_SCHEMA), extra]), {name: per_rule for name in faults}
