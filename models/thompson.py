"""Thompson-sampling Beta tables: per item (global) and per user x item (sparse).

An impression is a Beta success when its bandit reward exceeds ``success_threshold``
(:func:`models.rewards.impression_rewards`), otherwise a failure. Item ``i`` has posterior
``Beta(prior_alpha + s_i, prior_beta + f_i)``; an item never seen gets the prior. With
``half_life_days`` every count is weighted by ``0.5 ** (age_days / half_life_days)`` at ``now``.

A user x item Beta uses the item's global mean ``m_i`` as ``user_prior_strength`` pseudo-counts:
``Beta(k*m_i + s_ui, k*(1-m_i) + f_ui)``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import atomic_write, write_bytes
from core.config.policy import BanditSettings
from core.memory import empty_like

logger = logging.getLogger(__name__)

ITEM_FILE = "item_beta.parquet"
USER_ITEM_FILE = "user_item_beta.parquet"
META_FILE = "tables.json"
_SIM_CHUNK = 10_000


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """A DataFrame as Parquet (pandas' defaults, no index), atomically (``core.atomic``)."""
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def atomic_write_json(obj: Any, path: Path) -> None:
    """JSON (sorted keys, indented, no trailing newline: the bytes every saved table has had), atomically."""
    write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def _decay(ages_days: np.ndarray, half_life_days: float | None) -> np.ndarray:
    if half_life_days is None:
        return np.ones_like(ages_days, dtype=float)
    return np.power(0.5, np.maximum(ages_days, 0.0) / half_life_days)


def _counts(frame: pd.DataFrame, keys: list[str], weight: np.ndarray) -> pd.DataFrame:
    """Weighted successes/failures per key."""
    success = frame["success"].to_numpy(dtype=bool)
    work = frame[keys].assign(successes=weight * success, failures=weight * ~success)
    return work.groupby(keys, as_index=False)[["successes", "failures"]].sum()


def _merge_counts(old: pd.DataFrame, new: pd.DataFrame, keys: list[str], factor: float) -> pd.DataFrame:
    """``old`` decayed by ``factor`` plus ``new`` (both one row per key, as :func:`_counts` groups them),
    per key, sorted by the keys. Without ``old`` rows (the first fit) ``new`` is already that: the
    second group-by over millions of user x item pairs (~1.8 GB at 10M interactions) is skipped."""
    if len(old) == 0 and len(new) and _grouped(new, keys):
        return new[[*keys, "successes", "failures"]].reset_index(drop=True)
    old = old[[*keys, "successes", "failures"]].assign(
        successes=old["successes"] * factor, failures=old["failures"] * factor
    )
    both = pd.concat([old, new], ignore_index=True)
    return both.groupby(keys, as_index=False)[["successes", "failures"]].sum()


def _grouped(frame: pd.DataFrame, keys: list[str]) -> bool:
    """Whether ``frame`` holds one row per key, in the keys' sorted order (what a group-by returns):
    each row's keys strictly after the previous row's, compared column by column (no index is built
    over millions of pairs)."""
    columns = [frame[k].reset_index(drop=True) for k in keys]
    if any(c.hasnans for c in columns):
        return False
    after: Any = False  # equal on every key: not after
    for c in reversed(columns):
        later, earlier = c.iloc[1:].reset_index(drop=True), c.iloc[:-1].reset_index(drop=True)
        after = (later > earlier) | ((later == earlier) & after)
    return bool(np.all(after))


@dataclass(frozen=True)
class BetaTables:
    """Decayed success/failure counts per item and per user x item, plus the prior.

    ``items``: item_id, successes, failures. ``user_items``: user_id, item_id, successes, failures.
    ``data_end``: newest impression counted (a refit only adds impressions after it).
    """

    # The PolicyTable interface (models/policy.py): its kind, saved meta file, serving verbs and settings.
    kind: ClassVar[str] = "bandit"
    meta_file: ClassVar[str] = META_FILE
    verbs: ClassVar[tuple[str, ...]] = ("mean", "sample")
    settings_field: ClassVar[str] = "bandit"

    items: pd.DataFrame
    user_items: pd.DataFrame
    settings: BanditSettings
    fitted_at: datetime
    data_end: datetime | None
    # The user x item rows in this Parquet file instead of ``user_items`` (then empty): a refit's rows
    # already written (:func:`refit_from_count_files` with ``write_to``; ~20M rows at 30M interactions)
    # or a saved table read for a refit (:meth:`load_for_refit`). Only :meth:`save` (a copy), a refit
    # (a user range at a time) and :meth:`with_user_items` read it; serve a table read by :meth:`load`.
    user_items_path: Path | None = None

    def __post_init__(self) -> None:
        if self.user_items_path is not None and len(self.user_items):
            raise ValueError("a BetaTables with user_items_path holds its user x item rows there, not in user_items")
        missing = {
            name: sorted(set(cols) - set(frame.columns))
            for name, frame, cols in (("items", self.items, ("item_id", "successes", "failures")),
                                      ("user_items", self.user_items, ("user_id", "item_id", "successes", "failures")))
            if set(cols) - set(frame.columns)
        }
        if missing:
            raise ValueError(f"BetaTables lacks column(s) {missing}")

    # --- posterior ------------------------------------------------------------------
    def _item_params(self, item_ids: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        table = self.items.set_index("item_id")
        ids = pd.Index(pd.Series(list(item_ids), dtype=object).astype(str))
        s = table["successes"].reindex(ids).fillna(0.0).to_numpy(dtype=float)
        f = table["failures"].reindex(ids).fillna(0.0).to_numpy(dtype=float)
        return s + self.settings.prior_alpha, f + self.settings.prior_beta

    def _user_params(self, item_ids: Sequence[Any], user_id: str) -> tuple[np.ndarray, np.ndarray]:
        if self.user_items_path is not None:
            raise RuntimeError("this table's user x item rows are in a file (user_items_path): "
                               "read it with BetaTables.load to serve")
        alpha, beta = self._item_params(item_ids)
        mean, k = alpha / (alpha + beta), self.settings.user_prior_strength
        mine = self.user_items[self.user_items["user_id"] == str(user_id)].set_index("item_id")
        ids = pd.Index([str(i) for i in item_ids])
        s = mine["successes"].reindex(ids).fillna(0.0).to_numpy(dtype=float)
        f = mine["failures"].reindex(ids).fillna(0.0).to_numpy(dtype=float)
        prior_a, prior_b = np.maximum(k * mean, 1e-9), np.maximum(k * (1 - mean), 1e-9)
        return prior_a + s, prior_b + f

    def params(self, item_ids: Sequence[Any], user_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior (alpha, beta) arrays, shape (n_items,), per item or for one user."""
        if user_id is None:
            return self._item_params(item_ids)
        return self._user_params(item_ids, user_id)

    def mean(self, item_ids: Sequence[Any], user_id: str | None = None) -> np.ndarray:
        """Posterior mean success probability, shape (n_items,)."""
        alpha, beta = self.params(item_ids, user_id)
        return alpha / (alpha + beta)

    def sample(self, item_ids: Sequence[Any], rng: np.random.Generator, user_id: str | None = None) -> np.ndarray:
        """One Thompson draw per item, shape (n_items,)."""
        alpha, beta = self.params(item_ids, user_id)
        return rng.beta(alpha, beta)

    def action_probabilities(
        self, item_ids: Sequence[Any], n_positions: int, n_sims: int | None, rng: np.random.Generator
    ) -> np.ndarray:
        """Probability that each item lands at each position when the policy ranks by Beta draws.

        Args:
            item_ids: the candidate items (n_items).
            n_positions: slate length (<= n_items).
            n_sims: Monte Carlo draws (default: settings.n_sims).
            rng: numpy Generator.

        Returns:
            Array (n_items, n_positions); each column sums to 1.
        """
        n_items = len(item_ids)
        if not 1 <= n_positions <= n_items:
            raise ValueError(f"n_positions must be in [1, {n_items}] (the number of items), got {n_positions}")
        n_sims = n_sims or self.settings.n_sims
        alpha, beta = self._item_params(item_ids)
        counts = np.zeros((n_positions, n_items))
        for start in range(0, n_sims, _SIM_CHUNK):
            draws = rng.beta(alpha, beta, size=(min(_SIM_CHUNK, n_sims - start), n_items))
            top = np.argsort(-draws, axis=1)[:, :n_positions]
            for pos in range(n_positions):
                counts[pos] += np.bincount(top[:, pos], minlength=n_items)
        return (counts / n_sims).T

    # --- persistence ----------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """Write item_beta.parquet, user_item_beta.parquet and tables.json into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        alpha, beta = self._item_params(self.items["item_id"].tolist())
        items = self.items.assign(alpha=alpha, beta=beta)[["item_id", "alpha", "beta", "successes", "failures"]]
        atomic_write_parquet(items, directory / ITEM_FILE)
        if self.user_items_path is not None:
            source = Path(self.user_items_path)
            atomic_write(directory / USER_ITEM_FILE, lambda tmp: shutil.copyfile(source, tmp))
            n_user_items = pq.ParquetFile(source).metadata.num_rows
        else:
            atomic_write_parquet(self.user_items[["user_id", "item_id", "successes", "failures"]],
                                 directory / USER_ITEM_FILE)
            n_user_items = len(self.user_items)
        meta = {
            "kind": "bandit",
            "settings": self.settings.model_dump(mode="json"),
            "fitted_at": self.fitted_at.isoformat(),
            "data_end": self.data_end.isoformat() if self.data_end is not None else None,
            "n_items": len(self.items),
            "n_user_items": n_user_items,
        }
        atomic_write_json(meta, directory / META_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path) -> BetaTables:
        """Read a table written by :meth:`save`."""
        return cls._read(Path(directory), user_items_in_file=False)

    @classmethod
    def load_for_refit(cls, directory: Path) -> BetaTables:
        """A table written by :meth:`save` as a refit reads it: its user x item rows left in their file
        (``user_items_path``; ~7M rows at 10M interactions, read a user range at a time by
        :func:`refit_from_count_files`), the rest read. Serve a table read by :meth:`load`."""
        return cls._read(Path(directory), user_items_in_file=True)

    @classmethod
    def _read(cls, directory: Path, *, user_items_in_file: bool) -> BetaTables:
        missing = [f for f in (ITEM_FILE, USER_ITEM_FILE, META_FILE) if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} lacks {missing}; expected {[ITEM_FILE, USER_ITEM_FILE, META_FILE]}")
        meta = json.loads((directory / META_FILE).read_text())
        items = pd.read_parquet(directory / ITEM_FILE)[["item_id", "successes", "failures"]]
        if user_items_in_file:
            user_items = pq.read_schema(directory / USER_ITEM_FILE).empty_table().to_pandas()
        else:
            user_items = pd.read_parquet(directory / USER_ITEM_FILE)
        data_end = pd.Timestamp(meta["data_end"]).to_pydatetime() if meta["data_end"] else None
        return cls(
            items=items, user_items=user_items, settings=BanditSettings(**meta["settings"]),
            fitted_at=pd.Timestamp(meta["fitted_at"]).to_pydatetime(), data_end=data_end,
            user_items_path=directory / USER_ITEM_FILE if user_items_in_file else None,
        )

    def with_user_items(self) -> BetaTables:
        """This table with its user x item rows in memory (read from ``user_items_path`` if there)."""
        if self.user_items_path is None:
            return self
        return replace(self, user_items=pd.read_parquet(self.user_items_path), user_items_path=None)


def empty_tables(settings: BanditSettings, now: datetime) -> BetaTables:
    """Tables holding only the prior."""
    items = pd.DataFrame({"item_id": pd.Series(dtype=object), "successes": [], "failures": []})
    user_items = pd.DataFrame(
        {"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object), "successes": [], "failures": []}
    )
    return BetaTables(items=items, user_items=user_items, settings=settings, fitted_at=now, data_end=None)


def _impressions_since(frame: pd.DataFrame, since: datetime | None, now: datetime) -> pd.DataFrame:
    """The rows a refit counts: ``since < ts <= now`` (``since``: the previous table's ``data_end``)."""
    missing = [c for c in ("user_id", "item_id", "ts", "success") if c not in frame.columns]
    if missing:
        raise ValueError(f"impressions lack column(s) {missing}; expected the output of impression_rewards")
    ts = pd.to_datetime(frame["ts"], utc=True)
    keep = ts <= pd.Timestamp(now)
    if since is not None:
        keep &= ts > pd.Timestamp(since)
    if int((~keep).sum()):
        logger.info("refit skips %d impression(s) already counted or after now", int((~keep).sum()))
    out = frame.loc[keep, ["user_id", "item_id", "ts", "success"]].copy()
    out[["user_id", "item_id"]] = out[["user_id", "item_id"]].astype(str)
    out["ts"] = ts[keep]
    return out


def refit(
    previous: BetaTables | None, impressions: pd.DataFrame, settings: BanditSettings, now: datetime
) -> BetaTables:
    """Add the impressions logged after ``previous.data_end`` to the previous table's counts.

    Args:
        previous: last version's table, or None to start from the prior.
        impressions: output of :func:`models.rewards.impression_rewards` (needs user_id,
            item_id, ts, success).
        settings: prior and decay.
        now: tz-aware time of the refit; ages for decay are measured from it.

    Returns:
        A new BetaTables (previous is not modified).
    """
    since = previous.data_end if previous is not None else None
    return refit_from_counts(previous, beta_counts(impressions, settings, now, since=since), settings, now)


# --- refit from per-partition aggregates (the Dask executor, docs/scale-out.md) -------------------
@dataclass(frozen=True)
class BetaCounts:
    """What :func:`refit` adds to the previous table, for some of the impressions: decayed
    successes/failures per item and per user x item (sums, so partitions combine by adding) and the
    newest impression counted. ``rows``: impressions counted."""

    items: pd.DataFrame
    user_items: pd.DataFrame
    data_end: pd.Timestamp | None
    rows: int


def beta_counts(impressions: pd.DataFrame, settings: BanditSettings, now: datetime,
                since: datetime | None = None) -> BetaCounts:
    """The sufficient statistics of :func:`refit` for one partition of the impressions.

    Args:
        impressions: as for :func:`refit` (one partition; a key may appear in several partitions).
        settings: the decay (ages are measured from ``now``, as :func:`refit` does).
        now: tz-aware time of the refit; later impressions are not counted.
        since: the previous table's ``data_end``; impressions at or before it are not counted.
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now!r}")
    new = _impressions_since(impressions, since, now)
    ages = (pd.Timestamp(now) - new["ts"]).dt.total_seconds().to_numpy() / 86_400.0
    weight = _decay(ages, settings.half_life_days)
    return BetaCounts(items=_counts(new, ["item_id"], weight), user_items=_counts(new, ["user_id", "item_id"], weight),
                      data_end=new["ts"].max() if len(new) else None, rows=len(new))


def combine_counts(parts: Iterable[BetaCounts]) -> BetaCounts:
    """The counts of all partitions together (sums per key; the newest impression of any).

    ``parts`` is read once, one partition at a time (a generator may load each from disk): each
    partition's user x item keys are coded as integers as it comes (:class:`_CodedCounts`), so the
    partitions' key columns are never held, concatenated or hashed together (~1 GB at 10M interactions);
    the few item rows are summed as before (:func:`_summed`)."""
    items: list[pd.DataFrame] = []
    pairs: list[_CodedCounts] = []
    ends, rows = [], 0
    for p in parts:
        items.append(p.items)
        pairs.append(_CodedCounts.of(p.user_items, ["user_id", "item_id"], pairs[-1].values if pairs else None))
        if p.data_end is not None:
            ends.append(p.data_end)
        rows += p.rows
    if not items:
        raise ValueError("combine_counts needs at least one partition's BetaCounts")
    return BetaCounts(items=_summed(items, ["item_id"]), user_items=_CodedCounts.total(pairs),
                      data_end=max(ends) if ends else None, rows=rows)


def combine_count_files(parts: Sequence[BetaCounts], paths: Sequence[Path], *, range_rows: int | None = None,
                        base: tuple[pd.DataFrame | Path, float] | None = None) -> BetaCounts:
    """:func:`combine_counts` of partitions whose user x item rows are in Parquet files (``paths[i]``
    holds ``parts[i].user_items``, which is left empty in memory), the same table to the last bit,
    holding about ``range_rows`` of the files' rows at a time besides the result.

    One pass reads each file's two key columns (whether its rows come in key order, its first and
    last key, its rows per user), which cuts the users into ranges of about ``range_rows`` rows; then
    each range's rows are read from every file in turn (a slice of the files written in key order, as
    :func:`beta_counts` writes them; a filter of any other) and summed per key. A key's rows are all in
    its user's range, in the files' order, so each sum is the one a single group-by of everything
    gives: pandas' compensated sum; a range whose rows happen to come in key order (which pandas would
    sum with ``np.add.reduceat``) gets a row of its own out of order. Only when all the files' rows
    together come in key order (one file, say) does that group-by itself use ``reduceat``: then the
    files are read whole, as :func:`combine_counts` reads them.

    ``base`` (for :func:`refit_from_count_files`): a previous table's user x item rows, one per key in
    key order (a frame, or the Parquet file that holds them: read a user range at a time), and their
    decay: each range's sums get that table's rows of the range's users added, as :func:`_merge_counts`
    adds them (with files in key order: to the whole); the result's ``user_items`` is then the merged
    table."""
    return _combine_count_files(parts, paths, range_rows=range_rows,
                                base=None if base is None else _Base.of(base[0], base[1]))[0]


def _combine_count_files(parts: Sequence[BetaCounts], paths: Sequence[Path], *, range_rows: int | None = None,
                         base: _Base | None = None, write_to: Path | None = None) -> tuple[BetaCounts, bool]:
    """:func:`combine_count_files`; with ``write_to``, each range's rows are written to that Parquet file
    as they are summed (the result's ``user_items`` is then empty: True is returned with it), except where
    the files are read whole (all in key order), which returns the whole table as always (False)."""
    if len(parts) != len(paths):
        raise ValueError(f"combine_count_files got {len(parts)} partitions but {len(paths)} files")
    if not parts:
        raise ValueError("combine_count_files needs at least one partition's BetaCounts")
    range_rows = range_rows or _TOTAL_CHUNK_ROWS
    scans = [_scan_keys(Path(p)) for p in paths]
    ends = [p.data_end for p in parts if p.data_end is not None]

    def counts(pairs: pd.DataFrame) -> BetaCounts:
        return BetaCounts(items=_summed([p.items for p in parts], ["item_id"]), user_items=pairs,
                          data_end=max(ends) if ends else None, rows=sum(p.rows for p in parts))

    if _in_key_order(scans):
        pairs = combine_counts(_loaded(parts, paths)).user_items
        return counts(pairs if base is None else _merge_counts(base.whole(), pairs, ["user_id", "item_id"],
                                                               base.factor)), False
    users = pd.concat([s.user_rows for s in scans]).groupby(level=0, sort=True).sum()
    if base is not None:  # the previous table's users cut into the ranges too
        users = users.add(base.user_rows, fill_value=0).astype(np.int64).sort_index()
    bounds = _range_bounds(users, range_rows)
    del users

    def ranges() -> Iterable[pd.DataFrame]:
        for low, high in zip([None, *bounds], [*bounds, None], strict=True):
            piece = _summed_range(scans, low, high)
            yield piece if base is None else _merge_counts(base.rows(low, high), piece, ["user_id", "item_id"],
                                                           base.factor)

    if write_to is None:
        return counts(pd.concat(list(ranges()), ignore_index=True)), False
    empty: list[pd.DataFrame] = []
    atomic_write(Path(write_to), lambda tmp: empty.append(_write_ranges(ranges(), tmp)))
    return counts(empty[0]), True


_USER_ITEM_COLUMNS = ["user_id", "item_id", "successes", "failures"]


def _write_ranges(pieces: Iterable[pd.DataFrame], path: Path) -> pd.DataFrame:
    """The user x item ranges written one after another to the Parquet file ``path``, as
    ``atomic_write_parquet`` writes their concatenation (the same columns and pandas metadata: the file
    reads back as that frame); returns the table's columns with no rows."""
    writer, schema, first = None, None, None
    try:
        for piece in pieces:
            piece = piece[_USER_ITEM_COLUMNS]
            first = empty_like(piece) if first is None else first
            if not len(piece):
                continue
            table = pa.Table.from_pandas(piece, preserve_index=False, schema=schema)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    first = first if first is not None else pd.DataFrame(
        {"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object), "successes": [], "failures": []})
    if writer is None:  # no rows: the empty frame as pandas writes it
        first.to_parquet(path, index=False)
    return first


def _loaded(parts: Sequence[BetaCounts], paths: Sequence[Path]) -> Iterable[BetaCounts]:
    """The partitions with their user x item rows read back, one at a time."""
    for part, path in zip(parts, paths, strict=True):
        yield BetaCounts(items=part.items, user_items=pd.read_parquet(path), data_end=part.data_end, rows=part.rows)


@dataclass(frozen=True)
class _UserOffsets:
    """Where each user's rows end in a table in key order: its users, sorted, and the running row count
    after each. Searching these (one entry per user) finds a user range's slice; searching the table's
    own user column (an Arrow string column: converted to Python objects, every row, for each search)
    cost ~0.9 GB and seconds per range at 10M interactions with a champion."""

    users: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, user_rows: pd.Series) -> _UserOffsets:
        """From rows per user, sorted by user."""
        return cls(user_rows.index.to_numpy(), user_rows.to_numpy().cumsum())

    def rows_through(self, bound: Any) -> int:
        """How many rows belong to users <= ``bound``."""
        at = int(np.searchsorted(self.users, bound, side="right"))
        return int(self.ends[at - 1]) if at else 0

    def slice(self, low: Any, high: Any) -> tuple[int, int]:
        """The rows ``[start, stop)`` of the users in ``(low, high]`` (``None``: unbounded)."""
        total = int(self.ends[-1]) if len(self.ends) else 0
        return (0 if low is None else self.rows_through(low)), (total if high is None else self.rows_through(high))


@dataclass(frozen=True)
class _Base:
    """A previous table's user x item rows, one per key in key order, in memory (``frame``) or in a
    Parquet file written in that order (``path``, never read whole), and the decay of their counts
    (``factor``); read a user range at a time."""

    factor: float
    user_rows: pd.Series  # rows per user, sorted by user
    offsets: _UserOffsets
    frame: pd.DataFrame | None = None
    path: Path | None = None

    @classmethod
    def of(cls, rows: pd.DataFrame | Path | _KeyScan, factor: float) -> _Base:
        if isinstance(rows, pd.DataFrame):
            users = rows.groupby("user_id", sort=True).size()
            return cls(factor, users, _UserOffsets.of(users), frame=rows)
        scan = rows if isinstance(rows, _KeyScan) else _scan_keys(Path(rows))
        if not (scan.sliced and scan.distinct):
            raise ValueError(f"{scan.path} does not hold one row per user x item key in key order")
        return cls(factor, scan.user_rows, _UserOffsets.of(scan.user_rows), path=scan.path)

    def rows(self, low: Any, high: Any) -> pd.DataFrame:
        """The rows of the users in ``(low, high]`` (``None``: unbounded)."""
        start, stop = self.offsets.slice(low, high)
        if self.frame is not None:
            return self.frame.iloc[start:stop]
        return _read_slice(pq.ParquetFile(self.path), start, stop)

    def whole(self) -> pd.DataFrame:
        return self.frame if self.frame is not None else pd.read_parquet(self.path)


_SCAN_BATCH_ROWS = 1 << 20  # key rows per record batch of _scan_keys


@dataclass
class _KeyScan:
    """What one file of user x item counts holds, from its key columns (:func:`_scan_keys`)."""

    path: Path
    rows: int
    ordered: bool  # rows in key order, with any row missing a key before all the others
    leading_missing: bool  # it starts with rows missing a key (of a file in key order)
    first: tuple[Any, Any] | None  # first and last key of the rows with both keys (of a file in key order)
    last: tuple[Any, Any] | None
    user_rows: pd.Series  # rows per user, in the order the users first come
    sliced: bool  # in key order with every key: a user range's rows are one slice of the file
    distinct: bool  # in key order, no key twice


def _scan_keys(path: Path, batch_rows: int | None = None) -> _KeyScan:
    """:class:`_KeyScan` of a file, from its key columns read a record batch at a time (a champion's
    file holds ~20M rows at 30M interactions: its key columns are never whole in memory)."""
    import pyarrow.compute as pc

    from core.parquet import open_for_streaming

    file = open_for_streaming(path)
    n = file.metadata.num_rows
    leading = 0  # rows missing a key before the first row with both
    ordered = distinct = True
    first: tuple[Any, Any] | None = None
    last: tuple[Any, Any] | None = None
    counts = []
    for batch in file.iter_batches(batch_size=batch_rows or _SCAN_BATCH_ROWS, columns=["user_id", "item_id"],
                                   use_threads=False):
        user, item = batch.column(0), batch.column(1)
        present = pc.is_valid(user)
        counts.append(pc.value_counts(user.filter(present)))
        if not ordered:
            continue
        valid = pc.and_(present, pc.is_valid(item)).to_numpy(zero_copy_only=False)
        skip = 0 if first is not None else (int(np.argmax(valid)) if valid.any() else len(valid))
        leading += skip
        if not valid[skip:].all():  # a row missing a key after a row with both
            ordered = distinct = False
            continue
        u, i = user.slice(skip), item.slice(skip)
        m = len(u)
        if m == 0:
            continue
        head = (u[0].as_py(), i[0].as_py())
        if last is not None and head <= last:
            ordered, distinct = ordered and head == last, False
        if m > 1:
            later_u, earlier_u = u.slice(1), u.slice(0, m - 1)
            later_i, earlier_i = i.slice(1), i.slice(0, m - 1)
            same_user = pc.equal(later_u, earlier_u)
            backwards = pc.or_(pc.less(later_u, earlier_u), pc.and_(same_user, pc.less(later_i, earlier_i)))
            ordered = ordered and not pc.any(backwards).as_py()
            distinct = distinct and ordered and not pc.any(pc.and_(same_user, pc.equal(later_i, earlier_i))).as_py()
        first = head if first is None else first
        last = (u[m - 1].as_py(), i[m - 1].as_py())
    if not counts:  # no rows: the users' type all the same
        counts.append(pc.value_counts(pa.array([], type=file.schema_arrow.field("user_id").type)))
    per_batch = [pd.Series(c.field("counts").to_numpy(), index=c.field("values").to_pandas(), dtype=np.int64)
                 for c in counts]
    user_rows = per_batch[0] if len(per_batch) == 1 else pd.concat(per_batch).groupby(level=0, sort=False).sum()
    distinct = distinct and ordered
    return _KeyScan(Path(path), n, ordered, leading > 0, first, last, user_rows,
                    sliced=ordered and leading == 0, distinct=distinct)


def _in_key_order(scans: list[_KeyScan]) -> bool:
    """Whether the files' rows, one file after another, come in key order (rows missing a key first),
    the order in which pandas' group-by sums with ``np.add.reduceat``."""
    last: tuple[Any, Any] | None = None
    for s in scans:
        if not s.ordered or (s.leading_missing and last is not None):
            return False
        if s.first is not None:
            if last is not None and s.first < last:
                return False
            last = s.last
    return True


def _range_bounds(users: pd.Series, range_rows: int) -> list[Any]:
    """The last user of each range but the last: consecutive users (sorted) of about ``range_rows`` rows."""
    cumulative = users.to_numpy().cumsum()
    marks = np.arange(range_rows, int(cumulative[-1]) if len(cumulative) else 0, range_rows)
    at = np.unique(np.searchsorted(cumulative, marks, side="left"))
    at = at[at < len(users) - 1]
    return users.index[at].tolist()


def _range_rows(scan: _KeyScan, low: Any, high: Any) -> pd.DataFrame:
    """The rows of one file whose user is in ``(low, high]`` (``None``: unbounded), in the file's order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if scan.sliced:  # users in sorted order, each user's rows together
        users, ends = scan.user_rows.index, np.r_[0, scan.user_rows.to_numpy().cumsum()]
        start = 0 if low is None else int(ends[users.searchsorted(low, side="right")])
        stop = scan.rows if high is None else int(ends[users.searchsorted(high, side="right")])
        return _read_slice(pq.ParquetFile(scan.path), start, stop)
    table = pq.read_table(scan.path)
    user = table.column("user_id")
    mask = pc.is_valid(user)
    if low is not None:
        mask = pc.and_(mask, pc.greater(user, low))
    if high is not None:
        mask = pc.and_(mask, pc.less_equal(user, high))
    return table.filter(mask).to_pandas()


def _read_slice(file: Any, start: int, stop: int) -> pd.DataFrame:
    """Rows ``[start, stop)`` of a Parquet file, reading only the row groups that hold them."""
    groups, offset, first_offset = [], 0, 0
    for g in range(file.metadata.num_row_groups):
        n = file.metadata.row_group(g).num_rows
        if offset < stop and offset + n > start:
            if not groups:
                first_offset = offset
            groups.append(g)
        offset += n
    if not groups or stop <= start:
        return file.schema_arrow.empty_table().to_pandas()
    return file.read_row_groups(groups).slice(start - first_offset, stop - start).to_pandas()


def _summed_range(scans: list[_KeyScan], low: Any, high: Any) -> pd.DataFrame:
    """One user range's rows of every file, in the files' order, summed per key as pandas' group-by of
    all the files' rows sums them when they do not come in key order (compensated sums)."""
    frame = pd.concat([_range_rows(s, low, high) for s in scans], ignore_index=True)
    u_codes, u_values = pd.factorize(frame["user_id"], sort=True)
    i_codes, i_values = pd.factorize(frame["item_id"], sort=True)
    valid = (u_codes >= 0) & (i_codes >= 0)  # a missing key: the group-by drops the row
    size = max(len(i_values), 1)
    key = u_codes.astype(np.int64)[valid] * size + i_codes[valid]
    successes = frame["successes"].to_numpy(dtype=np.float64)[valid]
    failures = frame["failures"].to_numpy(dtype=np.float64)[valid]
    dtypes = frame["user_id"].dtype, frame["item_id"].dtype
    del frame, u_codes, i_codes, valid
    extra = len(key) > 0 and bool(np.all(key[1:] >= key[:-1]))
    if extra:  # in key order: pandas would use reduceat; one row out of order keeps the compensated sum
        key, successes, failures = np.r_[key, -1], np.r_[successes, 0.0], np.r_[failures, 0.0]
    summed = pd.DataFrame({"key": key, "successes": successes, "failures": failures}, copy=False).groupby(
        "key", sort=True)[["successes", "failures"]].sum()
    if extra:
        summed = summed.iloc[1:]
    keys = summed.index.to_numpy()
    return pd.DataFrame({"user_id": pd.Series(u_values.take(keys // size), dtype=dtypes[0]),
                         "item_id": pd.Series(i_values.take(keys % size), dtype=dtypes[1]),
                         "successes": summed["successes"].to_numpy(), "failures": summed["failures"].to_numpy()})


def _summed(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """Successes and failures summed per key over ``frames``, sorted by the keys (a group-by)."""
    return pd.concat(frames, ignore_index=True).groupby(keys, as_index=False)[["successes", "failures"]].sum()


@dataclass
class _CodedCounts:
    """One partition's counts with its keys as integer codes, numbered by first appearance across the
    partitions coded so far (``values``: each key column's values in that order, shared and grown)."""

    keys: list[str]
    codes: list[np.ndarray]
    successes: np.ndarray
    failures: np.ndarray
    values: list[list[Any]]
    dtypes: list[Any]

    @classmethod
    def of(cls, frame: pd.DataFrame, keys: list[str], values: list[list[Any]] | None) -> _CodedCounts:
        values = values if values is not None else [[] for _ in keys]
        codes = []
        for column, seen in zip(keys, values, strict=True):
            local, uniques = pd.factorize(frame[column])
            uniques = np.asarray(uniques, dtype=object)
            known = pd.Index(seen, dtype=object).get_indexer(uniques) if seen else np.full(len(uniques), -1)
            new = known < 0
            known[new] = len(seen) + np.arange(int(new.sum()))
            seen.extend(uniques[new].tolist())
            codes.append(np.r_[known, -1].astype(np.int32 if len(seen) < 2**31 else np.int64)[local])  # -1: missing
        return cls(keys, codes, frame["successes"].to_numpy(dtype=np.float64),
                   frame["failures"].to_numpy(dtype=np.float64), values, [frame[k].dtype for k in keys])

    @staticmethod
    def total(parts: list[_CodedCounts]) -> pd.DataFrame:
        """``pd.concat(frames).groupby(keys, as_index=False)[["successes", "failures"]].sum()`` of the
        partitions' frames, to the last bit: the same rows in the same order feed the same group sums
        (pandas' compensated sums), grouped by one integer whose order is the keys' sorted order."""
        first = parts[0]
        ranks, ordered = [], []
        for seen in first.values:
            uniques = np.asarray(seen, dtype=object)
            order = np.argsort(uniques, kind="stable")
            rank = np.empty(len(uniques), dtype=np.int64)
            rank[order] = np.arange(len(uniques))
            ranks.append(rank)
            ordered.append(uniques[order])
        key = np.zeros(sum(len(p.successes) for p in parts), dtype=np.int64)
        present = np.ones(len(key), dtype=bool)
        for i, rank in enumerate(ranks):
            codes = np.concatenate([p.codes[i] for p in parts])
            for p in parts:  # each partition's codes go once gathered
                p.codes[i] = p.codes[i][:0].copy()  # a view would keep the codes alive
            present &= codes >= 0  # a missing key: the group-by drops the row
            key *= max(len(rank), 1)
            key += np.where(codes >= 0, rank[np.maximum(codes, 0)] if len(rank) else 0, 0)
            del codes
        columns = {"key": key}
        for name in ("successes", "failures"):
            columns[name] = np.concatenate([getattr(p, name) for p in parts])
            for p in parts:
                setattr(p, name, getattr(p, name)[:0].copy())
        del key
        if not present.all():
            columns = {name: values[present] for name, values in columns.items()}
        del present
        key, successes, failures = _CodedCounts._summed_by_key(columns["key"], columns["successes"],
                                                               columns["failures"])
        del columns
        out = {}
        for i in reversed(range(len(ranks))):
            size = max(len(ranks[i]), 1)
            out[first.keys[i]] = pd.Series(ordered[i][key % size], dtype=first.dtypes[i])
            key = key // size
        return pd.DataFrame({**{k: out[k] for k in first.keys}, "successes": successes, "failures": failures})

    @staticmethod
    def _summed_by_key(key: np.ndarray, successes: np.ndarray, failures: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(keys, successes, failures)`` summed per key, in key order: pandas' group-by sum over ranges
        of keys (about ``_TOTAL_CHUNK_ROWS`` rows per range), so its hash table and sort hold a range's
        rows, not all (~0.8 GB at 10M interactions). Each key's rows are in one range, in their order,
        and pandas sums them the same way: with its compensated sum, unless a frame's keys come sorted
        (then ``np.add.reduceat``): a range whose rows are sorted is summed with the next range (or the
        last), never alone, unless all of them are sorted (then everything is: one group-by, as pandas
        would). So every float is the one a single group-by of everything gives, to the last bit."""
        groups = [None]
        if len(key) > _TOTAL_CHUNK_ROWS:  # range edges at key quantiles: about equal rows per range
            edges = np.unique(np.quantile(key, np.linspace(0, 1, -(-len(key) // _TOTAL_CHUNK_ROWS) + 1)[1:-1],
                                          method="lower"))
            bounds = list(zip([None, *edges], [*edges, None], strict=True))
            groups = _unsorted_groups([_in_range(key, low, high) for low, high in bounds], key)
        keys, sums = [], {"successes": [], "failures": []}
        for rows in groups:
            rows = slice(None) if rows is None else rows
            frame = pd.DataFrame({"key": key[rows], "successes": successes[rows], "failures": failures[rows]},
                                 copy=False)
            summed = frame.groupby("key", sort=True)[["successes", "failures"]].sum()
            del frame, rows
            keys.append(summed.index.to_numpy())
            for name in sums:
                sums[name].append(summed[name].to_numpy())
            del summed
        if len(keys) == 1:
            return keys[0], sums["successes"][0], sums["failures"][0]
        return np.concatenate(keys), np.concatenate(sums["successes"]), np.concatenate(sums["failures"])


def _in_range(key: np.ndarray, low: Any, high: Any) -> np.ndarray:
    """The rows (ascending) whose key is in ``(low, high]`` (``None``: unbounded)."""
    mask = np.ones(len(key), dtype=bool) if low is None else key > low
    if high is not None:
        mask &= key <= high
    return np.flatnonzero(mask)


def _unsorted_groups(ranges: list[np.ndarray], key: np.ndarray) -> list[np.ndarray | None]:
    """Consecutive key ranges' rows joined so that each group's keys are unsorted in row order (one
    unsorted range makes any union unsorted); ``[None]`` (everything) when no range is unsorted."""
    unsorted = [len(r) > 1 and bool(np.any(key[r[1:]] < key[r[:-1]])) for r in ranges]
    if not any(unsorted):
        return [None]
    groups: list[list[np.ndarray]] = []
    pending: list[np.ndarray] = []
    for rows, mixed in zip(ranges, unsorted, strict=True):
        pending.append(rows)
        if mixed:
            groups.append(pending)
            pending = []
    if pending:  # sorted ranges after the last unsorted one join its group
        groups[-1].extend(pending)
    return [parts[0] if len(parts) == 1 else np.sort(np.concatenate(parts)) for parts in groups]


_TOTAL_CHUNK_ROWS = 1 << 21  # rows per group-by in _CodedCounts.total (about: ranges end at key quantiles)


def refit_from_counts(previous: BetaTables | None, counts: BetaCounts, settings: BanditSettings,
                      now: datetime) -> BetaTables:
    """:func:`refit` from combined :func:`beta_counts` (computed with ``since=previous.data_end``):
    the same table, to float summation order."""
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now!r}")
    base = previous or empty_tables(settings, now)
    factor = _carried(previous, settings, now)
    items = _merge_counts(base.items, counts.items, ["item_id"], factor)
    pairs = _merge_counts(base.user_items, counts.user_items, ["user_id", "item_id"], factor)
    return _refitted(base, counts, items, pairs, settings, now)


def refit_from_count_files(previous: BetaTables | None, parts: Sequence[BetaCounts], paths: Sequence[Path],
                           settings: BanditSettings, now: datetime, *, range_rows: int | None = None,
                           write_to: Path | None = None) -> BetaTables:
    """``refit_from_counts(previous, combine_count_files(parts, paths), settings, now)``, the same table
    to the last bit, with the previous table's user x item rows (decayed) added a user range at a time
    as the ranges are summed, instead of in one group-by of both whole tables (~1.8 GB at 10M
    interactions). A previous table not in key order, one row per key, is merged as that does.

    ``write_to``: a Parquet file to write the new table's user x item rows to range by range, as
    :meth:`BetaTables.save` writes them; the table returned then holds them there (``user_items_path``)
    and ``user_items`` is empty, so they are never a frame in memory. (Where they are anyway, files all in
    key order or a previous table not in it, the table holds them in memory as without ``write_to``.)"""
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now!r}")
    rows: pd.DataFrame | _KeyScan | None = None
    if previous is not None and previous.user_items_path is not None:
        scan = _scan_keys(Path(previous.user_items_path))
        if not (scan.sliced and scan.distinct):  # not as save writes it: merged whole, as refit_from_counts does
            previous = previous.with_user_items()
        elif scan.rows:
            rows = scan
    if previous is not None and previous.user_items_path is None and len(previous.user_items):
        rows = previous.user_items
        if not _grouped(rows, ["user_id", "item_id"]):
            return refit_from_counts(previous, combine_count_files(parts, paths, range_rows=range_rows), settings,
                                     now)
    base = previous if previous is not None else empty_tables(settings, now)
    factor = _carried(previous, settings, now)
    counts, written = _combine_count_files(parts, paths, range_rows=range_rows, write_to=write_to,
                                           base=None if rows is None else _Base.of(rows, factor))
    if rows is None and not written:
        return refit_from_counts(without_user_items(previous), counts, settings, now)
    items = _merge_counts(base.items, counts.items, ["item_id"], factor)
    table = _refitted(base, counts, items, counts.user_items, settings, now)
    return replace(table, user_items_path=Path(write_to)) if written else table


def without_user_items(table: BetaTables | None) -> BetaTables | None:
    """``table`` without user x item rows, in memory or in a file (a refit judged by its per-item table)."""
    if table is None:
        return None
    return replace(table, user_items=empty_like(table.user_items), user_items_path=None)


def _carried(previous: BetaTables | None, settings: BanditSettings, now: datetime) -> float:
    """The decay of the previous table's counts from its fit to ``now``."""
    if previous is None or settings.half_life_days is None:
        return 1.0
    elapsed = (pd.Timestamp(now) - pd.Timestamp(previous.fitted_at)).total_seconds() / 86_400.0
    return float(_decay(np.array([elapsed]), settings.half_life_days)[0])


def _refitted(base: BetaTables, counts: BetaCounts, items: pd.DataFrame, pairs: pd.DataFrame,
              settings: BanditSettings, now: datetime) -> BetaTables:
    data_end = counts.data_end
    if data_end is None or (base.data_end is not None and data_end < pd.Timestamp(base.data_end)):
        data_end = base.data_end
    end = pd.Timestamp(data_end).to_pydatetime() if data_end is not None else None
    return BetaTables(items=items, user_items=pairs, settings=settings, fitted_at=now, data_end=end)
