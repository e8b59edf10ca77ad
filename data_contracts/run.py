"""Validate one snapshot end to end: compare with the previous window, persist quarantine, report, profile.

Shared by the weekly stage (``rankloop.stages.validate``) and ``rankloop validate``; plain I/O on
files under the data home, no Prefect, no database client.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.config.contracts import ContractSettings
from data_contracts.profile import previous_profile, source_key, write_profile
from data_contracts.quarantine import write_quarantine, write_report
from data_contracts.report import render_markdown
from data_contracts.validate import ContractResult, check_interactions, check_interactions_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContractOutcome:
    """What a validated snapshot left behind."""

    result: ContractResult
    quarantine_path: Path | None
    report_path: Path
    report_markdown: str
    profile_path: Path | None

    def summary(self) -> dict[str, Any]:
        """The result's summary plus where its files are."""
        return {**self.result.summary(), "quarantine_path": str(self.quarantine_path) if self.quarantine_path else None,
                "report_path": str(self.report_path),
                "profile_path": str(self.profile_path) if self.profile_path else None}


def validate_snapshot(
    table: pa.Table | Path, *, window: tuple[datetime, datetime], settings: ContractSettings, out_dir: Path,
    profiles_dir: Path, source: str, mapping: str, snapshot_digest: str | None = None, run_ge: bool = True,
    now: datetime | None = None, record_profile: bool = True, extracted_rows: int | None = None,
    valid_path: Path | None = None,
) -> ContractOutcome:
    """Check ``table``, write its quarantine and report into ``out_dir``; never raises on a failed gate.

    Args:
        table: the extract (canonical schema), or its Parquet file: then checked without holding it
            (:func:`check_interactions_file`), its valid rows written to ``valid_path``.
        window: ``[start, end)`` of the extract.
        settings: thresholds.
        out_dir: where the quarantine Parquet/JSON and the report go (created).
        profiles_dir: where window profiles are kept (the previous window's is read from there).
        source: the redacted source URI; with ``mapping`` it keys the profiles.
        mapping: the mapping name.
        snapshot_digest: recorded with the profile and the report.
        run_ge: also run Great Expectations (see :func:`check_interactions`).
        now: the validation time (default: now).
        record_profile: store this window's profile when the gate passed (the next run compares with it).
        extracted_rows: rows the extractor reported; must equal what was validated (nothing lost).
        valid_path: where the valid rows go when ``table`` is a file (required then).

    Returns:
        The result (``result.gate_passed`` is the verdict) and the files written.
    """
    key = source_key(source, mapping)
    previous = previous_profile(profiles_dir, key, window)
    if isinstance(table, pa.Table):
        result = check_interactions(table, window=window, settings=settings, run_ge=run_ge, now=now, previous=previous)
    elif valid_path is None:
        raise TypeError("validate_snapshot of a file needs valid_path (where its valid rows go)")
    else:
        result = check_interactions_file(Path(table), window=window, settings=settings, valid_path=valid_path,
                                         run_ge=run_ge, now=now, previous=previous)
    if extracted_rows is not None and extracted_rows != result.rows_in:
        from core.errors import ContractViolation, Reason

        raise ContractViolation(f"rows lost: the snapshot reports {extracted_rows} rows, the contract saw "
                                f"{result.rows_in}", reason=Reason.CONTRACT,
                                details={"extracted_rows": extracted_rows, "rows_in": result.rows_in})
    profile = dataclasses.replace(result.profile, source_key=key, snapshot_digest=snapshot_digest)
    result = dataclasses.replace(result, profile=profile)
    qpath = write_quarantine(result, out_dir)
    context = {"source": source, "mapping": mapping, "snapshot": snapshot_digest,
               "quarantine file": str(qpath) if qpath else "none (nothing quarantined)",
               "previous window": previous.describe() if previous else "none (first run for this source and mapping)"}
    markdown = render_markdown(result, settings, context)
    report = write_report(result, out_dir, markdown)
    profile_path = write_profile(profile, profiles_dir) if record_profile and result.gate_passed else None
    logger.info("contract report %s (%s)", report, "passed" if result.gate_passed else "FAILED")
    return ContractOutcome(result, qpath, report, markdown, profile_path)
