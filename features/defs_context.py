"""Context codes, item age, embedding similarity and user traits."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.schema import BIG_FIVE
from features.context import ENGAGE, BuildContext, column_or_null
from features.registry import family, feature, grid
from features.timeline import Timeline, to_fixed

log = logging.getLogger(__name__)


def vocab_codes(values: pd.Series, vocab: tuple[str, ...]) -> np.ndarray:
    """Index of each value in ``vocab`` (case-insensitive); len(vocab) if unknown, -1 if missing."""
    codes, uniques = pd.factorize(values.reset_index(drop=True))  # map the few distinct values, not every row
    text = pd.Series(np.asarray(uniques, dtype=object), dtype=object).astype("string").str.strip().str.lower()
    table = pd.Index(list(vocab), dtype=object).get_indexer(text.astype(object))
    table = np.where(table < 0, len(vocab), table)  # uniques are never missing: unknown
    return np.r_[table, -1].astype(np.int16)[codes]


@family("ctx_{column}", grid(column=("device", "content_type", "mood", "time_of_day")), dtype="int16",
        grain="context", known="request", group="context", fill=-1,
        doc="Code of the impression's {column} in the configured vocabulary (-1 missing, len(vocab) unknown).")
def _context_code(ctx: BuildContext, column: str) -> np.ndarray:
    vocab = ctx.settings.context_vocab.get(column, ())
    if column == "content_type":
        _, q_codes, uniques = ctx.attribute_codes(column)
        return np.r_[vocab_codes(pd.Series(uniques, dtype=object), vocab), -1][q_codes]
    return vocab_codes(column_or_null(ctx.queries, column), vocab)


def _utc(ctx: BuildContext) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(ctx.queries["ts"]).tz_convert("UTC")


@feature(dtype="int16", grain="context", known="request", group="context", fill=-1)
def ctx_hour(ctx: BuildContext) -> np.ndarray:
    """Hour of day (UTC) of the impression, 0-23."""
    return _utc(ctx).hour.to_numpy()


@feature(dtype="int16", grain="context", known="request", group="context", fill=-1)
def ctx_weekday(ctx: BuildContext) -> np.ndarray:
    """Day of week (UTC) of the impression, Monday = 0."""
    return _utc(ctx).day_of_week.to_numpy()


@feature(dtype="int16", grain="impression", known="logged", group="context", fill=-1)
def ctx_position(ctx: BuildContext) -> np.ndarray:
    """0-based slot of the impression in its slate (-1 unknown)."""
    pos = pd.to_numeric(column_or_null(ctx.queries, "position")).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.clip(pos, -1, 32767)


@feature(dtype="float32", grain="item", known="request", group="recency")
def item_age_secs(ctx: BuildContext) -> np.ndarray:
    """Seconds from the item's catalogue creation time to t (NaN without items.created_at)."""
    if ctx.items is None or "created_at" not in ctx.items.columns:
        return np.full(len(ctx.q_ms), np.nan)
    created = pd.to_datetime(ctx.items["created_at"], utc=True)
    ms = created.to_numpy(dtype="datetime64[us]").view(np.int64).astype(np.float64) // 1000
    ms = np.r_[np.where(created.isna().to_numpy(), np.nan, ms), np.nan]
    return (ctx.q_ms - ms[ctx.item_row[ctx.q_item]]) / 1000.0


def embedding_matrix(column: pd.Series) -> np.ndarray:
    """(n, d) float64 matrix of a list<float> column; NaN rows where missing. Raises ValueError on ragged dims."""
    arr = pa.array(column.to_numpy(dtype=object), type=pa.list_(pa.float32()), from_pandas=True)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    present = ~np.isnan(lengths.astype(np.float64))
    dims = np.unique(lengths[present]).astype(int)
    if len(dims) > 1:
        raise ValueError(f"embeddings must all have one dimension, found dimensions {dims.tolist()}")
    out = np.full((len(arr), int(dims[0]) if len(dims) else 0), np.nan)
    if len(dims):
        out[present] = pc.list_flatten(arr).to_numpy(zero_copy_only=False).reshape(-1, dims[0])
    return out


def item_embeddings(ctx: BuildContext) -> np.ndarray | None:
    """(n_items + 1, d) item embeddings by item code (last row NaN), or None without any."""
    def make():
        if ctx.items is None or "embedding" not in ctx.items.columns or ctx.items["embedding"].notna().sum() == 0:
            return None
        emb = embedding_matrix(ctx.items["embedding"])
        table = np.full((ctx.n_items + 1, emb.shape[1]), np.nan)
        table[ctx.cat_item] = emb
        return table
    return ctx.memo("item_embeddings", make, keep=True)


_COSINE_ROWS = 262_144


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (n, d) matrices; NaN where either row is missing or zero."""
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, np.einsum("ij,ij->i", a, b) / norm, np.nan)


@feature(dtype="float32", grain="user_item", known="request", group="embedding")
def emb_cos_user_profile(ctx: BuildContext) -> np.ndarray:
    """Cosine of the users table's profile embedding and the item's embedding."""
    items = item_embeddings(ctx)
    nan = np.full(len(ctx.q_ms), np.nan)
    if items is None or ctx.users is None or "embedding" not in ctx.users.columns:
        return nan
    users = embedding_matrix(ctx.users["embedding"])
    if users.shape[1] != items.shape[1]:
        log.warning("user embeddings have %d dims, item embeddings %d: emb_cos_user_profile is NaN",
                    users.shape[1], items.shape[1])
        return nan
    rows = ctx.user_row[ctx.q_user]
    users = np.vstack([users, np.full((1, users.shape[1]), np.nan)])
    out = np.empty(len(rows))
    for lo in range(0, len(rows), _COSINE_ROWS):  # row blocks: no (n_impressions, d) matrices (row-wise: same values)
        hi = lo + _COSINE_ROWS
        out[lo:hi] = cosine(users[rows[lo:hi]], items[ctx.q_item[lo:hi]])
    return out


@feature(dtype="float32", grain="user_item", known="request", group="embedding")
def emb_cos_engaged_mean(ctx: BuildContext) -> np.ndarray:
    """Cosine of the mean embedding of items the user engaged with before t and the item's embedding."""
    items = item_embeddings(ctx)
    if items is None:
        return np.full(len(ctx.q_ms), np.nan)
    rows = np.flatnonzero(ctx.mask(ENGAGE) & ~np.isnan(items[ctx.ev_item, 0]))
    line = Timeline(ctx.ev_user[rows], ctx.ev_ms[rows], ctx.q_user, ctx.q_ms, 0)
    sorted_items = ctx.ev_item[rows][line.order]
    query_items = line.queries_sorted(ctx.q_item)  # the sums below in the timeline's query order: one unsort
    fixed = to_fixed(items)
    dot, profile_sq, item_sq = (np.zeros(len(ctx.q_ms)) for _ in range(3))
    for j in range(items.shape[1]):  # one dimension at a time: no (n_impressions, d) matrices
        profile = line.total_sorted(line.prefix_sorted(fixed[sorted_items, j]), None) / 1e6
        item = items[query_items, j]
        dot += profile * item
        profile_sq += profile * profile
        item_sq += item * item
    del query_items
    norm = np.sqrt(profile_sq * item_sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        return line.unsort(np.where(norm > 0, dot / norm, np.nan))


@family("user_trait_{trait}", grid(trait=BIG_FIVE), dtype="float32", grain="user", known="request", group="traits",
        doc="The user's Big Five {trait} score: users table, else the latest value logged before t.")
def _trait(ctx: BuildContext, trait: str) -> np.ndarray:
    column = f"trait_{trait}"
    if ctx.users is not None and column in ctx.users.columns:
        values = np.r_[pd.to_numeric(ctx.users[column]).to_numpy(dtype=np.float64, na_value=np.nan), np.nan]
        return values[ctx.user_row[ctx.q_user]]
    logged = ctx.event_floats(column)
    rows = np.flatnonzero(~np.isnan(logged))
    if len(rows) == 0:
        return np.full(len(ctx.q_ms), np.nan)
    line = Timeline(ctx.ev_user[rows], ctx.ev_ms[rows], ctx.q_user, ctx.q_ms, 0, tiebreak=logged[rows])
    return line.last_value(line.prefix(None), np.ones(len(rows), bool), logged[rows])
