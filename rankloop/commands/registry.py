"""On-call commands: ``models``, ``promote``, ``rollback``, ``history``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from rankloop.errors import Reason, RegistryError

console = Console()
errors = Console(stderr=True)

EXIT_CODES = {
    Reason.NOT_FOUND: 3,
    Reason.CHECKSUM: 4,
    Reason.GATE: 5,
    Reason.REFUSED: 6,
    Reason.UNREACHABLE: 7,
    Reason.BUSY: 8,
}
KIND_HELP = "Model kind: ranker, bandit, linucb or qtable."


def _client() -> Any:
    from rankloop.settings import Settings
    from registry.store import make_client

    return make_client(Settings())


def _fail(error: Exception) -> typer.Exit:
    code = EXIT_CODES.get(error.reason, 1) if isinstance(error, RegistryError) else 2
    errors.print(f"[bold red]refused:[/] {error}", markup=True, highlight=False)
    return typer.Exit(code)


def _version_row(info: Any) -> dict[str, Any]:
    metrics = {
        k.removeprefix("rankloop.metric."): v
        for k, v in info.tags.items()
        if k.startswith("rankloop.metric.")
    }
    created = datetime.fromtimestamp(info.created_ms / 1000, UTC).isoformat(timespec="seconds")
    return {
        "kind": info.kind,
        "version": info.version,
        "aliases": list(info.aliases),
        "metrics": metrics,
        "window": info.tags.get("rankloop.window"),
        "created": created,
        "has_manifest": "rankloop.manifest_sha256" in info.tags,
    }


KEY_METRICS = frozenset({
    "ndcg_at_10", "popularity_ndcg_at_10", "similarity_ndcg_at_10",
    "ope_snips", "ope_snips_low", "ope_pdwis", "ope_pdwis_low", "ope_ess", "average_reward",
})


def _short(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def models(
    kind: str | None = typer.Argument(None, help=KIND_HELP + " Default: all."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List registered versions with their aliases, key metrics, data window and creation time."""
    from registry.manifest import KINDS, check_kind
    from registry.store import list_versions

    try:
        kinds = [check_kind(kind)] if kind else list(KINDS)
        client = _client()
        rows = [_version_row(v) for k in kinds for v in list_versions(client, k)]
    except (RegistryError, ValueError) as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="registered versions", box=box.SIMPLE_HEAD)
    for column in ("kind", "version", "aliases", "created (UTC)"):
        table.add_column(column, no_wrap=True)
    for column in ("window", "metrics"):
        table.add_column(column, overflow="fold")
    for r in rows:
        metrics = ", ".join(f"{k}={_short(v)}" for k, v in sorted(r["metrics"].items()) if k in KEY_METRICS)
        created = r["created"][:16].replace("T", " ")
        window = "..".join(part[:10] for part in (r["window"] or "").split(".."))
        table.add_row(
            r["kind"], str(r["version"]), ", ".join(r["aliases"]), created, window, metrics
        )
    console.print(table)


def promote(
    kind: str = typer.Argument(..., help=KIND_HELP),
    version: int = typer.Argument(..., help="Version to make champion."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the ledger)."),
) -> None:
    """Make VERSION the champion by hand: skips the gate (recorded as forced), still verifies checksums."""
    from registry.ledger import default_actor
    from registry.promote import promote as do_promote

    try:
        result = do_promote(
            kind, version, decision=None, actor=default_actor(), reason=reason, forced=True, client=_client()
        )
    except (RegistryError, ValueError) as e:
        raise _fail(e) from e
    console.print(
        f"{kind} version {result.version} is champion (previous: {result.previous_champion}); forced, by hand"
    )


def rollback(
    kind: str = typer.Argument(..., help=KIND_HELP),
    to: int | None = typer.Option(
        None, "--to", help="Version to return to. Default: the one holding 'previous'."
    ),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the ledger)."),
) -> None:
    """Move 'champion' back (to 'previous' or --to); the current champion becomes 'previous'."""
    from registry.ledger import default_actor
    from registry.promote import rollback as do_rollback

    try:
        result = do_rollback(kind, to=to, actor=default_actor(), reason=reason, client=_client())
    except (RegistryError, ValueError) as e:
        raise _fail(e) from e
    console.print(
        f"rolled back {kind}: version {result.version} is champion, {result.previous_champion} is previous"
    )


def history(
    kind: str = typer.Argument(..., help=KIND_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    include_aborted: bool = typer.Option(False, "--all", help="Also show operations that were undone."),
) -> None:
    """Every alias move of KIND, oldest first: when, who, from, to, reason, forced."""
    from registry.ledger import history as ledger_history

    try:
        entries = ledger_history(kind, client=_client(), include_aborted=include_aborted)
    except (RegistryError, ValueError) as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        console.print(f"no alias moves recorded for {kind}")
    for operation in _operations(entries):
        first = operation[0]
        flags = ", ".join(f for f in ("forced" if first.forced else "", first.status) if f)
        moves = ", ".join(f"{e.alias} {_v(e.from_version)} -> {_v(e.to_version)}" for e in operation)
        console.print(
            f"[bold]{first.when[:16].replace('T', ' ')} UTC[/]  {first.action} by {first.actor} ({flags})"
        )
        console.print(f"  {moves}", highlight=False)
        console.print(f"  reason: {first.reason}", highlight=False, markup=False)


def _v(version: int | None) -> str:
    return "none" if version is None else str(version)


def _operations(entries: list[Any]) -> list[list[Any]]:
    """Group the alias moves of one promotion/rollback, keeping the ledger's order."""
    groups: dict[str, list[Any]] = {}
    for entry in entries:
        groups.setdefault(entry.operation_id, []).append(entry)
    return list(groups.values())


def register(app: typer.Typer) -> None:
    """Add the registry commands to the CLI."""
    app.command("models")(models)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("history")(history)
