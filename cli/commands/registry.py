"""On-call commands: ``models``, ``promote``, ``rollback``, ``history``.

Each heals what a crash left behind first (``registry.recover``) and fails with one line
``error (<reason>): <what is wrong> - <what to do>`` and the reason's exit code. Against a tracking
server that is down they fail in seconds: a ``/health`` probe first, then MLflow's HTTP retries
bounded for the command (``registry.reach.BOUNDED_REQUESTS``). ``rollback --offline`` works
without the registry at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from cli.commands.common import HOME_OPTION, JSON_OPTION
from core.errors import Reason, RegistryError

KIND_HELP = "Model kind: ranker, bandit, linucb or qtable."
PROBE_TIMEOUT_S = 5.0
#: A read command heals a kind only if its lock is free within this time (a busy lock means an
#: operation is under way: its pending entry is not debris).
HEAL_LOCK_S = 2.0
#: The metrics ``models`` shows, with the short labels that keep its table within 80 columns.
KEY_METRICS = {
    "ndcg_at_10": "ndcg@10", "popularity_ndcg_at_10": "popularity", "similarity_ndcg_at_10": "similarity",
    "ope_snips": "snips", "ope_snips_low": "snips low", "ope_pdwis": "pdwis", "ope_pdwis_low": "pdwis low",
    "ope_ess": "ess", "average_reward": "avg reward",
}


def _kind(kind: str) -> str:
    from registry.manifest import KINDS, check_kind

    try:
        return check_kind(kind)
    except ValueError as e:
        raise RegistryError(str(e), reason=Reason.INVALID_INPUT, hint=f"KIND is one of {', '.join(KINDS)}") from None


def _version(kind: str, text: str, what: str) -> int:
    from registry.store import check_version

    try:
        number = int(text)
    except ValueError:
        raise RegistryError(
            f"{what} must be a version number, got {text!r}",
            reason=Reason.INVALID_INPUT,
            hint=f"`rankloop models {kind}` lists the versions",
        ) from None
    return check_version(kind, number)


def _reason(reason: str) -> str:
    if not reason.strip():
        raise RegistryError("--reason is empty", reason=Reason.INVALID_INPUT,
                            hint="say why (it is recorded in the ledger)")
    return reason


def _settings(home: Path | None) -> Any:
    from cli.commands.common import settings_for

    return settings_for(home, write=False)


@contextmanager
def registry_session(home: Path | None, kinds: tuple[str, ...] = ()) -> Iterator[tuple[Any, Any]]:
    """Settings and a client for one command: probed, with bounded retries, after healing ``kinds``."""
    from registry.reach import bounded_requests, is_empty_sqlite, probe
    from registry.recover import recover
    from registry.store import make_client

    settings = _settings(home)
    with bounded_requests():
        if not is_empty_sqlite(settings.tracking_uri):
            probe(settings.tracking_uri, PROBE_TIMEOUT_S)
        client = make_client(settings)
        recover(settings, client=client, kinds=kinds, lock_timeout_s=HEAL_LOCK_S)
        yield settings, client


def _console() -> Console:
    return Console()  # created per command: it reads COLUMNS when it is made


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _version_row(info: Any) -> dict[str, Any]:
    from registry.store import TAG_MANIFEST_SHA, TAG_UNUSABLE

    metrics = {
        k.removeprefix("rankloop.metric."): _number(v)
        for k, v in info.tags.items()
        if k.startswith("rankloop.metric.")
    }
    return {
        "kind": info.kind,
        "version": info.version,
        "aliases": list(info.aliases),
        "metrics": metrics,
        "window": info.tags.get("rankloop.window"),
        "created": datetime.fromtimestamp(info.created_ms / 1000, UTC).isoformat(timespec="seconds"),
        "has_manifest": TAG_MANIFEST_SHA in info.tags,
        "unusable": info.tags.get(TAG_UNUSABLE),
    }


def models(
    kind: str | None = typer.Argument(None, metavar="[KIND]", help=KIND_HELP + " Default: all."),
    show_all: bool = typer.Option(False, "--all", help="Also list versions marked unusable."),
    home: Path | None = HOME_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List registered versions with their aliases, key metrics, data window and creation date."""
    from registry.manifest import KINDS
    from registry.store import list_versions

    kinds = (_kind(kind),) if kind else KINDS
    with registry_session(home, kinds) as (_, client):
        rows = [_version_row(v) for k in kinds for v in list_versions(client, k)]
    rows = [r for r in rows if show_all or not r["unusable"]]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _console().print(_models_table(rows))


def _models_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="registered versions", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for column in ("kind", "ver", "aliases", "created", "window (UTC)"):
        table.add_column(column, no_wrap=True)
    table.add_column("key metrics")
    for r in rows:
        metrics = "\n".join(f"{label} {_short(r['metrics'][k])}" for k, label in KEY_METRICS.items() if k in r["metrics"])
        window = "..".join(part[:10] for part in (r["window"] or "").split(".."))
        aliases = "\n".join(r["aliases"]) or ("unusable" if r["unusable"] else "")
        table.add_row(r["kind"], str(r["version"]), aliases, r["created"][:10], window, metrics)
    return table


def _short(value: float | str) -> str:
    return f"{value:.4g}" if isinstance(value, float) else value


def promote(
    kind: str = typer.Argument(..., metavar="KIND", help=KIND_HELP),
    version: str = typer.Argument(..., metavar="VERSION", help="Version to make champion."),
    reason: str = typer.Option(..., "--reason", metavar="TEXT", help="Why (recorded in the ledger)."),
    home: Path | None = HOME_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Make VERSION the champion by hand: skips the gate (recorded as forced), still verifies checksums."""
    from registry.ledger import default_actor
    from registry.promote import promote as do_promote

    kind = _kind(kind)
    number, reason = _version(kind, version, "VERSION"), _reason(reason)
    with registry_session(home) as (settings, client):
        result = do_promote(kind, number, decision=None, actor=default_actor(), reason=reason, forced=True,
                            client=client, settings=settings)
    if as_json:
        typer.echo(json.dumps(_move_json(result)))
        return
    _console().print(
        f"{kind} version {result.version} is champion (previous: {result.previous_champion}); forced, by hand",
        highlight=False,
    )


def _move_json(result: Any) -> dict[str, Any]:
    return {"kind": result.kind, "action": result.action, "version": result.version,
            "previous": result.previous_champion, "ledger_entry": result.entry_id, "offline": False}


def rollback(
    kind: str = typer.Argument(..., metavar="KIND", help=KIND_HELP),
    to: str | None = typer.Option(
        None, "--to", metavar="VERSION", help="Version to return to. Default: the one holding 'previous'."
    ),
    reason: str = typer.Option(..., "--reason", metavar="TEXT", help="Why (recorded in the ledger)."),
    offline: bool = typer.Option(
        False, "--offline",
        help="The registry is down: make this host's loaders serve the previous verified cached version at "
        "their next refresh; the registry is updated at the next registry operation that reaches it.",
    ),
    home: Path | None = HOME_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Move 'champion' back (to 'previous' or --to); the current champion becomes 'previous'."""
    from registry.ledger import default_actor

    kind, reason = _kind(kind), _reason(reason)
    target = None if to is None else _version(kind, to, "--to")
    if offline:
        _rollback_offline(kind, target, reason, home, as_json)
        return
    from registry.promote import rollback as do_rollback

    with registry_session(home) as (settings, client):
        result = do_rollback(kind, to=target, actor=default_actor(), reason=reason, client=client, settings=settings)
    if as_json:
        typer.echo(json.dumps(_move_json(result)))
        return
    _console().print(
        f"rolled back {kind}: version {result.version} is champion, {result.previous_champion} is previous",
        highlight=False,
    )


def _rollback_offline(kind: str, target: int | None, reason: str, home: Path | None, as_json: bool) -> None:
    from registry.ledger import default_actor
    from registry.offline import pin_path, rollback_offline

    settings = _settings(home)
    pin = rollback_offline(kind, to=target, actor=default_actor(), reason=reason, settings=settings)
    if as_json:
        typer.echo(json.dumps({"kind": kind, "action": "rollback", "version": pin.version,
                               "previous": pin.previous, "offline": True,
                               "pin": str(pin_path(settings, kind))}))
        return
    _console().print(
        f"{kind} version {pin.version} pinned on this host (was {pin.previous}): its loaders serve it at their "
        f"next refresh(); the registry gets this rollback at the next registry operation that reaches it",
        highlight=False,
    )


def history(
    kind: str = typer.Argument(..., metavar="KIND", help=KIND_HELP),
    include_aborted: bool = typer.Option(False, "--all", help="Also show operations that were undone."),
    home: Path | None = HOME_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Every alias move of KIND, oldest first: when, who, from, to, reason, forced."""
    from registry.ledger import history as ledger_history

    kind = _kind(kind)
    with registry_session(home, (kind,)) as (_, client):
        entries = ledger_history(kind, client=client, include_aborted=include_aborted)
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    console = _console()
    if not entries:
        console.print(f"no alias moves recorded for {kind}")
    for operation in _operations(entries):
        first = operation[0]
        flags = ", ".join(f for f in ("forced" if first.forced else "", first.status) if f)
        moves = ", ".join(f"{e.alias} {_v(e.from_version)} -> {_v(e.to_version)}" for e in operation)
        console.print(Text.assemble((f"{first.when[:16].replace('T', ' ')} UTC", "bold"),
                                    f"  {first.action} by {first.actor} ({flags})"))
        console.print(Padding(Text(moves), (0, 0, 0, 2)))
        console.print(Padding(Text(f"reason: {first.reason}"), (0, 0, 0, 2)))


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
