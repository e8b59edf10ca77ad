"""Disjoint LinUCB (Li et al. 2010): one ridge regression per arm (item) over a one-hot context.

Context vector x (d,) = [1 (bias), one-hot of each configured categorical column]; a value
never seen in training encodes as all zeros for its column. Per arm a: ``A_a = ridge*I + sum x x^T``,
``b_a = sum r x``; score = ``x . A_a^-1 b_a + alpha * sqrt(x^T A_a^-1 x)``. A refit adds new
impressions (after the previous ``data_end``) to the previous A and b; new context values
extend d (old arms get ``ridge`` on the new diagonal, which is exactly what they would have had).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from core.config.policy import LinUCBSettings
from models.thompson import atomic_write_json, atomic_write_parquet

logger = logging.getLogger(__name__)

ARMS_FILE = "linucb_arms.parquet"
META_FILE = "linucb.json"
UNKNOWN = "__unknown__"


@dataclass(frozen=True)
class ContextEncoding:
    """Vocabulary per categorical context column; dimension 0 is the bias."""

    features: tuple[str, ...]
    vocab: dict[str, list[str]]

    @property
    def dim(self) -> int:
        return 1 + sum(len(self.vocab[f]) for f in self.features)

    def offsets(self) -> dict[str, int]:
        out, pos = {}, 1
        for f in self.features:
            out[f], pos = pos, pos + len(self.vocab[f])
        return out

    def extended(self, frame: pd.DataFrame) -> ContextEncoding:
        """This encoding with values of ``frame`` it has not seen appended (order kept)."""
        vocab = {}
        for f in self.features:
            seen = set(self.vocab.get(f, []))
            values = sorted(set(_as_str(pd.Series(frame[f].unique()))) - seen - {UNKNOWN}) if f in frame else []
            vocab[f] = [*self.vocab.get(f, []), *values]
        return ContextEncoding(self.features, vocab)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """One-hot matrix (n, d)."""
        return self.one_hot(self.codes(frame))

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """Vocabulary position of each row's value per feature, (n, n_features); -1 = unseen or absent."""
        out = np.full((len(frame), len(self.features)), -1, dtype=np.int64)
        for j, f in enumerate(self.features):
            if f in frame:
                out[:, j] = _vocab_codes(frame[f], self.vocab[f])
        return out

    def one_hot(self, codes: np.ndarray) -> np.ndarray:
        """One-hot matrix (n, d) of :meth:`codes` output."""
        x = np.zeros((len(codes), self.dim))
        x[:, 0] = 1.0
        for j, offset in enumerate(self.offsets().values()):
            rows = np.flatnonzero(codes[:, j] >= 0)
            x[rows, offset + codes[rows, j]] = 1.0
        return x

    def old_dims_in(self, newer: ContextEncoding) -> np.ndarray:
        """Indices in ``newer`` of this encoding's dimensions."""
        idx, new_off = [0], newer.offsets()
        for f in self.features:
            idx.extend(new_off[f] + np.arange(len(self.vocab[f])))
        return np.asarray(idx, dtype=int)


def _as_str(col: pd.Series) -> pd.Series:
    return col.astype(object).where(col.notna(), UNKNOWN).astype(str)


def _names(col: pd.Series) -> np.ndarray:
    """``_as_str(col)`` as an object array, converting each distinct value once (not each row). An
    object column goes row by row: its values may be equal but spelled apart (1 and 1.0)."""
    if col.dtype == object:
        return _as_str(col).to_numpy(dtype=object)
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    names = np.append(_as_str(pd.Series(uniques, dtype=object)).to_numpy(dtype=object), UNKNOWN)
    return names[codes]  # code -1 (missing) takes the trailing UNKNOWN


def _item_names(col: pd.Series) -> np.ndarray:
    """``col`` as strings (``astype(str)``, as the refit keys arms), one conversion per distinct id."""
    if col.dtype == object or col.isna().any():  # 1 and 1.0, None and NaN spell apart: per row, as refit does
        return pd.Series(col, dtype=object).astype(str).to_numpy(dtype=object)
    codes, uniques = pd.factorize(col)
    return pd.Series(uniques, dtype=object).astype(str).to_numpy(dtype=object)[codes]


def _vocab_codes(col: pd.Series, vocab: list[str]) -> np.ndarray:
    """Position in ``vocab`` of each value as :func:`_as_str` spells it (-1 when absent); one
    string conversion per distinct value, not per row."""
    codes, uniques = pd.factorize(col, use_na_sentinel=False)
    names = _as_str(pd.Series(uniques, dtype=object)).to_numpy(dtype=object)
    return pd.Index(vocab, dtype=object).get_indexer(names)[codes] if len(codes) else np.zeros(0, np.int64)


def _outer_sums(encoding: ContextEncoding, frame: pd.DataFrame, arm: np.ndarray, n_arms: int,
                r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-arm X^T X (n_arms, d, d) and X^T r (n_arms, d) of the one-hot contexts of ``frame``.

    Rows with the same arm and context share one x, so the sums run over the distinct
    (arm, context) pairs with their counts and reward sums (X^T X is a count: exact).
    """
    if len(arm) == 0:  # nothing new since the previous table
        return _pair_sums(encoding, np.zeros((0, 1 + len(encoding.features)), np.int64), np.zeros(0), np.zeros(0), n_arms)
    codes = np.column_stack([arm, encoding.codes(frame)])
    key = _pair_keys(encoding, codes, n_arms)
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    count = np.bincount(inverse, minlength=len(uniq)).astype(float)
    rsum = np.bincount(inverse, weights=r, minlength=len(uniq))
    return _pair_sums(encoding, codes[first], count, rsum, n_arms)


def _pair_keys(encoding: ContextEncoding, codes: np.ndarray, n_arms: int) -> np.ndarray:
    """One int64 per (arm, context codes) row of ``codes``, ordered by arm first (as :func:`_outer_sums`)."""
    key, sizes = np.zeros(len(codes), dtype=np.int64), [n_arms] + [len(encoding.vocab[f]) + 1 for f in encoding.features]
    for j, size in enumerate(sizes):
        key = key * size + codes[:, j] + (j > 0)
    return key


def _pair_sums(encoding: ContextEncoding, codes: np.ndarray, count: np.ndarray, rsum: np.ndarray,
               n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-arm X^T X and X^T r from distinct (arm, context) rows ``codes`` (n, 1 + n_features),
    sorted by their :func:`_pair_keys`, with their impression counts and reward sums."""
    d = encoding.dim
    a_add, b_add = np.zeros((n_arms, d, d)), np.zeros((n_arms, d))
    if len(codes) == 0:
        return a_add, b_add
    x, cs = encoding.one_hot(codes[:, 1:]), codes[:, 0]
    bounds = np.flatnonzero(np.diff(cs)) + 1
    for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(cs)], strict=True):
        block = x[s:e]
        a_add[cs[s]] = block.T @ (block * count[s:e, None])
        b_add[cs[s]] = block.T @ rsum[s:e]
    return a_add, b_add


@dataclass(frozen=True)
class LinUCB:
    """Per-arm A (n_arms, d, d) and b (n_arms, d) with the context encoding."""

    # The PolicyTable interface (models/policy.py): its kind, saved meta file, serving verbs and settings.
    kind: ClassVar[str] = "linucb"
    meta_file: ClassVar[str] = META_FILE
    verbs: ClassVar[tuple[str, ...]] = ("scores",)
    settings_field: ClassVar[str] = "linucb"

    arms: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray
    encoding: ContextEncoding
    settings: LinUCBSettings
    fitted_at: datetime
    data_end: datetime | None

    def __post_init__(self) -> None:
        n, d = len(self.arms), self.encoding.dim
        if self.a.shape != (n, d, d) or self.b.shape != (n, d):
            raise ValueError(
                f"LinUCB with {n} arms and context dimension {d} needs A of shape {(n, d, d)} and b of shape "
                f"{(n, d)}, got {self.a.shape} and {self.b.shape}"
            )

    def _arm_index(self, item_ids: Sequence[Any]) -> np.ndarray:
        lookup = {arm: i for i, arm in enumerate(self.arms)}
        return np.array([lookup.get(str(i), -1) for i in item_ids], dtype=int)

    def scores(self, context: Mapping[str, Any], item_ids: Sequence[Any]) -> np.ndarray:
        """UCB score per item, shape (n_items,); unseen items score ``alpha*sqrt(x.x/ridge)``.

        Args:
            context: one request's context values by column name (missing -> unknown).
            item_ids: candidate items.
        """
        x = self.encoding.transform(pd.DataFrame([{f: context.get(f) for f in self.encoding.features}]))[0]
        idx = self._arm_index(item_ids)
        mean = np.zeros(len(idx))
        var = np.full(len(idx), float(x @ x) / self.settings.ridge)
        known = idx >= 0
        if known.any():
            a_inv = np.linalg.inv(self.a[idx[known]])
            theta = np.einsum("kij,kj->ki", a_inv, self.b[idx[known]])
            mean[known] = theta @ x
            var[known] = np.einsum("i,kij,j->k", x, a_inv, x)
        return mean + self.settings.alpha * np.sqrt(np.maximum(var, 0.0))

    def select(self, context: Mapping[str, Any], item_ids: Sequence[Any], k: int = 1) -> list[Any]:
        """The ``k`` items with the highest UCB score (ties: first listed)."""
        order = np.argsort(-self.scores(context, item_ids), kind="stable")[:k]
        return [item_ids[i] for i in order]

    def save(self, directory: Path) -> Path:
        """Write linucb_arms.parquet (item_id, A row-major, b) and linucb.json into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arms = pd.DataFrame(
            {"item_id": list(self.arms), "a": [m.ravel().tolist() for m in self.a], "b": [v.tolist() for v in self.b]}
        )
        atomic_write_parquet(arms, directory / ARMS_FILE)
        meta = {
            "kind": "linucb", "dim": self.encoding.dim, "features": list(self.encoding.features),
            "vocab": self.encoding.vocab, "settings": self.settings.model_dump(mode="json"),
            "fitted_at": self.fitted_at.isoformat(),
            "data_end": self.data_end.isoformat() if self.data_end is not None else None,
        }
        atomic_write_json(meta, directory / META_FILE)
        return directory

    @classmethod
    def load_for_refit(cls, directory: Path) -> LinUCB:
        """:meth:`load` (a refit reads the whole table: it is small)."""
        return cls.load(directory)

    @classmethod
    def load(cls, directory: Path) -> LinUCB:
        """Read a table written by :meth:`save`."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        arms = pd.read_parquet(directory / ARMS_FILE)
        d = int(meta["dim"])
        a = np.array([np.asarray(v, dtype=float) for v in arms["a"]]).reshape(len(arms), d, d)
        b = np.array([np.asarray(v, dtype=float) for v in arms["b"]]).reshape(len(arms), d)
        enc = ContextEncoding(tuple(meta["features"]), {k: list(v) for k, v in meta["vocab"].items()})
        end = pd.Timestamp(meta["data_end"]).to_pydatetime() if meta["data_end"] else None
        return cls(
            arms=tuple(str(x) for x in arms["item_id"]), a=a, b=b, encoding=enc,
            settings=LinUCBSettings(**meta["settings"]),
            fitted_at=pd.Timestamp(meta["fitted_at"]).to_pydatetime(), data_end=end,
        )


def _grow(previous: LinUCB | None, encoding: ContextEncoding, arms: list[str], ridge: float):
    """Previous A, b re-indexed onto the new encoding and arm list (ridge*I, 0 for new parts)."""
    d = encoding.dim
    a = np.broadcast_to(np.eye(d) * ridge, (len(arms), d, d)).copy()
    b = np.zeros((len(arms), d))
    if previous is not None and len(previous.arms):
        dims = previous.encoding.old_dims_in(encoding)
        rows = np.arange(len(previous.arms))
        a[np.ix_(rows, dims, dims)] = previous.a
        b[np.ix_(rows, dims)] = previous.b
    return a, b


def refit(previous: LinUCB | None, impressions: pd.DataFrame, settings: LinUCBSettings, now: datetime) -> LinUCB:
    """Add the impressions logged after ``previous.data_end`` to the previous A and b.

    Args:
        previous: last version's table, or None.
        impressions: output of :func:`models.rewards.impression_rewards` (item_id, ts, the
            context columns, ``success`` or ``reward``).
        settings: alpha, ridge, context features and the reward column.
        now: tz-aware time of the refit (later impressions are ignored).

    Returns:
        A new LinUCB (previous is not modified).
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now!r}")
    for col in ("item_id", "ts", settings.reward):
        if col not in impressions:
            raise ValueError(f"impressions lack column {col!r}; expected the output of impression_rewards")
    if previous is not None and previous.encoding.features != settings.context_features:
        raise ValueError(
            f"context_features changed: previous table has {previous.encoding.features}, "
            f"settings have {settings.context_features}; start a new table (previous=None)"
        )
    ts = pd.to_datetime(impressions["ts"], utc=True)
    keep = ts <= pd.Timestamp(now)
    if previous is not None and previous.data_end is not None:
        keep &= ts > pd.Timestamp(previous.data_end)
    new = impressions.loc[keep]
    base_enc = previous.encoding if previous else ContextEncoding(settings.context_features, {})
    encoding = base_enc.extended(new)
    old_arms = list(previous.arms) if previous else []
    item_codes, item_uniques = pd.factorize(new["item_id"], use_na_sentinel=False)
    item_names = pd.Series(item_uniques, dtype=object).astype(str).to_numpy(dtype=object)
    arms = old_arms + sorted(set(item_names) - set(old_arms))
    a, b = _grow(previous, encoding, arms, settings.ridge)
    codes = pd.Index(arms, dtype=object).get_indexer(item_names)[item_codes].astype(np.int64)
    r = new[settings.reward].to_numpy(dtype=float)
    a_add, b_add = _outer_sums(encoding, new, codes, len(arms), r)
    end = ts[keep].max() if keep.any() else None
    if previous is not None and previous.data_end is not None and (end is None or end < pd.Timestamp(previous.data_end)):
        end = pd.Timestamp(previous.data_end)
    end_dt = pd.Timestamp(end).to_pydatetime() if end is not None else None
    return LinUCB(tuple(arms), a + a_add, b + b_add, encoding, settings, now, end_dt)


# --- refit from per-partition aggregates (the Dask executor, docs/scale-out.md) -------------------
PAIR_COUNT, PAIR_REWARD = "n", "r"


@dataclass(frozen=True)
class ArmContextStats:
    """What :func:`refit` adds to A and b, for some of the impressions: per distinct (arm, context
    values) the number of impressions and their reward sum. ``A_a = sum n x x^T`` and
    ``b_a = sum r x`` over an arm's rows, so partitions combine by adding per (arm, context); the
    vocabulary and the arm list are only known once they are combined.

    ``pairs``: item_id, the context features (as :func:`refit` spells them: strings, missing =
    ``__unknown__``), ``n``, ``r``. ``data_end``: the newest impression counted."""

    features: tuple[str, ...]
    pairs: pd.DataFrame
    data_end: pd.Timestamp | None
    rows: int


def arm_context_stats(impressions: pd.DataFrame, settings: LinUCBSettings, now: datetime,
                      since: datetime | None = None) -> ArmContextStats:
    """The sufficient statistics of :func:`refit` for one partition of the impressions.

    Args:
        impressions: as for :func:`refit`.
        settings: the context features and the reward column.
        now: tz-aware time of the refit (later impressions are not counted).
        since: the previous table's ``data_end`` (impressions at or before it are not counted).
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now!r}")
    for col in ("item_id", "ts", settings.reward):
        if col not in impressions:
            raise ValueError(f"impressions lack column {col!r}; expected the output of impression_rewards")
    ts = pd.to_datetime(impressions["ts"], utc=True)
    keep = ts <= pd.Timestamp(now)
    if since is not None:
        keep &= ts > pd.Timestamp(since)
    new = impressions.loc[keep]
    keys = {"item_id": _item_names(new["item_id"])}
    for f in settings.context_features:
        keys[f] = _names(new[f]) if f in new else np.full(len(new), UNKNOWN, dtype=object)
    work = pd.DataFrame(keys).assign(**{PAIR_COUNT: 1.0, PAIR_REWARD: new[settings.reward].to_numpy(dtype=float)})
    pairs = work.groupby(list(keys), as_index=False, sort=True)[[PAIR_COUNT, PAIR_REWARD]].sum()
    return ArmContextStats(tuple(settings.context_features), pairs, ts[keep].max() if keep.any() else None,
                           int(keep.sum()))


def combine_stats(parts: Sequence[ArmContextStats]) -> ArmContextStats:
    """The statistics of all partitions together (sums per (arm, context); the newest impression)."""
    if not parts:
        raise ValueError("combine_stats needs at least one partition's ArmContextStats")
    features = {p.features for p in parts}
    if len(features) != 1:
        raise ValueError(f"partitions were computed with different context features: {sorted(features)}")
    keys = ["item_id", *parts[0].features]
    pairs = pd.concat([p.pairs for p in parts], ignore_index=True).groupby(keys, as_index=False, sort=True)[
        [PAIR_COUNT, PAIR_REWARD]].sum()
    ends = [p.data_end for p in parts if p.data_end is not None]
    return ArmContextStats(parts[0].features, pairs, max(ends) if ends else None, sum(p.rows for p in parts))


def refit_from_stats(previous: LinUCB | None, stats: ArmContextStats, settings: LinUCBSettings,
                     now: datetime) -> LinUCB:
    """:func:`refit` from combined :func:`arm_context_stats` (computed with ``since=previous.data_end``):
    the same vocabulary, arms, A and b (to float summation order of the reward sums)."""
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now!r}")
    if stats.features != tuple(settings.context_features):
        raise ValueError(f"statistics were computed for context features {stats.features}, "
                         f"settings have {settings.context_features}")
    if previous is not None and previous.encoding.features != settings.context_features:
        raise ValueError(
            f"context_features changed: previous table has {previous.encoding.features}, "
            f"settings have {settings.context_features}; start a new table (previous=None)"
        )
    pairs = stats.pairs
    base_enc = previous.encoding if previous else ContextEncoding(settings.context_features, {})
    encoding = base_enc.extended(pairs)
    old_arms = list(previous.arms) if previous else []
    names = pairs["item_id"].to_numpy(dtype=object)
    arms = old_arms + sorted(set(names) - set(old_arms))
    a, b = _grow(previous, encoding, arms, settings.ridge)
    codes = np.column_stack([pd.Index(arms, dtype=object).get_indexer(names).astype(np.int64), encoding.codes(pairs)])
    order = np.argsort(_pair_keys(encoding, codes, len(arms)), kind="stable")
    a_add, b_add = _pair_sums(encoding, codes[order], pairs[PAIR_COUNT].to_numpy(dtype=float)[order],
                              pairs[PAIR_REWARD].to_numpy(dtype=float)[order], len(arms))
    end = stats.data_end
    if previous is not None and previous.data_end is not None and (end is None or end < pd.Timestamp(previous.data_end)):
        end = pd.Timestamp(previous.data_end)
    end_dt = pd.Timestamp(end).to_pydatetime() if end is not None else None
    return LinUCB(tuple(arms), a + a_add, b + b_add, encoding, settings, now, end_dt)
