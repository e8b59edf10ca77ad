"""Time the labels + features stage's pieces in one process, on bench/weekly.py's PostgreSQL window.

    .venv/bin/python bench/feature_tasks.py --rows 10000000                     # the Dask tasks, one after the other
    .venv/bin/python bench/feature_tasks.py --rows 10000000 --local 0,1000000   # the local stage: one piece / by bucket

The window is extracted and validated once (per-day snapshot blocks, the contract, the valid rows cut by day)
into ``--cache`` (default ``/tmp/rl-feature-tasks-<rows>``) and reused. Then, in this process:

* default: ``rankloop.distributed.feature_partitions`` (the Dask flow's label and feature tasks in sequence),
  with each task function's process CPU seconds summed by function (what the flow maps on the workers:
  ``bucket_days`` = labels-cut, ``label_bucket`` = labels, ``featurise_users``/``featurise_items`` =
  features-users/-items, ``combine_features`` = features-days);
* ``--local B[,B...]``: the local stage (``rankloop.distributed.local_build_dataset``) with ``executor.feature_bucket_rows`` = B (0: the one-piece
  build), each in a fresh subprocess so its peak RSS is its own.

Process CPU, not wall: nothing here runs in parallel. Compare figures of one invocation only.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import weekly as bw  # noqa: E402

TASKS = ("bucket_days", "label_bucket", "combine_labels", "featurise_users", "featurise_items", "combine_features")


def _settings(cache: Path):
    from rankloop import stages

    state = json.loads((cache / "state.json").read_text())
    return stages.settings_for_run(window_end=bw.END.date(), source_uri=state["uri"], mapping=state["mapping"]), state


def prepare(rows: int, uri: str, cache: Path) -> None:
    """Extract and validate the window once into ``cache``."""
    import pyarrow.parquet as pq

    from rankloop import distributed, stages

    if (cache / "state.json").exists():
        return
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    mapping = bw.mapping_file(cache, rows)
    settings = stages.settings_for_run(window_end=bw.END.date(), source_uri=uri, mapping=str(mapping))
    start, end = settings.window.resolve()
    blocks = [distributed.extract_block(settings, a, b)
              for a, b in distributed.block_windows(start, end, settings.executor.days_per_task)]
    combined = distributed.combine_extracts(settings, blocks, start, end)
    valid = distributed.validate_partitioned(settings, combined, start, end, cache / "work")
    for name in ("items", "users"):
        table = getattr(combined.extracted, name)
        if table is not None:
            pq.write_table(table, cache / f"{name}.parquet")
    (cache / "state.json").write_text(json.dumps({
        "uri": uri, "mapping": str(mapping), "events": str(valid.validated.events_path),
        "rows_valid": valid.validated.rows_valid,
        "valid": {d.isoformat(): str(p) for d, p in valid.valid_paths.items()}}))


def _extracted(cache: Path):
    import pyarrow.parquet as pq

    from rankloop import stages

    tables = {n: pq.read_table(cache / f"{n}.parquet") if (cache / f"{n}.parquet").exists() else None
              for n in ("items", "users")}
    return stages.Extracted(snapshot_path=cache / "none", digest="bench", rows=0, reused=False, source="bench",
                            items=tables["items"], users=tables["users"])


def time_tasks(cache: Path) -> dict:
    """``feature_partitions`` with every task function's CPU seconds."""
    from rankloop import distributed

    settings, state = _settings(cache)
    valid = {date.fromisoformat(d): Path(p) for d, p in state["valid"].items()}
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for name in TASKS:
        def timed(*args, __fn=getattr(distributed, name), __name=name, **kwargs):
            began = time.process_time()
            try:
                return __fn(*args, **kwargs)
            finally:
                seconds[__name] += time.process_time() - began
                calls[__name] += 1
        setattr(distributed, name, timed)
    work = cache / "tasks"
    shutil.rmtree(work, ignore_errors=True)
    began, cpu = time.perf_counter(), time.process_time()
    labelled, parts = distributed.feature_partitions(settings, valid, _extracted(cache), work)
    out = {"seconds": round(time.perf_counter() - began, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
           "rows": sum(p.rows for p in parts), "buckets": distributed.label_bucket_count(settings, len(valid)),
           "tasks": {n: {"calls": calls[n], "cpu_seconds": round(seconds[n], 1)} for n in TASKS}}
    shutil.rmtree(work, ignore_errors=True)
    return out


def time_local(cache: Path, bucket_rows: int) -> dict:
    """``stages.build_dataset`` with ``executor.feature_bucket_rows`` = ``bucket_rows``."""
    import os

    os.environ["RANKLOOP_EXECUTOR__FEATURE_BUCKET_ROWS"] = str(bucket_rows)
    from rankloop import distributed, stages

    settings, state = _settings(cache)
    _, end = settings.window.resolve()
    rows = state["rows_valid"]
    validated = stages.Validated(events_path=Path(state["events"]), rows_in=rows, rows_valid=rows, rows_quarantined=0,
                                 quarantine_path=None, suite_name="bench", suite_version="0")
    work = cache / f"local-{bucket_rows}"
    shutil.rmtree(work, ignore_errors=True)
    began, cpu = time.perf_counter(), time.process_time()
    dataset = distributed.local_build_dataset(settings, validated, _extracted(cache), end, work)
    out = {"feature_bucket_rows": bucket_rows, "seconds": round(time.perf_counter() - began, 1),
           "cpu_seconds": round(time.process_time() - cpu, 1),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "sizes": dataset.split.sizes()}
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--uri", default=bw.DEFAULT_URI)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--local", help="comma-separated executor.feature_bucket_rows values for stages.build_dataset")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = args.cache or Path(f"/tmp/rl-feature-tasks-{args.rows}")
    if args.worker is not None:
        print(json.dumps(time_local(cache, int(args.worker)) if args.worker != "tasks" else time_tasks(cache)))
        return
    prepare(args.rows, args.uri, cache)
    runs = [int(b) for b in args.local.split(",")] if args.local else ["tasks"]
    for run in runs:
        command = [sys.executable, __file__, "--rows", str(args.rows), "--cache", str(cache), "--worker", str(run)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{run}: failed\n{done.stderr[-3000:]}")
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
