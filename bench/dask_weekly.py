"""The weekly retrain on a 2-worker Dask LocalCluster beside the local run, from PostgreSQL.

    flock /tmp/rankloop-heavy.lock .venv/bin/python bench/dask_weekly.py --rows 1000000
    flock /tmp/rankloop-heavy.lock .venv/bin/python bench/dask_weekly.py --rows 10000000

Reads the tables ``bench/weekly.py --rows N`` loaded (``rl_bench_weekly_<N>_*``; never loads, drops
or changes them) through the same mapping copy, and reuses that script's helpers. Variants, each in
a fresh subprocess with a fresh ``RANKLOOP_HOME``:

* ``local``: ``bench/weekly.py``'s ``prefect`` variant (``flows.weekly.weekly_retrain``); its process
  tree's CPU seconds and peak RSS measured as the Dask variant's (``tree_*``; the tree's span includes
  the start of Prefect's local API, not its CPU).
* ``dask``: ``flows.weekly.weekly_retrain`` with ``RANKLOOP_EXECUTOR__KIND=dask`` against a
  ``distributed.LocalCluster`` (2 workers x 1 thread) started before the timed span; per-task seconds
  from the Prefect API (mapped tasks summed over their days: worker seconds, not wall), peak RSS of
  the driver and of the whole process tree (driver + nannies + workers, sampled every 50 ms).

Both variants record ``memory``: the flow process's RSS sampled every 20 ms, its highest sample within
each task's runs (``driver_rss_mb_by_task``; a worker task's figure is the driver's while it ran) and
the tasks running at the highest sample (``driver_peak_during``).
* ``dask:<n>``: the same with ``executor.days_per_task`` = n (``--variants local,dask,dask:18`` side by side).
* ``dask_per_day``: the same with one query day per feature task (``RANKLOOP_EXECUTOR__FEATURE_DAYS_PER_TASK=1``,
  how the Dask features ran before that setting), for ``--variants local,dask,dask_per_day`` side by side.

Writes ``bench/results/dask_weekly_<N>.json``; the load average is recorded around each variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

import weekly as bw  # noqa: E402 - bench/weekly.py: the tables, the mapping copy, the environment, the local variant
from measure import PeakRSS, RSSTrace, commit, versions  # noqa: E402

RESULTS = Path(__file__).parent / "results"


class TreeRSS:
    """Peak summed RSS of this process and all its descendants (the LocalCluster's workers), and the CPU
    seconds they used in the span (``cpu_seconds``: this process and the workers, not Prefect's API server,
    which the local variant's ``cpu_seconds`` leaves out too)."""

    def __enter__(self) -> TreeRSS:
        import psutil

        self.root = psutil.Process()
        self.peak = 0
        self.cpu_seconds = 0.0
        self._cpu_before, self._ended_before = self._cpu(), self._ended()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _ended() -> float:
        """CPU seconds of this process's children that have ended and been waited for (the replay's process)."""
        times = os.times()
        return times.children_user + times.children_system

    def _cpu(self) -> dict[int, float]:
        """User + system CPU seconds of this process and each descendant that is not a Prefect server."""
        out = {}
        for p in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(Exception):
                command = " ".join(p.cmdline())
                if "uvicorn" in command or "prefect server" in command:
                    continue
                times = p.cpu_times()
                out[p.pid] = times.user + times.system
        return out

    def _total(self) -> int:
        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(Exception):  # a process may end between listing and reading
                total += p.memory_info().rss
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._total())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        after = self._cpu()  # the workers are still up: the cluster closes after this span
        alive = sum(t - self._cpu_before.get(pid, 0.0) for pid, t in after.items())
        self.cpu_seconds = round(alive + self._ended() - self._ended_before, 1)


def _task_spans() -> dict[str, list[tuple[float, float]]]:
    """Per task name (mapped runs together), the (start, end) epoch seconds of its runs in the Prefect API."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    out: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        if r.start_time and r.end_time:
            out.setdefault(r.name.rsplit("-", 1)[0], []).append((r.start_time.timestamp(), r.end_time.timestamp()))
    return out


def _driver_memory(trace: RSSTrace) -> dict[str, Any]:
    """The flow process's sampled RSS per task span, and the tasks running at its highest sample."""
    spans = _task_spans()
    at, peak = trace.peak_moment()
    return {"driver_rss_mb_by_task": trace.peaks_by_span(spans), "driver_sampled_peak_mb": peak,
            "driver_peak_during": sorted(name for name, ranges in spans.items() if any(a <= at <= b for a, b in ranges))}


def run_dask(uri: str, mapping: Path, days_per_task: int | None = None) -> dict[str, Any]:
    from distributed import LocalCluster

    memory_limit = os.environ.get("RL_BENCH_WORKER_MEMORY", "auto")
    if days_per_task is not None:
        os.environ["RANKLOOP_EXECUTOR__DAYS_PER_TASK"] = str(days_per_task)

    from prefect.client.orchestration import get_client

    import flows.executors  # noqa: F401 - imports are not the flow's time
    from flows.weekly import weekly_retrain

    with PeakRSS() as server, get_client(sync_client=True) as client:
        client.api_healthcheck()
        api_url = str(client.api_url).rstrip("/")
    # The workers report to this process's Prefect API, as an existing cluster's workers must be told to
    # (docs/scale-out.md); until stop 33 they were not, and each started a temporary server of its own.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=memory_limit, env={"PREFECT_API_URL": api_url}) as cluster:
        os.environ.update(RANKLOOP_EXECUTOR__KIND="dask", RANKLOOP_EXECUTOR__ADDRESS=cluster.scheduler_address)
        with TreeRSS() as tree, PeakRSS() as rss, RSSTrace() as trace:
            summary = weekly_retrain(window_end=bw.END.date(), source_uri=uri, mapping=str(mapping), force=True)
    return {"end_to_end": rss.figures() | {"tree_peak_rss_mb": round(tree.peak / 2**20),
                                            "tree_cpu_seconds": tree.cpu_seconds}, "worker_memory_limit": memory_limit,
            "server_start": server.figures(), "tasks": bw._task_seconds(), "summary": bw._brief(summary),
            "memory": _driver_memory(trace)}


def run_local(uri: str, mapping: Path) -> dict[str, Any]:
    """``bench/weekly.py``'s ``prefect`` variant, with the CPU seconds of its process tree as the Dask variant's."""
    with TreeRSS() as tree, RSSTrace() as trace:
        out = bw.run_prefect(uri, mapping)
    out["end_to_end"] |= {"tree_peak_rss_mb": round(tree.peak / 2**20), "tree_cpu_seconds": tree.cpu_seconds}
    return out | {"memory": _driver_memory(trace)}


VARIANTS = {"local": run_local, "dask": run_dask,
            # the feature tasks one query day each, as before executor.days_per_task (its default is 7)
            "dask_per_day": lambda uri, mapping: run_dask(uri, mapping, days_per_task=1)}


def worker(variant: str, uri: str, rows: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"rl-dask-weekly-{variant}-"))
    mapping = bw.mapping_file(home, rows)
    bw._environment(home / "home", uri, mapping)
    if variant.startswith("dask:"):  # dask:<n>: executor.days_per_task = n
        return run_dask(uri, mapping, days_per_task=int(variant.split(":", 1)[1])) | {"home": str(home)}
    return VARIANTS[variant](uri, mapping) | {"home": str(home)}


def spawn(variant: str, uri: str, rows: int) -> dict[str, Any]:
    before, started = os.getloadavg(), time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--worker", variant, "--rows", str(rows), "--uri", uri],
                         capture_output=True, text=True)
    log = Path(tempfile.gettempdir()) / f"rl-dask-weekly-{variant}-{rows}.stderr.log"  # the run's log lines, kept
    log.write_text(out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} at {rows} rows failed (whole stderr: {log}):\n{out.stderr[-5000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["loadavg_before"], result["loadavg_after"] = before, os.getloadavg()
    result["subprocess_seconds"] = round(time.perf_counter() - started, 1)
    result["stderr_log"] = str(log)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--uri", default=bw.DEFAULT_URI)
    parser.add_argument("--variants", default="local,dask")
    parser.add_argument("--worker-memory", default="auto",
                        help="memory_limit per LocalCluster worker (Dask syntax, e.g. 7GiB; default auto = RAM/2)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.uri, args.rows), default=str))
        return
    os.environ["RL_BENCH_WORKER_MEMORY"] = args.worker_memory  # read by the dask variant's subprocess
    RESULTS.mkdir(exist_ok=True)
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs; tables {bw.tables(args.rows)}", flush=True)
    out_path = RESULTS / f"dask_weekly_{args.rows}.json"
    results: dict[str, Any] = json.loads(out_path.read_text()).get("variants", {}) if out_path.exists() else {}
    for variant in args.variants.split(","):
        results[variant] = spawn(variant, args.uri, args.rows)
        print(f"{variant}: {json.dumps(results[variant]['end_to_end'])} {json.dumps(results[variant]['summary'])}",
              flush=True)
        print(f"  tasks: {json.dumps(results[variant]['tasks'])}", flush=True)
        out_path.write_text(json.dumps({"measured_at": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(),
                                        "commit": commit(), "versions": versions(), "variants": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
