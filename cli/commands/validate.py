"""``rankloop validate``: extract a window and run the interaction contract on it (no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from cli.commands.common import (
    HOME_OPTION,
    JSON_OPTION,
    echo_json,
    parse_window,
    settings_for,
    utc_midnight,
)
from cli.commands.extract import END_OPTION, MAPPING_OPTION, SOURCE_OPTION, START_OPTION, with_source
from core.errors import ContractViolation, Reason


def validate(
    start: str = START_OPTION,
    end: str = END_OPTION,
    source: str | None = SOURCE_OPTION,
    mapping: str | None = MAPPING_OPTION,
    home: Path | None = HOME_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Snapshot [start, end) and validate it: exit 0 when the batch passes the gate, 1 when it fails.

    Quarantined rows and the Markdown report go to <home>/quarantine/<snapshot digest>/. The batch
    checks compare with the latest recorded profile of an earlier window of the same source and
    mapping (weekly runs record them; this command only reads them).
    """
    import pyarrow.parquet as pq

    from data_contracts import validate_snapshot
    from data_contracts.report import describe_failure
    from rankloop import stages

    first, last = parse_window(start, end)
    settings = with_source(settings_for(home), source, mapping)
    window = (utc_midnight(first), utc_midnight(last))
    try:
        snap = stages.extract(settings, *window, catalog=False)
    except ContractViolation as e:
        if e.reason is not Reason.EMPTY:
            raise
        _finish({"source": stages.redacted_source(settings), "mapping": settings.source.mapping,
                 "window": [w.isoformat() for w in window], "snapshot_digest": "", "rows": 0, "clean_rows": 0,
                 "quarantined_rows": 0, "passed": False, "reasons": {}, "failures": [f"{e.reason}: {e}"]}, as_json)
        return
    mapping_name = settings.source.mapping
    base = {"source": snap.source, "mapping": mapping_name, "window": [w.isoformat() for w in window],
            "snapshot_digest": snap.digest}
    try:
        outcome = validate_snapshot(
            pq.read_table(snap.snapshot_path), window=window, settings=settings.contracts,
            out_dir=settings.quarantine_dir / snap.digest, profiles_dir=settings.home_dir / "contracts" / "profiles",
            source=snap.source, mapping=mapping_name, snapshot_digest=snap.digest, record_profile=False,
            extracted_rows=snap.rows,
        )
    except ContractViolation as e:  # unusable extract (empty, missing columns): nothing to quarantine
        _finish({**base, "rows": snap.rows, "clean_rows": 0, "quarantined_rows": 0, "passed": False, "reasons": {},
                 "failures": [f"{e.reason}: {e}"]}, as_json)
        return
    result, summary = outcome.result, outcome.summary()
    _finish({**base, "rows": summary["rows_in"], "clean_rows": summary["rows_valid"],
             "quarantined_rows": summary["rows_quarantined"], "passed": result.gate_passed,
             "reasons": summary["reasons"],
             "failures": [describe_failure(r, result, settings.contracts) for r in result.failures],
             "batch_checks": summary["batch_checks"], "suite_version": result.suite_version,
             "report_path": summary["report_path"], "quarantine_path": summary["quarantine_path"]}, as_json)


def _finish(payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(payload)
    else:
        console = Console()
        verdict = "[green]PASSED[/green]" if payload["passed"] else "[red]FAILED[/red]"
        console.print(f"contract {verdict}: {payload['rows']:,} rows, {payload['clean_rows']:,} clean, "
                      f"{payload['quarantined_rows']:,} quarantined ({payload['source']}, snapshot "
                      f"{payload['snapshot_digest'][:12]})")
        for reason, rows in payload["reasons"].items():
            console.print(f"  {escape(reason)}: {rows:,}", highlight=False)
        for failure in payload["failures"]:
            console.print(f"  [red]fail[/red] {escape(failure)}", highlight=False, soft_wrap=True)
        if payload.get("report_path"):
            console.print(f"  report: {payload['report_path']}", highlight=False, soft_wrap=True)
    if not payload["passed"]:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``validate`` to the CLI."""
    app.command("validate")(validate)
