"""`rankloop demo` and `rankloop train`: run the weekly retrain in this process."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()

HOME_OPTION = typer.Option(None, "--home", help="Data home (default: $RANKLOOP_HOME or ./.rankloop).")


def _settings(home: Path | None):
    from rankloop.settings import Settings, apply_environment

    if home is not None:
        os.environ["RANKLOOP_HOME"] = str(home)
    settings = Settings()
    apply_environment(settings)
    return settings


def demo(home: Path | None = HOME_OPTION) -> None:
    """Simulate interactions into <home>/interactions.db (once), then retrain on the latest complete week."""
    from rankloop.demo import ensure_demo_source

    settings = _settings(home)
    began = time.perf_counter()
    with console.status("simulating the demo source (first run only)"):
        meta = ensure_demo_source(settings)
    console.print(f"demo source: {settings.demo_db} ({meta['rows']:,} interactions, {meta['start'][:10]} .. {meta['end'][:10]})")
    summary = _run(window_end=date.fromisoformat(meta["end"][:10]))
    _print_summary(summary, time.perf_counter() - began)
    if summary.get("status") == "failed":
        raise typer.Exit(1)


def train(
    home: Path | None = HOME_OPTION,
    source: str | None = typer.Option(None, "--source", help="Source URI (default: the demo database)."),
    mapping: str | None = typer.Option(None, "--mapping", help="Mapping name or file (default: rankloop)."),
    end: str | None = typer.Option(None, "--end", help="Window end date YYYY-MM-DD (default: last Monday)."),
    tables: bool = typer.Option(True, "--tables/--no-tables", help="Also refit the bandit and Q tables."),
    force: bool = typer.Option(False, "--force", help="Retrain even if this window already completed."),
) -> None:
    """Run one weekly retrain against the configured source and window."""
    _settings(home)
    began = time.perf_counter()
    window_end = _parse_date(end, "--end") if end else None
    summary = _run(window_end=window_end, source_uri=source, mapping=mapping, refit_tables=tables, force=force)
    _print_summary(summary, time.perf_counter() - began)
    if summary.get("status") == "failed":
        raise typer.Exit(1)


def backfill(
    start: str = typer.Option(..., "--from", help="First date (YYYY-MM-DD); the first Monday on or after it is the first window end."),
    stop: str = typer.Option(..., "--to", help="Last date (YYYY-MM-DD); the last Monday on or before it is the last window end."),
    home: Path | None = HOME_OPTION,
    source: str | None = typer.Option(None, "--source", help="Source URI (default: the configured one)."),
    mapping: str | None = typer.Option(None, "--mapping", help="Mapping name or file."),
    tables: bool = typer.Option(True, "--tables/--no-tables", help="Also refit the bandit and Q tables."),
    force: bool = typer.Option(False, "--force", help="Retrain windows that already completed."),
) -> None:
    """Run the weekly windows between two dates in order; windows that already completed are not retrained."""
    from rankloop.ops import weekly_ends

    _settings(home)
    try:
        ends = weekly_ends(_parse_date(start, "--from"), _parse_date(stop, "--to"))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if not ends:
        console.print(f"no Monday between {start} and {stop}: nothing to run")
        raise typer.Exit(1)
    console.print(f"backfill: {len(ends)} weekly window(s) ending {', '.join(map(str, ends))}")
    for end in ends:
        began = time.perf_counter()
        summary = _run(window_end=end, source_uri=source, mapping=mapping, refit_tables=tables, force=force)
        _print_summary(summary, time.perf_counter() - began)
        if summary.get("status") == "failed":
            raise typer.Exit(1)


def _parse_date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as e:
        raise typer.BadParameter(f"{option} expects a date like 2026-11-16, got {text!r}") from e


def _run(**parameters: Any) -> dict[str, Any]:
    from flows.weekly import weekly_retrain

    return weekly_retrain(**parameters)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _print_summary(summary: dict[str, Any], seconds: float) -> None:
    title = f"weekly retrain {summary.get('window_end', '')[:10]}"
    if summary.get("reused_run"):
        title += " (already completed: earlier results, nothing retrained; --force retrains)"
    table = Table(title=title, show_header=False)
    rows = [
        ("rows extracted", summary.get("rows_in")),
        ("rows quarantined", summary.get("rows_quarantined")),
        ("snapshot", f"{summary.get('snapshot_digest', '')[:12]} ({'reused' if summary.get('snapshot_reused') else 'new'})"),
        ("impressions", summary.get("impressions")),
        ("ranker ndcg@5", summary.get("ndcg_at_5")),
        ("ranker ndcg@10", summary.get("ndcg_at_10")),
        ("popularity ndcg@10", summary.get("popularity_ndcg_at_10")),
        ("similarity ndcg@10", summary.get("similarity_ndcg_at_10")),
        ("champion ndcg@10 (same test week)", summary.get("champion_ndcg_at_10")),
        ("new version", summary.get("version")),
        ("gate", f"{summary.get('verdict')}: {'; '.join(summary.get('reasons', []))}"),
        ("champion before -> after", f"{_fmt(summary.get('champion_before'))} -> {_fmt(summary.get('champion_after'))}"),
    ]
    for kind, info in (summary.get("tables") or {}).items():
        rows.append((f"{kind} table", f"v{info.get('version')} {info.get('verdict')}: {info.get('headline', '')}"))
    rows.append(("MLflow run", summary.get("run_id")))
    rows.append(("took", f"{seconds:.1f} s"))
    for key, value in rows:
        table.add_row(key, _fmt(value))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("train")(train)
    app.command("backfill")(backfill)
