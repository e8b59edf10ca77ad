"""Persist quarantined rows: Parquet plus a JSON summary, each written atomically."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import pyarrow.parquet as pq

from core.atomic import atomic_write
from data_contracts.validate import ContractResult


def _window_tag(result: ContractResult) -> str:
    if result.window is None:
        return "nowindow"
    return "_".join(w.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") for w in result.window)


def write_quarantine(result: ContractResult, directory: Path) -> Path | None:
    """Write ``result.quarantined`` to ``<directory>/interactions-<start>_<end>-<suite_version>.parquet``.

    Args:
        result: the outcome of ``validate_interactions``.
        directory: created if missing.

    Returns:
        The Parquet path (a ``.json`` summary sits beside it), or None when nothing was quarantined.
    """
    if not isinstance(result, ContractResult):
        raise TypeError(f"result must be a ContractResult, got {type(result).__name__}")
    if result.quarantined.num_rows == 0:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result.suite_name}-{_window_tag(result)}-{result.suite_version}.parquet"
    atomic_write(path, lambda tmp: pq.write_table(result.quarantined, tmp))
    summary = json.dumps(result.summary(), indent=2, sort_keys=True, default=str)
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(summary + "\n"))
    return path


def write_report(result: ContractResult, directory: Path, markdown: str) -> Path:
    """Write the Markdown report and the summary JSON beside the quarantine file (atomic each).

    Returns:
        ``<directory>/report-<start>_<end>-<suite_version>.md`` (a ``.json`` summary sits beside it).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"report-{_window_tag(result)}-{result.suite_version}.md"
    atomic_write(path, lambda tmp: tmp.write_text(markdown))
    summary = json.dumps(result.summary(), indent=2, sort_keys=True, default=str)
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(summary + "\n"))
    return path
