"""``rankloop ab`` (the A/B report of live arms) and ``rankloop guard`` (the guardrail, by hand)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from cli.commands.common import (
    DATE_HELP,
    HOME_OPTION,
    JSON_OPTION,
    echo_json,
    parse_window,
    settings_for,
    utc_midnight,
)

console = Console(highlight=False, soft_wrap=True)


def ab(
    start: str = typer.Option(..., "--start", "--from", metavar="DATE", help=f"First day, {DATE_HELP}."),
    end: str = typer.Option(..., "--end", "--to", metavar="DATE", help=f"Exclusive last day, {DATE_HELP}."),
    home: Path | None = HOME_OPTION,
    log: bool = typer.Option(False, "--log", help="Also write the report to MLflow (experiment <experiment>-ab)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Per policy_version and per kind: requests, impressions, click and engagement rates with 95% intervals,
    and each champion against its previous version on their concurrent traffic (Welch t-test)."""
    from rankloop.ab import ab_report, lines, log_report, read_requests

    first, last = parse_window(start, end)
    settings = settings_for(home, write=False)
    begin, stop = utc_midnight(first), utc_midnight(last)
    report = ab_report(read_requests(settings, begin, stop))
    report |= {"start": begin.isoformat(), "end": stop.isoformat()}
    if log:
        report["mlflow_run_id"] = log_report(settings, report, begin, stop)
    if as_json:
        echo_json(report)
        return
    for line in lines(report):
        console.print(escape(line), soft_wrap=True)


def guard(
    kind: str | None = typer.Option(None, "--kind", metavar="KIND", help="Only this kind (default: all)."),
    home: Path | None = HOME_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Judge, but revert nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Compare each kind's champion with its previous version on their traffic since the promotion;
    revert the champion when it is worse beyond the margin (mSPRT, valid under daily looks)."""
    from cli.commands.registry import _kind
    from rankloop.guard import KINDS, run_guard, verdict_line

    kinds = (_kind(kind),) if kind else KINDS
    settings = settings_for(home, write=False)
    verdicts = run_guard(settings, kinds, dry_run=dry_run)
    if as_json:
        echo_json([v.to_dict() for v in verdicts])
        return
    for v in verdicts:
        console.print(escape(verdict_line(v)), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("ab")(ab)
    app.command("guard")(guard)
