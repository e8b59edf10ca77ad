"""``rankloop validate``: extract a window and run the interaction contract on it (no training)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from rankloop.commands.extract import _parse_date
from rankloop.errors import ContractViolation, SourceError
from rankloop.settings import Settings


def validate(
    start: str = typer.Option(..., "--start", help="Inclusive window start (ISO date/datetime, UTC if naive)."),
    end: str = typer.Option(..., "--end", help="Exclusive window end (ISO date/datetime, UTC if naive)."),
    source: str | None = typer.Option(None, "--source", help="Source URI. Default: the configured source."),
    mapping: str | None = typer.Option(None, "--mapping", help="Mapping name or file. Default: the configured one."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (also when the batch fails)."),
) -> None:
    """Snapshot [start, end) and validate it: exit 0 when the batch passes the gate, 1 when it fails.

    Quarantined rows and the Markdown report go to <home>/quarantine/<snapshot digest>/. The batch
    checks compare with the latest recorded profile of an earlier window of the same source and
    mapping (weekly runs record them; this command only reads them).
    """
    import pyarrow.parquet as pq

    from data_contracts import validate_snapshot
    from data_contracts.report import describe_failure
    from sources import extract_snapshot, redact

    settings = Settings()
    uri, mapping_name = source or settings.source_uri, mapping or settings.source.mapping
    window = (_parse_date(start, "--start"), _parse_date(end, "--end"))
    try:
        snap = extract_snapshot(uri, mapping_name, *window, settings.snapshot_dir, batch_rows=settings.source.batch_rows,
                                retries=settings.source.connect_retries, retry_delay_s=settings.source.retry_delay_s)
    except SourceError as e:
        Console(stderr=True).print(f"[red]extract failed ({e.reason}):[/red] {escape(str(e))}", highlight=False,
                                   soft_wrap=True)
        raise typer.Exit(code=2) from None
    base = {"source": redact(uri), "mapping": mapping_name, "window": [w.isoformat() for w in window],
            "snapshot_digest": snap.digest}
    try:
        outcome = validate_snapshot(
            pq.read_table(snap.path), window=window, settings=settings.contracts,
            out_dir=settings.quarantine_dir / snap.digest, profiles_dir=settings.home_dir / "contracts" / "profiles",
            source=redact(uri), mapping=mapping_name, snapshot_digest=snap.digest, record_profile=False,
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
        typer.echo(json.dumps(payload, default=str))
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
