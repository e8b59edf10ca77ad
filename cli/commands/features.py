"""``rankloop features``: list the feature catalogue, or regenerate docs/features.md."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table


def features(
    feature_set: str | None = typer.Option(None, "--set", metavar="NAME", help="Only the features of this feature set."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    write_docs: bool = typer.Option(False, "--write-docs", help="Regenerate docs/features.md and exit."),
) -> None:
    """List the registered features (name, group, grain, when known, dtype, null policy, description)."""
    from features import REGISTRY, get_feature_set
    from features.catalogue import catalogue_rows
    from features.catalogue import write_docs as write

    console = Console()
    if write_docs:
        console.print(f"wrote {write()}")
        return
    try:
        fset = get_feature_set(feature_set) if feature_set else None
    except KeyError as e:
        from core.errors import ConfigError, Reason

        raise ConfigError(str(e.args[0]), reason=Reason.INVALID_INPUT,
                          hint="`rankloop features` lists the features; docs/features.md the sets") from None
    rows = catalogue_rows(fset.features if fset else None)
    if as_json:
        payload = {"set": fset.name if fset else None, "hash": fset.hash if fset else None,
                   "count": len(rows), "features": rows}
        typer.echo(json.dumps(payload))
        return
    table = Table(title=f"{fset.name} ({fset.hash[:12]})" if fset else f"all {len(REGISTRY)} features")
    for column in ("name", "group", "grain", "known", "dtype", "nulls", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``features`` to the CLI."""
    app.command("features")(features)
