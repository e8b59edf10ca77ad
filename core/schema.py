"""The canonical interaction schema: declared once, used everywhere downstream.

Every source maps into these Arrow schemas (see ``sources.mapping``); features, labels,
contracts, models and the registry only ever see these column names.

Three tables:

* ``INTERACTION_SCHEMA``: one row per logged event (an impression, a click, a rating ...).
  A snapshot (what extraction writes, before the contract) has :func:`snapshot_schema`: the
  same columns, every one nullable, then ``source_errors`` and the mapping's extra columns.
* ``ITEM_SCHEMA``: optional item catalogue (category, content type, embedding).
* ``USER_SCHEMA``: optional user profiles (Big Five traits, profile embedding).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field


class EventType(StrEnum):
    """Every event type the seed systems record, in one vocabulary."""

    IMPRESSION = "impression"  # the item was shown in a slate (a 'view' without engagement)
    VIEW = "view"  # the item was opened/viewed; value = seconds viewed when known
    CLICK = "click"
    DWELL = "dwell"  # value = seconds spent
    SAVE = "save"  # save / bookmark / wishlist
    RATING = "rating"  # value = stars 1..5
    SHARE = "share"
    DISMISS = "dismiss"
    LIKE = "like"
    DISLIKE = "dislike"
    SKIP = "skip"
    COMPLETE = "complete"  # value = completion percent 0..100
    CART_ADD = "cart_add"
    PURCHASE = "purchase"
    IMPLEMENT = "implement"


EVENT_TYPES: frozenset[str] = frozenset(e.value for e in EventType)

BIG_FIVE: tuple[str, ...] = (
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
)
TRAIT_COLUMNS: tuple[str, ...] = tuple(f"trait_{t}" for t in BIG_FIVE)

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

# (name, type, nullable, description) -- the single declaration the schemas and docs derive from.
_INTERACTION_FIELDS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("event_id", pa.string(), False, "Unique id of the event in its source."),
    ("user_id", pa.string(), False, "Who acted."),
    ("item_id", pa.string(), False, "What was acted on (item, product, project, track, video)."),
    ("event_type", pa.string(), False, "One of EventType; unknown source values are kept verbatim and flagged by the contracts."),
    ("value", pa.float64(), True, "Dwell/view seconds, rating stars, or completion percent, by event type."),
    ("ts", TIMESTAMP_TYPE, False, "When the event happened (UTC)."),
    ("session_id", pa.string(), True, "The user's session."),
    ("request_id", pa.string(), True, "The recommendation request (slate) the item was shown in."),
    ("position", pa.int32(), True, "0-based slot of the item in the slate."),
    ("propensity", pa.float64(), True, "Logging policy's probability of showing this item in this slot."),
    ("policy_version", pa.string(), True, "Version of the policy that produced the slate."),
    ("action_id", pa.int32(), True, "Q-learner action (0..26) the slate was produced with, when known."),
    ("device", pa.string(), True, "Device class (mobile, desktop, tablet, tv)."),
    ("content_type", pa.string(), True, "Content type of the item (music, video, article, product, project)."),
    ("category", pa.string(), True, "Item category at the time of the event."),
    ("mood", pa.string(), True, "User's reported mood before the event."),
    ("mood_delta", pa.float64(), True, "Mood change after consuming the item: +1 better, 0 same, -1 worse."),
    ("time_of_day", pa.string(), True, "morning / afternoon / evening / night, as the source recorded it."),
    *((c, pa.float64(), True, f"Big Five {c[6:]} score in [0, 1], when known.") for c in TRAIT_COLUMNS),
)

INTERACTION_SCHEMA: pa.Schema = pa.schema(
    [pa.field(n, t, nullable=nullable, metadata={"description": d}) for n, t, nullable, d in _INTERACTION_FIELDS]
)
INTERACTION_COLUMNS: tuple[str, ...] = tuple(INTERACTION_SCHEMA.names)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(f.name for f in INTERACTION_SCHEMA if not f.nullable)
# Text columns with a few distinct values (types, the request's context, item attributes, the
# serving policy): the weekly run reads them as categoricals (codes + values; ~1.5 GB less at 10M rows).
FEW_VALUED_COLUMNS: tuple[str, ...] = ("event_type", "policy_version", "device", "content_type", "category", "mood",
                                       "time_of_day")
# Ids: many values, but far fewer than rows (a user, item, session or request has many events): the
# labels and features stage reads them as categoricals too (codes + the distinct values; ~1 GB less at 10M
# rows); the labels hand their ids on as text.
CODED_ID_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "session_id", "request_id")

#: Per-row record of source values extraction could not convert: null when every value converted,
#: else a JSON object ``{"<canonical column>": "<raw source text>", ...}``; the column itself is null.
SOURCE_ERRORS = "source_errors"
SOURCE_ERRORS_FIELD = pa.field(
    SOURCE_ERRORS, pa.string(),
    metadata={"description": "JSON object: canonical column -> raw source text that could not be converted."},
)


def snapshot_schema(extra: tuple[pa.Field, ...] | list[pa.Field] = ()) -> pa.Schema:
    """What extraction writes: the canonical columns, all nullable (a null id is the contract's to
    quarantine, not the writer's to crash on), ``source_errors``, then the mapping's extra columns.

    Raises:
        ValueError: an extra column reuses a canonical name or ``source_errors``.
    """
    taken = [f.name for f in extra if f.name in INTERACTION_COLUMNS or f.name == SOURCE_ERRORS]
    if taken:
        raise ValueError(f"extra column(s) {taken} reuse a canonical name or {SOURCE_ERRORS!r}")
    return pa.schema([*(f.with_nullable(True) for f in INTERACTION_SCHEMA), SOURCE_ERRORS_FIELD, *extra])


SNAPSHOT_SCHEMA: pa.Schema = snapshot_schema()

ITEM_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("created_at", TIMESTAMP_TYPE),
        pa.field("embedding", pa.list_(pa.float32())),
    ]
)

USER_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        *(pa.field(c, pa.float64()) for c in TRAIT_COLUMNS),
        pa.field("embedding", pa.list_(pa.float32())),
    ]
)


def describe_interaction_fields() -> list[dict[str, str]]:
    """Rows for the documentation: name, Arrow type, nullable, description."""
    return [
        {"name": n, "type": str(t), "nullable": "yes" if nullable else "no", "description": d}
        for n, t, nullable, d in _INTERACTION_FIELDS
    ]


class Interaction(BaseModel):
    """One canonical interaction row, for code that handles events one at a time (tests, APIs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts: datetime
    value: float | None = None
    session_id: str | None = None
    request_id: str | None = None
    position: int | None = Field(default=None, ge=0)
    propensity: float | None = Field(default=None, ge=0.0, le=1.0)
    policy_version: str | None = None
    action_id: int | None = Field(default=None, ge=0, le=26)
    device: str | None = None
    content_type: str | None = None
    category: str | None = None
    mood: str | None = None
    mood_delta: float | None = None
    time_of_day: str | None = None
    trait_openness: float | None = None
    trait_conscientiousness: float | None = None
    trait_extraversion: float | None = None
    trait_agreeableness: float | None = None
    trait_neuroticism: float | None = None


def empty_interactions() -> pa.Table:
    """An empty table with the canonical schema."""
    return INTERACTION_SCHEMA.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Reorder/cast ``table`` to the canonical schema; missing nullable columns become nulls.

    Raises:
        ValueError: a required column is missing (every missing one is named).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"interaction table lacks required column(s) {missing}; expected {list(REQUIRED_COLUMNS)}, "
            f"found {table.column_names}"
        )
    arrays = []
    for field in INTERACTION_SCHEMA:
        if field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=INTERACTION_SCHEMA)
