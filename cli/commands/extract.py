"""``rankloop extract``: snapshot a window of interactions from a source."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from cli.commands.common import (
    DATE_HELP,
    HOME_OPTION,
    JSON_OPTION,
    echo_json,
    parse_window,
    settings_for,
    utc_midnight,
)

START_OPTION = typer.Option(..., "--start", metavar="DATE", help=f"Inclusive window start, {DATE_HELP}.")
END_OPTION = typer.Option(..., "--end", metavar="DATE", help=f"Exclusive window end, {DATE_HELP}.")
SOURCE_OPTION = typer.Option(None, "--source", metavar="URI", help="Source URI (default: the configured source).")
MAPPING_OPTION = typer.Option(None, "--mapping", metavar="NAME", help="Mapping name or file (default: the configured one).")


def extract(
    start: str = START_OPTION,
    end: str = END_OPTION,
    source: str | None = SOURCE_OPTION,
    mapping: str | None = MAPPING_OPTION,
    home: Path | None = HOME_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Extract [start, end) into an immutable Parquet snapshot (reused when the data is unchanged)."""
    from rankloop import stages

    first, last = parse_window(start, end)
    settings = with_source(settings_for(home), source, mapping)
    extracted = stages.extract(settings, utc_midnight(first), utc_midnight(last), catalog=False)
    payload = {"rows": extracted.rows, "path": str(extracted.snapshot_path), "digest": extracted.digest,
               "reused": extracted.reused, "source": extracted.source, "mapping": settings.source.mapping,
               "window": [first.isoformat(), last.isoformat()], "previous": extracted.changed}
    if as_json:
        echo_json(payload)
        return
    console = Console(highlight=False, soft_wrap=True)
    state = "reused" if extracted.reused else "written"
    console.print(f"snapshot {extracted.digest[:12]} {state}: {extracted.rows:,} rows of [{first}, {last}) "
                  f"from {extracted.source}", soft_wrap=True)
    console.print(f"  {extracted.snapshot_path}", soft_wrap=True)
    previous = extracted.changed or {}
    if previous.get("changed"):
        console.print(f"  data changed since {previous['digest'][:12]}: "
                      f"rows {previous['rows_before']:,} -> {previous['rows_after']:,}")


def with_source(settings, source: str | None, mapping: str | None):  # noqa: ANN001, ANN201 - Settings in, Settings out
    """``settings`` with ``--source``/``--mapping`` applied (the URI is checked: scheme, control characters)."""
    from sources import load_mapping
    from sources.uri import parse_uri

    updates = {}
    if source is not None:
        parse_uri(source)
        updates["uri"] = source
    if mapping is not None:
        load_mapping(mapping)
        updates["mapping"] = mapping
    if not updates:
        return settings
    return settings.model_copy(update={"source": settings.source.model_copy(update=updates)})


def register(app: typer.Typer) -> None:
    """Add ``extract`` to the CLI."""
    app.command("extract")(extract)
