"""``rankloop extract``: snapshot a window of interactions from a source."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.markup import escape

from rankloop.errors import SourceError
from rankloop.settings import Settings


def _parse_date(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise typer.BadParameter(f"{option} must be an ISO date or datetime (e.g. 2025-01-06), got {text!r}") from e
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def extract(
    start: str = typer.Option(..., "--start", help="Inclusive window start (ISO date/datetime, UTC if naive)."),
    end: str = typer.Option(..., "--end", help="Exclusive window end (ISO date/datetime, UTC if naive)."),
    source: str | None = typer.Option(None, "--source", help="Source URI. Default: the configured source."),
    mapping: str | None = typer.Option(None, "--mapping", help="Mapping name or file. Default: the configured one."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Extract [start, end) into an immutable Parquet snapshot (reused when the data is unchanged)."""
    from sources import extract_snapshot, redact

    settings = Settings()
    console = Console()
    uri = source or settings.source_uri
    try:
        snap = extract_snapshot(
            uri, mapping or settings.source.mapping, _parse_date(start, "--start"), _parse_date(end, "--end"),
            settings.snapshot_dir, batch_rows=settings.source.batch_rows,
            retries=settings.source.connect_retries, retry_delay_s=settings.source.retry_delay_s,
        )
    except SourceError as e:
        Console(stderr=True).print(f"[red]extract failed ({e.reason}):[/red] {escape(str(e))}", highlight=False,
                                   soft_wrap=True)
        raise typer.Exit(code=2) from None
    if as_json:
        payload = {"rows": snap.rows, "path": str(snap.path), "digest": snap.digest, "reused": snap.reused,
                   "min_ts": snap.min_ts.isoformat() if snap.min_ts else None,
                   "max_ts": snap.max_ts.isoformat() if snap.max_ts else None,
                   "source": redact(uri), "previous": snap.previous}
        typer.echo(json.dumps(payload))
        return
    state = "reused" if snap.reused else "written"
    console.print(f"snapshot [bold]{snap.digest[:12]}[/bold] {state}: {snap.rows:,} rows "
                  f"({snap.min_ts} .. {snap.max_ts}) from {redact(uri)}")
    console.print(f"  {snap.path}")
    if snap.previous and snap.previous.get("changed"):
        console.print(f"  data changed since {snap.previous['digest'][:12]}: "
                      f"rows {snap.previous['rows_before']:,} -> {snap.previous['rows_after']:,}")


def register(app: typer.Typer) -> None:
    """Add ``extract`` to the CLI."""
    app.command("extract")(extract)
