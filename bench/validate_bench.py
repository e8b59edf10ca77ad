"""Time the interaction contract: our vectorised masks vs Great Expectations' plain pandas path.

    .venv/bin/python bench/validate_bench.py --rows 10000000

Each engine runs in a fresh subprocess that first builds the synthetic canonical table
(``data_contracts.synthetic``: clean rows plus ``--faults`` (default ``rows // 10_000``) injected
bad rows per rule, 22 rules; not timed), then times one engine (wall and process CPU seconds: the CPU figure is the robust one on a
shared machine) while a thread samples RSS, so "peak RSS" is that process's peak during the timed
step and "base RSS" its RSS just before it (the table itself).

Engines:

* ``masks``: ``validate_interactions(run_ge=False)`` -- masks, quarantine table with reasons,
  valid table, table rules.
* ``ge``: Arrow -> pandas, then GE 1.x ``batch.validate(suite)`` of the same declared suite on the
  whole dataframe (ephemeral context, pandas data source, BASIC result format).
* ``contract``: ``validate_interactions(run_ge=True)`` with default settings: masks plus GE on the
  strided ``ge_max_rows`` sample (what flows run), plus the Markdown report.
* ``extract``: the same rows (those a source can hold: required columns present, ts in the window)
  written to the local PostgreSQL (not timed), then ``sources.extract_snapshot`` of the window timed
  (streamed read, conform, hash, Parquet snapshot), then the table dropped.

GE's suite has one expectation fewer than ours: ``engagement_has_impression`` is a join GE cannot
express, so the ``ge`` figure does not include it (the masks' figures do).

If ``ge`` at ``--rows`` exceeds ``--ge-timeout`` seconds, it is killed and re-run at 1M and 3M
rows, and the full-size time is extrapolated linearly (said so in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psutil

WINDOW = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 2, 9, tzinfo=UTC))


from measure import PeakRSS  # noqa: E402 - bench/ is the script's own directory


def _table(rows: int, faults: int):
    from data_contracts.synthetic import inject_faults, synthetic_interactions

    clean = synthetic_interactions(rows, window=WINDOW, seed=0)
    return inject_faults(clean, window=WINDOW, per_rule=faults, seed=1)[0] if faults else clean


def _run_masks(table, run_ge: bool) -> dict[str, Any]:
    from data_contracts import ContractSettings, check_interactions, render_markdown

    settings = ContractSettings(min_rows=0)
    result = check_interactions(table, window=WINDOW, settings=settings, run_ge=run_ge)
    if run_ge:
        render_markdown(result, settings)
    return {"rows_quarantined": result.quarantined.num_rows, "rows_valid": result.valid.num_rows,
            "ge_rows": result.ge_rows, "gate_passed": result.gate_passed}


PG_URI = "postgresql://postgres@127.0.0.1:5432/test"
PG_TABLE = "rl_validate_bench_interactions"


def _load_postgres(table) -> Any:
    """The rows a source can hold, written to PostgreSQL (not timed); returns them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from sources import write_table

    ts = table["ts"]
    keep = pc.and_(pc.and_(pc.is_valid(table["event_id"]), pc.is_valid(table["user_id"])),
                   pc.and_(pc.is_valid(table["item_id"]), pc.is_valid(table["event_type"])))
    keep = pc.and_(keep, pc.and_(pc.greater_equal(ts, pa.scalar(WINDOW[0], ts.type)),
                                 pc.less(ts, pa.scalar(WINDOW[1], ts.type))))
    table = table.filter(keep)
    chunk = 1_000_000
    for lo in range(0, table.num_rows, chunk):
        write_table(PG_URI, PG_TABLE, table.slice(lo, chunk), mode="replace" if lo == 0 else "append",
                    indexes=[("ts",)] if lo + chunk >= table.num_rows else ())
    return table


def _run_extract(directory: str) -> dict[str, Any]:
    from pathlib import Path

    from sources import extract_snapshot
    from sources.mapping import MAPPINGS_DIR

    mapping = Path(directory) / "bench_mapping.yaml"
    mapping.write_text((MAPPINGS_DIR / "rankloop.yaml").read_text().replace("table: interactions",
                                                                             f"table: {PG_TABLE}", 1))
    snap = extract_snapshot(PG_URI, mapping, WINDOW[0], WINDOW[1], Path(directory) / "snaps")
    return {"rows_extracted": snap.rows}


def _drop_postgres() -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(PG_URI) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {PG_TABLE}")
        conn.commit()


def _run_ge(table) -> dict[str, Any]:
    from core.config.contracts import ContractSettings
    from core.schema import REQUIRED_COLUMNS
    from data_contracts.ge_suite import _context, build_suite, to_pandas
    from data_contracts.rules import NOW, WINDOW_END, WINDOW_START, row_rules

    started = time.perf_counter()
    frame = to_pandas(table)
    converted = time.perf_counter() - started
    context = _context()
    batch = (context.data_sources.add_pandas("bench").add_dataframe_asset("interactions")
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame}))
    suite = build_suite(row_rules(ContractSettings()), REQUIRED_COLUMNS)
    params = {WINDOW_START: WINDOW[0], WINDOW_END: WINDOW[1], NOW: datetime.now(UTC)}
    result = batch.validate(suite, expectation_parameters=params,
                            result_format={"result_format": "BASIC"})
    unexpected = sum(r.result.get("unexpected_count") or 0 for r in result.results)
    return {"to_pandas_seconds": round(converted, 2), "ge_unexpected_total": unexpected}


def worker(engine: str, rows: int, faults: int) -> dict[str, Any]:
    """Build the table, time one engine; returns the figures (wall and CPU seconds, RSS)."""
    import tempfile

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    table = _table(rows, faults)
    if engine in ("ge", "contract"):  # import cost is not the engine's
        import great_expectations  # noqa: F401
    if engine == "extract":
        table = _load_postgres(table)
        import sources  # noqa: F401
    cpu = psutil.Process().cpu_times
    try:
        with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
            started, cpu_started = time.perf_counter(), sum(cpu()[:2])
            if engine == "extract":
                extra = _run_extract(tmp)
            else:
                extra = _run_ge(table) if engine == "ge" else _run_masks(table, run_ge=engine == "contract")
            seconds, cpu_seconds = time.perf_counter() - started, sum(cpu()[:2]) - cpu_started
    finally:
        if engine == "extract":
            _drop_postgres()
    return {"engine": engine, "rows": table.num_rows, "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
            "base_rss_mb": round(rss.base / 2**20), "peak_rss_mb": round(rss.peak / 2**20), **extra}


def spawn(engine: str, rows: int, faults: int, timeout: float | None) -> dict[str, Any] | None:
    """Run ``worker`` in a fresh interpreter; None when it exceeded ``timeout``."""
    command = [sys.executable, __file__, "--worker", engine, "--rows", str(rows), "--faults", str(faults)]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{engine} at {rows} rows failed:\n{e.stderr[-3000:]}") from e
    return json.loads(out.stdout.strip().splitlines()[-1])


def extrapolate(rows: int, small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Linear fit through two GE runs, evaluated at ``rows``."""
    slope = (large["seconds"] - small["seconds"]) / (large["rows"] - small["rows"])
    seconds = large["seconds"] + slope * (rows - large["rows"])
    mem = (large["peak_rss_mb"] - small["peak_rss_mb"]) / (large["rows"] - small["rows"])
    return {"engine": "ge (extrapolated)", "rows": rows, "seconds": round(seconds, 1),
            "peak_rss_mb": round(large["peak_rss_mb"] + mem * (rows - large["rows"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--engines", default="extract,masks,contract,ge")
    parser.add_argument("--ge-timeout", type=float, default=300.0)
    parser.add_argument("--faults", type=int, default=None,
                        help="bad rows injected per rule (default rows // 10000; 0: a clean table)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    faults = args.rows // 10_000 if args.faults is None else args.faults
    if args.worker:
        print(json.dumps(worker(args.worker, args.rows, faults)))
        return
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    for engine in args.engines.split(","):
        figures = spawn(engine, args.rows, faults, args.ge_timeout if engine == "ge" else None)
        if figures is None:
            print(f"ge at {args.rows} rows exceeded {args.ge_timeout:.0f} s; running 1M and 3M", flush=True)
            small, large = (spawn("ge", n, n // 10_000 if args.faults is None else faults, None)
                            for n in (1_000_000, 3_000_000))
            for f in (small, large):
                print(json.dumps(f), flush=True)
            figures = extrapolate(args.rows, small, large)
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
