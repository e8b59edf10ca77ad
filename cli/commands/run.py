"""`rankloop demo`, `rankloop train` and `rankloop backfill`: run the weekly retrain in this process."""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

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
)

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

SOURCE_OPTION = typer.Option(None, "--source", metavar="URI", help="Source URI (default: the configured source, "
                             "else the demo database). A password in it is passed to the run through the "
                             "environment, never as a stored parameter.")
MAPPING_OPTION = typer.Option(None, "--mapping", metavar="NAME", help="Mapping name or file (default: rankloop).")
TABLES_OPTION = typer.Option(True, "--tables/--no-tables", help="Also refit the bandit, LinUCB and Q tables.")


def demo(
    home: Path | None = HOME_OPTION,
    serve_days: int | None = typer.Option(None, "--serve-days", metavar="N", min=1, help="Then serve N more days "
                                          "of the demo source with the current champions (rankloop.serving_sim)."),
    bad_release: bool = typer.Option(False, "--bad-release", help="First register and force-promote a ranker "
                                     "trained on shuffled labels (a drill, recorded in the ledger)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Simulate interactions into <home>/interactions.db (once), then retrain on the latest complete week.

    With --serve-days, serve more days with the registry's versions instead (retraining first only when
    nothing is registered yet); --bad-release first force-promotes a deliberately worse ranker."""
    from rankloop.demo import ensure_demo_source

    settings = settings_for(home, export=True)
    began = time.perf_counter()
    if not settings.demo_db.exists() and not as_json:
        errors.print("simulating the demo source (first run only) ...")
    meta = ensure_demo_source(settings)
    if not as_json:
        errors.print(f"demo source {settings.demo_db}: {meta['rows']:,} interactions, "
                     f"{meta['start'][:10]} .. {meta['end'][:10]}", soft_wrap=True)
    if serve_days is None and not bad_release:
        summary = _run(window_end=date.fromisoformat(meta["end"][:10]))
        _finish(summary, time.perf_counter() - began, as_json)
        return
    _serve_demo(settings, meta, serve_days, bad_release, as_json, began)


def _serve_demo(settings: Any, meta: dict[str, Any], days: int | None, bad: bool, as_json: bool, began: float) -> None:
    from rankloop import demo as drill
    from rankloop.serving_sim import serve
    from rankloop.stages import current_champion

    out: dict[str, Any] = {}
    if current_champion("ranker", settings) is None:
        out["retrain"] = _run(window_end=date.fromisoformat(meta["end"][:10]))
    if bad:
        out["bad_release"] = drill.bad_release(settings)
        if not as_json:
            console.print(f"drill    ranker v{out['bad_release']} (trained on shuffled labels) force-promoted "
                          f"by actor '{drill.DRILL_ACTOR}' (`rankloop history ranker`)")
    if days:
        out["served"] = served = serve(settings, days)
        if not as_json:
            mix = ", ".join(f"{tag} {n:,}" for tag, n in sorted(served["requests"].items()))
            console.print(escape(f"served   {served['start'][:10]} .. {served['end'][:10]} ({days} day(s)): "
                                 f"{served['rows']:,} rows; requests per policy_version: {mix}"), soft_wrap=True)
            console.print(f"next     rankloop guard --dry-run; rankloop ab --start {served['start'][:10]} "
                          f"--end {served['end'][:10]}")
    if as_json:
        echo_json(out | {"seconds": round(time.perf_counter() - began, 1)})


def train(
    home: Path | None = HOME_OPTION,
    source: str | None = SOURCE_OPTION,
    mapping: str | None = MAPPING_OPTION,
    start: str | None = typer.Option(None, "--start", metavar="DATE", help=f"Window start, {DATE_HELP} "
                                     "(default: --end minus window.history_days)."),
    end: str | None = typer.Option(None, "--end", metavar="DATE", help=f"Exclusive window end, {DATE_HELP}; "
                                   "its last week is the test week (default: the most recent Monday)."),
    tables: bool = TABLES_OPTION,
    force: bool = typer.Option(False, "--force", help="Retrain even if this window already completed."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run one weekly retrain against the configured source and window."""
    first, last = parse_window(start, end, need_start=False)
    _window_length(first, last)
    _check_mapping(settings_for(home, export=True), mapping)
    began = time.perf_counter()
    summary = _run(window_end=last, mapping=mapping, refit_tables=tables, force=force, **_source_parameter(source))
    _finish(summary, time.perf_counter() - began, as_json)


def backfill(
    start: str = typer.Option(..., "--start", "--from", metavar="DATE",
                              help=f"First date, {DATE_HELP}: the first Monday on or after it ends the first window."),
    end: str = typer.Option(..., "--end", "--to", metavar="DATE",
                            help=f"Last date, {DATE_HELP}: the last Monday on or before it ends the last window."),
    home: Path | None = HOME_OPTION,
    source: str | None = SOURCE_OPTION,
    mapping: str | None = MAPPING_OPTION,
    tables: bool = TABLES_OPTION,
    force: bool = typer.Option(False, "--force", help="Retrain windows that already completed."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the weekly windows between two dates in order; windows that already completed are not retrained."""
    from rankloop.ops import weekly_ends

    first, last = parse_window(start, end)
    _check_mapping(settings_for(home, export=True), mapping)
    ends = weekly_ends(first, last)
    if not ends:
        from core.errors import ConfigError, Reason

        raise ConfigError(f"no Monday between {first} and {last}: no weekly window ends there",
                          reason=Reason.INVALID_INPUT, hint="widen --start/--end to include a Monday")
    if not as_json:
        errors.print(f"backfill: {len(ends)} weekly window(s) ending {', '.join(map(str, ends))}")
    parameters = _source_parameter(source)
    summaries = []
    for window_end in ends:
        began = time.perf_counter()
        summary = _run(window_end=window_end, mapping=mapping, refit_tables=tables, force=force, **parameters)
        summaries.append(summary)
        if not as_json:
            _print_summary(summary, time.perf_counter() - began)
    if as_json:
        echo_json(summaries)


def _check_mapping(settings: Any, mapping: str | None) -> None:
    """Fail before the run starts when the mapping cannot be loaded (unknown name, invalid file)."""
    from sources import load_mapping

    load_mapping(mapping or settings.source.mapping)


def _window_length(first: date | None, last: date | None) -> None:
    """``--start`` sets the window's history (the end defaults to the most recent Monday)."""
    if first is None:
        return
    from core.errors import ConfigError, Reason
    from core.settings import last_monday

    end = last or last_monday(datetime.now(UTC)).date()
    days = (end - first).days
    if days < 14:
        raise ConfigError(f"the window {first} .. {end} is {days} days; a weekly retrain needs at least 14",
                          reason=Reason.INVALID_INPUT, hint="give an earlier --start (or omit it: 35 days)")
    os.environ["RANKLOOP_WINDOW__HISTORY_DAYS"] = str(days)


def _source_parameter(source: str | None) -> dict[str, Any]:
    """The flow's source parameter: never with a password (Prefect stores parameters). A password
    goes to this process's environment, where the run (in this process) reads it."""
    if source is None:
        return {}
    from sources.uri import parse_uri, redact

    parse_uri(source)  # refuses unknown schemes and control characters with one clear error
    shown = redact(source)
    if shown != source:
        os.environ["RANKLOOP_SOURCE__URI"] = source
    return {"source_uri": shown}


def _run(**parameters: Any) -> dict[str, Any]:
    from flows.weekly import weekly_retrain

    return weekly_retrain(**parameters)


def _finish(summary: dict[str, Any], seconds: float, as_json: bool) -> None:
    if as_json:
        echo_json(summary | {"seconds": round(seconds, 1)})
    else:
        _print_summary(summary, seconds)
    if summary.get("status") == "failed":
        raise typer.Exit(1)


def _f(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def summary_lines(summary: dict[str, Any], seconds: float) -> list[str]:
    """The short block ``train``/``demo`` print (the README shows it)."""
    if summary.get("status") == "skipped":
        return [f"skipped: {summary.get('reason')}"]
    window = f"{str(summary.get('window_start', ''))[:10]} .. {str(summary.get('window_end', ''))[:10]}"
    lines = [f"window   {window}, snapshot {str(summary.get('snapshot_digest', ''))[:12]}"
             f" ({'reused' if summary.get('snapshot_reused') or summary.get('reused_run') else 'new'})"]
    if summary.get("reused_run"):
        lines.append("         already completed: earlier results, nothing retrained (--force retrains)")
    lines += [
        f"data     {_f(summary.get('rows_in'))} rows, {_f(summary.get('rows_quarantined'))} quarantined, "
        f"{_f(summary.get('impressions'))} impressions, {_f(summary.get('features'))} features",
        f"ranker   NDCG@10 {_f(summary.get('ndcg_at_10'))}, popularity {_f(summary.get('popularity_ndcg_at_10'))}, "
        f"similarity {_f(summary.get('similarity_ndcg_at_10'))}, champion {_f(summary.get('champion_ndcg_at_10'))}",
    ]
    kinds = {"ranker": {"status": summary.get("ranker_status") or ("promoted" if summary.get("promoted") else "held"),
                        "version": summary.get("version"), "reasons": summary.get("reasons") or [],
                        "champion_before": summary.get("champion_before"),
                        "champion_after": summary.get("champion_after"),
                        "champion_now": summary.get("champion_now")},
             **(summary.get("tables") or {})}
    for kind, info in kinds.items():
        lines.append(f"{kind:<8} {_kind_line(info)}")
    lines.append(f"took {seconds:.1f} s, MLflow run {str(summary.get('run_id') or '-')[:12]} "
                 "(`rankloop runs`, `rankloop ui`)")
    return lines


def _kind_line(info: dict[str, Any]) -> str:
    status = info.get("status") or ("promoted" if info.get("promoted") else str(info.get("verdict", "")).lower())
    reasons = "; ".join(info.get("reasons") or [])
    version = info.get("version")
    before, after = info.get("champion_before"), info.get("champion_after")
    if status == "promoted":
        head = f"v{version} promoted (champion {_f(before)} -> {after})"
    elif status == "unchanged":
        head = f"unchanged (champion v{_f(before)})"
    elif status == "skipped":
        head = "skipped"
    else:
        head = f"v{_f(version)} {status} (champion stays {_f(before)})"
    if info.get("champion_now") is not None and info["champion_now"] != after:
        head += f", champion now {_f(info['champion_now'])}"
    return f"{head}: {reasons}" if reasons else head


def _print_summary(summary: dict[str, Any], seconds: float) -> None:
    for line in summary_lines(summary, seconds):
        console.print(escape(line), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("train")(train)
    app.command("backfill")(backfill)
