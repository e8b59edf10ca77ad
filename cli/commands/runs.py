"""`rankloop runs`: the recent weekly runs, as data scientists and on-call compare them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from cli.commands.common import HOME_OPTION, JSON_OPTION, echo_json, settings_for
from core.settings import Settings

console = Console(highlight=False)


def recent_runs(last: int, settings: Settings) -> list[dict[str, Any]]:
    """The ``last`` most recent weekly ranker runs of the configured experiment, newest first."""
    import mlflow

    from core.runtime import ensure_experiment

    experiment_id = ensure_experiment(settings)
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id], filter_string="tags.`rankloop.run_key` != ''",
        order_by=["attributes.start_time DESC"], max_results=last, output_format="list",
    )
    return [_row(run) for run in runs]


def _row(run: Any) -> dict[str, Any]:
    m, t = run.data.metrics, run.data.tags
    ndcg, champ = m.get("ndcg_at_10"), m.get("champion_ndcg_at_10")
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "window_start": t.get("rankloop.window_start"),
        "window_end": t.get("rankloop.window_end"),
        "rows": int(m["rows_in"]) if "rows_in" in m else None,
        "ndcg_at_10": ndcg,
        "popularity_ndcg_at_10": m.get("popularity_ndcg_at_10"),
        "champion_ndcg_at_10": champ,
        "delta_vs_champion": ndcg - champ if ndcg is not None and champ is not None else None,
        "version": int(t["rankloop.version"]) if t.get("rankloop.version", "").isdigit() else None,
        "verdict": t.get("rankloop.verdict"),
        "promoted": t.get("rankloop.promoted") == "true",
    }


def runs(
    last: int = typer.Option(10, "--last", min=1, metavar="N", help="How many recent runs to show."),
    home: Path | None = HOME_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Recent weekly runs: window, rows, test NDCG@10, change against the champion, promoted or not."""
    rows = recent_runs(last, settings_for(home, write=False))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        console.print("no weekly runs yet: run `rankloop demo` or `rankloop train`")
        return
    table = Table(title="recent weekly runs, newest first", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("week end", "rows", "NDCG@10", "vs champ", "ver", "gate", "moved", "run"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("rows", "NDCG@10", "vs champ", "ver") else "left")
    for r in rows:
        window = (r["window_end"] or "")[:10]
        delta = "first" if r["champion_ndcg_at_10"] is None and r["verdict"] else _num(r["delta_vs_champion"], signed=True)
        table.add_row(window, _num(r["rows"]), _num(r["ndcg_at_10"]), delta, _num(r["version"]),
                      (r["verdict"] or r["status"]).lower(), "yes" if r["promoted"] else "no", r["run_id"][:8])
    console.print(table)


def _num(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
