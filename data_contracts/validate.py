"""Validate an extracted interaction window: quarantine bad rows with reasons, stop on fatal problems."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.config.contracts import ContractSettings
from core.errors import ContractViolation, Reason
from core.parquet import open_for_streaming
from core.schema import (
    INTERACTION_COLUMNS,
    INTERACTION_SCHEMA,
    REQUIRED_COLUMNS,
    SOURCE_ERRORS,
    SOURCE_ERRORS_FIELD,
)
from data_contracts import ge_suite
from data_contracts.across import across_rows
from data_contracts.checks import (
    EXPOSURE_TYPES,
    Batch,
    CompoundUnique,
    Unique,
    unconverted_columns,
)
from data_contracts.ge_suite import sample_indices
from data_contracts.profile import WindowProfile, batch_records, build_profile
from data_contracts.report import violation
from data_contracts.rules import (
    NOW,
    SUITE_NAME,
    WINDOW_END,
    WINDOW_START,
    Counts,
    RowRule,
    row_rules,
    suite_version,
    table_rules,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContractResult:
    """Outcome of :func:`check_interactions`.

    ``valid`` has the canonical ``INTERACTION_SCHEMA`` columns, then the extract's extra columns.
    ``quarantined`` has the canonical columns (nullable), ``source_errors`` (the raw text of values
    extraction could not convert), the extra columns, ``reason`` (every failing rule's reason,
    joined by ';') and ``rule`` (the first failing rule). ``expectations`` holds one record per expectation:
    name, success, unexpected_count, element_count, engine (``great_expectations``, ``rankloop``
    (masks), ``table`` or ``batch``), and for row rules ``quarantined_count``.
    ``gate_passed``: no fatal table or batch rule failed (the run may continue).
    ``passed``: every table and batch rule held, non-fatal ones included.
    ``valid_path``: set by :func:`check_interactions_file`, which writes the valid rows there as it
    goes; ``valid`` is then an empty table of their schema and ``valid_rows`` their count.
    """

    valid: pa.Table
    quarantined: pa.Table
    suite_name: str
    suite_version: str
    expectations: list[dict[str, Any]] = field(default_factory=list)
    passed: bool = True
    window: tuple[datetime, datetime] | None = None
    gate_passed: bool = True
    now: datetime | None = None
    profile: WindowProfile | None = None
    previous: WindowProfile | None = None
    ge_rows: int | None = None  # rows Great Expectations validated (None: GE not run)
    valid_path: Path | None = None
    valid_rows: int | None = None

    @property
    def rows_valid(self) -> int:
        return self.valid.num_rows if self.valid_rows is None else self.valid_rows

    @property
    def rows_in(self) -> int:
        return self.rows_valid + self.quarantined.num_rows

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The fatal table/batch records that failed (empty when the gate passed)."""
        return [r for r in self.expectations if r["engine"] in ("table", "batch") and r["fatal"] and not r["success"]]

    def reason_counts(self) -> dict[str, int]:
        """Quarantined rows per reason code (a row with two reasons counts under both)."""
        reasons = pc.split_pattern(self.quarantined.column("reason"), ";").combine_chunks().flatten()
        counts = {r["values"]: r["counts"] for r in pc.value_counts(reasons).to_pylist()} if len(reasons) else {}
        return dict(sorted(counts.items()))

    def summary(self) -> dict[str, Any]:
        """rows_in, rows_valid, rows_quarantined, per-reason counts, failing expectations, batch checks."""
        return {
            "suite_name": self.suite_name,
            "suite_version": self.suite_version,
            "passed": self.gate_passed,
            "all_rules_held": self.passed,
            "window": [w.isoformat() for w in self.window] if self.window else None,
            "now": self.now.isoformat() if self.now else None,
            "rows_in": self.rows_in,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.quarantined.num_rows,
            "reasons": self.reason_counts(),
            "failed_expectations": [e["name"] for e in self.expectations if not e["success"]],
            "gate_failures": [e["name"] for e in self.failures],
            "batch_checks": [{k: e.get(k) for k in ("name", "success", "observed_value", "allowed", "message",
                                                    "previous")}
                             for e in self.expectations if e["engine"] == "batch"],
            "ge_rows": self.ge_rows,
        }

    def violation(self, settings: ContractSettings) -> ContractViolation:
        """The ContractViolation naming every failed gate rule with counts and example rows."""
        return violation(self, settings)

    def raise_if_failed(self, settings: ContractSettings) -> None:
        """Raise :meth:`violation` when a fatal table or batch rule failed."""
        if not self.gate_passed:
            raise self.violation(settings)


def validate_interactions(
    table: pa.Table, *, window: tuple[datetime, datetime], settings: ContractSettings, run_ge: bool = True,
    now: datetime | None = None, previous: WindowProfile | None = None, prior_exposures: pa.Table | None = None,
) -> ContractResult:
    """:func:`check_interactions`, raising ContractViolation when the gate fails."""
    result = check_interactions(table, window=window, settings=settings, run_ge=run_ge, now=now, previous=previous,
                                prior_exposures=prior_exposures)
    result.raise_if_failed(settings)
    return result


def check_interactions(
    table: pa.Table, *, window: tuple[datetime, datetime], settings: ContractSettings, run_ge: bool = True,
    now: datetime | None = None, previous: WindowProfile | None = None, prior_exposures: pa.Table | None = None,
) -> ContractResult:
    """Check an extract of the window ``[start, end)`` against the ``interactions`` suite.

    Args:
        table: interactions in the canonical columns (a snapshot: nullable, with ``source_errors``;
            missing nullable columns are filled with nulls, other columns are kept as extras).
        window: ``(start, end)``, timezone-aware; ``ts`` must lie in ``[start, end)``.
        settings: thresholds.
        run_ge: also run the Great Expectations suite for the official record (on the full table,
            or on a strided sample of ``settings.ge_max_rows`` rows above that size).
        now: the validation time; ``ts`` after it is quarantined as ``ts_in_future``. Default: now (UTC).
        previous: the previous window's profile (batch-level checks compare with it); None: first run.
        prior_exposures: impressions/views before the window (``user_id``, ``item_id``, ``ts``): an
            engagement early in the window may follow one of them (``exposure_lookback_days``).

    Returns:
        The valid rows, the quarantined rows with reasons, the expectation records, this window's
        profile and the gate verdict (``gate_passed``; see :meth:`ContractResult.raise_if_failed`).

    Raises:
        TypeError: ``table`` is not a ``pa.Table`` or the window/now is not timezone-aware.
        ValueError: the window's start is not before its end.
        ContractViolation: missing required columns or wrong column types (Reason.CONTRACT), an
            empty extract (Reason.EMPTY), rows lost between extract and clean + quarantined.
    """
    now = datetime.now(UTC) if now is None else now
    _check_arguments(table, window, now)
    table = _conform(table)
    if table.num_rows == 0:
        raise ContractViolation(
            f"contract {SUITE_NAME!r}: the extract of window [{window[0]}, {window[1]}) is empty (0 rows)",
            reason=Reason.EMPTY, details={"window": [str(w) for w in window], "rows_in": 0},
        )
    rules = row_rules(settings)
    batch = Batch(table, {WINDOW_START: window[0], WINDOW_END: window[1], NOW: now}, prior_exposures)
    masks = {r.name: r.mask(batch) for r in rules}
    bad = np.logical_or.reduce(list(masks.values()))
    valid, quarantined = _valid_table(_keep_valid(table, bad)), _quarantine_table(table, bad, rules, masks)
    _check_nothing_lost(table.num_rows, valid.num_rows, quarantined.num_rows)
    records = _row_records(batch, rules, masks, window, now, settings if run_ge else None)
    exposures = int(np.count_nonzero(batch.event_type_in(EXPOSURE_TYPES) & ~bad))
    counts = Counts(table.num_rows, valid.num_rows, quarantined.num_rows, exposures)
    version = suite_version(settings)
    profile = build_profile(batch.ts_int64[~bad], batch.event_type_dictionary[batch.event_type_codes[~bad]],
                            window, now, version)
    records += _table_records(counts, settings) + batch_records(profile, previous, settings)
    checks = [r for r in records if r["engine"] in ("table", "batch")]
    _log_non_fatal(checks)
    ge_rows = None if not run_ge else min(table.num_rows, settings.ge_max_rows or table.num_rows)
    result = ContractResult(valid, quarantined, SUITE_NAME, version, records,
                            passed=all(r["success"] for r in checks), window=window,
                            gate_passed=all(r["success"] for r in checks if r["fatal"]), now=now,
                            profile=profile, previous=previous, ge_rows=ge_rows)
    logger.info("contract %s: %s", SUITE_NAME, {k: v for k, v in result.summary().items() if k != "batch_checks"})
    return result


# The valid file's row groups: pyarrow's default for a whole table (pq.write_table), so the file reads
# back in the same chunks as when the contract wrote its valid table at once.
_ROW_GROUP_ROWS = 1024 * 1024


def check_interactions_file(
    path: Path, *, window: tuple[datetime, datetime], settings: ContractSettings, valid_path: Path,
    run_ge: bool = True, now: datetime | None = None, previous: WindowProfile | None = None,
    prior_exposures: pa.Table | None = None, batch_rows: int = 262_144,
) -> ContractResult:
    """:func:`check_interactions` of the Parquet file (or folder of files) ``path`` without holding it: the same valid rows
    (written to ``valid_path``, atomically, in the file's order), quarantine, records, profile and verdict.

    The rules that look across rows (uniqueness, an exposure before an engagement) run over hashed keys
    and one bucket of users at a time (:func:`data_contracts.across.across_rows`, spilling the buckets
    beside ``valid_path``); every other rule, the split into valid and quarantined rows and the write run
    one record batch of ``batch_rows`` rows at a time; Great Expectations checks the same strided sample
    (gathered batch by batch). So memory holds a few bytes per row, a bucket's key columns, a batch and
    the quarantined rows, not the extract nor its key columns.

    Raises:
        As :func:`check_interactions` (missing required columns or wrong types before any row is read).
    """
    from core.atomic import atomic_write

    now = datetime.now(UTC) if now is None else now
    files = _parquet_files(Path(path))
    schema = files[0].schema_arrow if files else pa.schema([])
    _check_arguments(schema.empty_table(), window, now)
    _conform(schema.empty_table())  # the columns and types, before reading a row
    n = sum(f.metadata.num_rows for f in files)
    if n == 0:
        raise ContractViolation(
            f"contract {SUITE_NAME!r}: the extract of window [{window[0]}, {window[1]}) is empty (0 rows)",
            reason=Reason.EMPTY, details={"window": [str(w) for w in window], "rows_in": 0},
        )
    rules = row_rules(settings)
    params = {WINDOW_START: window[0], WINDOW_END: window[1], NOW: now}
    Path(valid_path).parent.mkdir(parents=True, exist_ok=True)
    found = across_rows(files, rules, params, prior_exposures, scratch=Path(valid_path).parent, batch_rows=batch_rows)
    across, keys = found.masks, found.keys
    quarantined_counts = {r.name: int(across[r.name].sum()) if r.name in across else 0 for r in rules}
    exact = {r.name: _exact_record(keys, r, quarantined_counts[r.name], found.repeated[r.name])
             for r in rules if r.name in across}
    _release_memory()
    bad = np.zeros(n, dtype=bool)
    indices = sample_indices(n, settings.ge_max_rows) if run_ge else None
    sampled: list[pa.Table] = []
    quarantined: list[pa.Table] = []
    written = [0, None]  # valid rows, their schema

    def write(tmp: Path) -> None:
        writer = None
        offset = 0
        pending: list[pa.Table] = []  # valid rows not yet written: whole row groups go out as they fill

        def flush(final: bool) -> None:
            rows = sum(t.num_rows for t in pending)
            full = rows if final else rows - rows % _ROW_GROUP_ROWS
            if full == 0:
                return
            table = pa.concat_tables(pending)
            writer.write_table(table.slice(0, full), row_group_size=_ROW_GROUP_ROWS)
            pending[:] = [table.slice(full)] if full < rows else []

        try:
            for record_batch in (b for f in files for b in f.iter_batches(batch_size=batch_rows, use_threads=False)):
                if record_batch.num_rows == 0:
                    continue
                table = _conform(pa.Table.from_batches([record_batch]))
                rows = slice(offset, offset + table.num_rows)
                batch = Batch(table, params, prior_exposures)
                masks = {r.name: across[r.name][rows] if r.name in across else r.mask(batch) for r in rules}
                for r in rules:
                    if r.name not in across:
                        quarantined_counts[r.name] += int(masks[r.name].sum())
                flagged = np.logical_or.reduce(list(masks.values()))
                bad[rows] = flagged
                valid = _valid_table(_keep_valid(table, flagged))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, valid.schema, compression="lz4")
                    written[1] = valid.schema
                pending.append(valid)
                flush(final=False)
                written[0] += valid.num_rows
                if flagged.any():
                    quarantined.append(_quarantine_table(table, flagged, rules, masks))
                if run_ge:
                    mine = np.arange(offset, offset + table.num_rows) if indices is None else \
                        indices[(indices >= offset) & (indices < offset + table.num_rows)]
                    sampled.append(table.take(pa.array(mine - offset)))
                offset += table.num_rows
            if writer is not None:
                flush(final=True)
        finally:
            if writer is not None:
                writer.close()
        if offset != n:
            raise ContractViolation(f"contract {SUITE_NAME!r}: read {offset} rows of {path}, its metadata says {n}",
                                    reason=Reason.CONTRACT, details={"rows_read": offset, "rows_in": n})

    atomic_write(valid_path, write)
    quarantine = (pa.concat_tables(quarantined) if quarantined
                  else _quarantine_table(_conform(schema.empty_table()), np.zeros(0, dtype=bool), rules,
                                    {r.name: np.zeros(0, dtype=bool) for r in rules}))
    _check_nothing_lost(n, written[0], quarantine.num_rows)
    exact = [exact[r.name] if r.name in exact else _exact_record(keys, r, quarantined_counts[r.name])
             for r in rules]
    records = exact if not run_ge else ge_suite.merge_checked_records(
        pa.concat_tables(sampled), indices is not None, rules, exact, params)
    exposures = int(np.count_nonzero(keys.event_type_in(EXPOSURE_TYPES) & ~bad))
    counts = Counts(n, written[0], quarantine.num_rows, exposures)
    version = suite_version(settings)
    per_type = np.bincount(keys.event_type_codes[~bad], minlength=len(keys.event_type_dictionary))
    type_counts = {str(t): int(c) for t, c in zip(keys.event_type_dictionary, per_type, strict=True)
                   if c and t is not None}
    profile = build_profile(keys.ts_int64[~bad], type_counts, window, now, version)
    records += _table_records(counts, settings) + batch_records(profile, previous, settings)
    checks = [r for r in records if r["engine"] in ("table", "batch")]
    _log_non_fatal(checks)
    result = ContractResult(written[1].empty_table(), quarantine, SUITE_NAME, version, records,
                            passed=all(r["success"] for r in checks), window=window,
                            gate_passed=all(r["success"] for r in checks if r["fatal"]), now=now,
                            profile=profile, previous=previous,
                            ge_rows=None if not run_ge else min(n, settings.ge_max_rows or n),
                            valid_path=Path(valid_path), valid_rows=written[0])
    logger.info("contract %s: %s", SUITE_NAME, {k: v for k, v in result.summary().items() if k != "batch_checks"})
    return result


def _release_memory() -> None:
    """Hand the Arrow pool's freed pages back (the key columns' hash tables), so the batches reuse them."""
    pa.default_memory_pool().release_unused()


def _parquet_files(path: Path) -> list[pq.ParquetFile]:
    """``path``'s Parquet file, or those of the folder ``path`` in name order (as ``pq.read_table`` reads
    a folder), opened for streaming (:func:`core.parquet.open_for_streaming`: a row group is read column by
    column as batches need it, and not kept once read)."""
    paths = sorted(p for p in path.iterdir() if p.suffix == ".parquet") if path.is_dir() else [path]
    return [open_for_streaming(p) for p in paths]


def _check_nothing_lost(rows_in: int, rows_valid: int, rows_quarantined: int) -> None:
    """clean + quarantined must equal extracted; anything else is a bug, never a silent loss."""
    if rows_valid + rows_quarantined != rows_in:
        raise ContractViolation(
            f"contract {SUITE_NAME!r}: rows lost: {rows_valid} clean + {rows_quarantined} quarantined "
            f"!= {rows_in} extracted", reason=Reason.CONTRACT,
            details={"rows_in": rows_in, "rows_valid": rows_valid, "rows_quarantined": rows_quarantined},
        )
    logger.info("contract %s: nothing lost: %d extracted = %d clean + %d quarantined",
                SUITE_NAME, rows_in, rows_valid, rows_quarantined)


def _check_arguments(table: Any, window: Any, now: Any) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise TypeError(f"now must be a timezone-aware datetime, got {now!r}")
    if not isinstance(table, pa.Table):
        raise TypeError(f"table must be a pyarrow.Table, got {type(table).__name__}")
    if not (isinstance(window, tuple) and len(window) == 2 and all(isinstance(w, datetime) for w in window)):
        raise TypeError(f"window must be a (start, end) tuple of datetimes, got {window!r}")
    if any(w.tzinfo is None for w in window):
        raise TypeError(f"window bounds must be timezone-aware, got {window!r}")
    if window[0] >= window[1]:
        raise ValueError(f"window start must be before end, got [{window[0]}, {window[1]})")


def _conform(table: pa.Table) -> pa.Table:
    """Canonical columns (nullable) in order, ``source_errors``, then any extra columns; fatal if
    required columns are missing or canonical types differ."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    wrong = {f.name: (str(f.type), str(table.schema.field(f.name).type))
             for f in INTERACTION_SCHEMA if f.name in table.column_names and table.schema.field(f.name).type != f.type}
    if missing or wrong:
        raise ContractViolation(
            f"contract {SUITE_NAME!r}: missing required column(s) {missing}; wrong type(s) "
            f"{ {k: f'expected {e}, found {g}' for k, (e, g) in wrong.items()} }; "
            f"expected columns {list(INTERACTION_SCHEMA.names)}, found {table.column_names}",
            reason=Reason.CONTRACT,
            details={"missing_columns": missing, "wrong_types": wrong, "found": table.column_names},
        )
    fields = [f.with_nullable(True) for f in INTERACTION_SCHEMA] + [SOURCE_ERRORS_FIELD]
    fields += [table.schema.field(c) for c in table.column_names if c not in INTERACTION_COLUMNS and c != SOURCE_ERRORS]
    arrays = [table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in fields]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _keep_valid(table: pa.Table, bad: np.ndarray, max_slices: int = 64) -> pa.Table:
    """Rows not flagged. With few bad rows, zero-copy slices between them instead of a full copy."""
    flagged = np.flatnonzero(bad)
    if len(flagged) > max_slices:
        return table.filter(pa.array(~bad))
    bounds = zip(np.r_[0, flagged + 1], np.r_[flagged, table.num_rows], strict=True)
    return pa.concat_tables([table.slice(a, b - a) for a, b in bounds if b > a] or [table.slice(0, 0)])


def _valid_table(table: pa.Table) -> pa.Table:
    """The canonical columns typed as ``INTERACTION_SCHEMA`` (every required value is present once the
    bad rows are out), then the extra columns; ``source_errors`` is null on every valid row."""
    extras = [c for c in table.column_names if c not in INTERACTION_COLUMNS and c != SOURCE_ERRORS]
    canonical = table.select(list(INTERACTION_COLUMNS)).cast(INTERACTION_SCHEMA)
    return pa.Table.from_arrays([*canonical.columns, *(table.column(c) for c in extras)],
                                schema=pa.schema([*INTERACTION_SCHEMA, *(table.schema.field(c) for c in extras)]))


def _quarantine_table(
    table: pa.Table, bad: np.ndarray, rules: Sequence[RowRule], masks: dict[str, np.ndarray]
) -> pa.Table:
    """Flagged rows with ``reason`` (all failing reasons, ';'-joined) and ``rule`` (the first).

    Every column is nullable here: a row quarantined for a null id must still be writable to Parquet.
    """
    rows = table.filter(pa.array(bad))
    flagged = [(r, pa.array(masks[r.name][bad])) for r in rules if masks[r.name].any()]
    if not flagged:
        return rows.append_column("reason", pa.array([], pa.string())).append_column("rule", pa.array([], pa.string()))
    reasons = [pc.if_else(m, _reason(r, rows), None) for r, m in flagged]
    names = [pc.if_else(m, r.name, None) for r, m in flagged]
    reason = pc.binary_join_element_wise(*reasons, ";", null_handling="skip") if len(reasons) > 1 else reasons[0]
    rule = pc.coalesce(*names)
    return rows.append_column("reason", _chunked(reason)).append_column("rule", _chunked(rule))


def _chunked(array: Any) -> pa.ChunkedArray:
    return array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array], type=pa.string())


def _reason(rule: RowRule, rows: pa.Table) -> Any:
    if not rule.reason_with_value:
        return pa.scalar(rule.reason)
    if rule.column == SOURCE_ERRORS:
        return pc.binary_join_element_wise(rule.reason, unconverted_columns(rows.column(SOURCE_ERRORS)), ":")
    values = pc.fill_null(rows.column(rule.column).cast(pa.string()), "<null>")
    return pc.binary_join_element_wise(rule.reason, values, ":")


def _row_records(
    batch: Batch, rules: Sequence[RowRule], masks: dict[str, np.ndarray],
    window: tuple[datetime, datetime], now: datetime, settings: ContractSettings | None,
) -> list[dict[str, Any]]:
    """Exact per-rule records from the masks, merged with GE's record when ``settings`` is given."""
    exact = [_exact_record(batch, r, int(masks[r.name].sum()), _repeated(batch.table, r, masks[r.name]))
             for r in rules]
    if settings is None:
        return exact
    return ge_suite.merge_ge_records(batch.table, rules, exact, {WINDOW_START: window[0], WINDOW_END: window[1],
                                                                  NOW: now}, settings)


def _repeated(table: pa.Table, rule: RowRule, mask: np.ndarray) -> int:
    """For a uniqueness rule, the distinct values (keys) among the rows ``mask`` flags; 0 for other rules."""
    if isinstance(rule.check, Unique) and mask.any():
        return pc.count_distinct(table.column(rule.column).filter(pa.array(mask))).as_py()
    if isinstance(rule.check, CompoundUnique) and mask.any():
        columns = list(rule.check.columns)
        return table.select(columns).filter(pa.array(mask)).group_by(columns).aggregate([]).num_rows
    return 0


def _exact_record(batch: Batch, rule: RowRule, quarantined: int, repeated: int = 0) -> dict[str, Any]:
    """Counts in GE's semantics (duplicates: every member of a duplicated group) plus our quarantine count.
    ``repeated``: for a uniqueness rule, the distinct values among its quarantined rows (:func:`_repeated`):
    GE also counts each repeated value's first occurrence."""
    unexpected = quarantined + repeated
    elements = batch.table.num_rows
    if rule.when_event_types is not None:
        elements = int(np.count_nonzero(batch.event_type_in(rule.when_event_types)))
    return {
        "name": rule.name, "expectation": rule.check.expectation_type, "column": rule.column,
        "success": unexpected == 0, "unexpected_count": unexpected, "element_count": elements,
        "quarantined_count": quarantined, "engine": "rankloop",
        **({} if rule.check.expectation_type else {"ge": "no Great Expectations equivalent (masks only)"}),
    }


def _table_records(counts: Counts, settings: ContractSettings) -> list[dict[str, Any]]:
    records = []
    for rule in table_rules(settings):
        success, observed = rule.check(counts)
        records.append({"name": rule.name, "success": bool(success), "observed_value": observed,
                        "unexpected_count": None, "element_count": counts.rows_in,
                        "fatal": rule.fatal, "reason": rule.reason, "engine": "table"})
    return records


def _log_non_fatal(checks: list[dict[str, Any]]) -> None:
    for r in checks:
        if not r["success"]:
            log = logger.error if r["fatal"] else logger.warning
            log("contract %s: %s rule %s failed (observed %s)%s", SUITE_NAME, r["engine"], r["name"],
                r["observed_value"], f": {r['message']}" if r.get("message") else "")
