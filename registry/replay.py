"""Replay before promotion: can the candidate serve? (TFX's InfraValidator, for the ranker.)

:func:`replay_version` points a temporary alias ``replay-<version>`` at the candidate and starts a
fresh Python process (``python -m registry.replay``) that loads it through the serving path,
``registry.load("ranker", alias)`` (manifest, checksums, cache), and scores the last week's
requests as serving builds them (the run's test week, the configured feature set's columns).
Found problems (each one holds the version, ``registry.gate.replay_gate``):

* the manifest's feature set differs from the model's own features, or from the columns serving
  builds (missing or extra names listed);
* a non-finite score; scores that differ when the same rows are scored again;
* the p99 latency of one ``replay.candidates``-row request over ``replay.requests`` requests above
  ``replay.p99_ms``; the process's peak resident memory above ``replay.max_memory_mb``;
* the process failing to load the version, or not finishing within ``replay.timeout_s``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.config.gate import ReplaySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayReport:
    """What the replay found: ``problems`` (empty: the version serves) and its ``figures``."""

    version: int
    problems: tuple[str, ...]
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems


def score_requests(model: Any, model_features: list[str], frame: pd.DataFrame, settings: ReplaySettings,
                   seed: int = 0) -> ReplayReport:
    """Replay ``frame`` (one row per candidate; its columns: what serving builds) against a loaded ranker.

    Args:
        model: a ``registry.load`` result (``.version``, ``.manifest``, ``.predict``).
        model_features: the feature names stored in the model file itself.
        frame: the requests' rows, the serving columns only.
        settings: the bounds; seed: which rows form the timed requests.
    """
    expected = list(model.manifest["feature_set"]["features"])
    problems: list[str] = []
    if list(model_features) != expected:
        problems.append(f"the model's own features differ from its manifest's feature set: missing "
                        f"{[f for f in expected if f not in model_features]}, extra "
                        f"{[f for f in model_features if f not in expected]}")
    missing = [f for f in expected if f not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in expected]
    if missing or extra:
        problems.append(f"the manifest's feature set differs from what serving builds: missing {missing}, extra {extra}")
        return ReplayReport(model.version, tuple(problems), {"rows": float(len(frame))})
    X = frame[expected]
    scores = np.asarray(model.predict(X), dtype=float)
    again = np.asarray(model.predict(X.copy()), dtype=float)
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        problems.append(f"{bad} of {scores.size} replayed scores are NaN or infinite")
    if not np.array_equal(scores, again, equal_nan=True):
        problems.append(f"scores are not deterministic: {int((scores != again).sum())} of {scores.size} differ "
                        "when the same rows are scored again")
    p99 = _p99_ms(model, X, settings, seed)
    if p99 > settings.p99_ms:
        problems.append(f"p99 latency {p99:.1f} ms for a {settings.candidates}-candidate request > {settings.p99_ms} ms")
    peak_mb = own_peak_rss_mb()
    if peak_mb > settings.max_memory_mb:
        problems.append(f"peak memory {peak_mb:.0f} MB > {settings.max_memory_mb:.0f} MB")
    return ReplayReport(model.version, tuple(problems), {
        "rows": float(len(frame)), "nonfinite_scores": float(bad), "p99_ms": p99, "peak_memory_mb": peak_mb})


def own_peak_rss_mb() -> float:
    """This process's own peak resident memory, MB: the high-water mark of its address space
    (``VmHWM``), which starts afresh when the process execs. Not ``getrusage``'s ``ru_maxrss``: Linux
    carries the pre-exec address space's peak into it, so a replay started by a 4 GB training process
    reported that process's peak and held every ranker trained at 10M interactions."""
    import resource
    import sys

    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB elsewhere


def _p99_ms(model: Any, X: pd.DataFrame, settings: ReplaySettings, seed: int) -> float:
    rng = np.random.default_rng(seed)
    timings = np.empty(settings.requests)
    for i in range(settings.requests):
        rows = X.iloc[rng.integers(0, len(X), settings.candidates)]
        began = time.perf_counter()
        model.predict(rows)
        timings[i] = (time.perf_counter() - began) * 1000
    return float(np.percentile(timings, 99))


def replay_version(settings: Any, kind: str, version: int, requests: Path, columns: list[str]) -> ReplayReport:
    """Replay ``version`` of ``kind`` in a fresh process on the rows of ``requests`` (Parquet; ``columns``
    are what serving builds). The temporary alias and its cache pointer are removed afterwards (and any
    ``replay-*`` alias a killed run left, before; weekly runs of one home do not overlap)."""
    from registry.store import aliases, make_client, set_alias

    alias = f"replay-{version}"
    client = make_client(settings)
    for stale in [a for a in aliases(client, kind) if a.startswith("replay-")]:  # left by a killed run
        set_alias(client, kind, stale, None)
    set_alias(client, kind, alias, version)
    try:
        return _run(settings, kind, alias, version, requests, columns)
    finally:
        set_alias(client, kind, alias, None)
        (settings.cache_dir / "models" / kind / f"alias-{alias}.json").unlink(missing_ok=True)


def _run(settings: Any, kind: str, alias: str, version: int, requests: Path, columns: list[str]) -> ReplayReport:
    replay = settings.gate.replay
    command = [sys.executable, "-m", "registry.replay", "--kind", kind, "--alias", alias, "--requests", str(requests),
               "--columns", json.dumps(columns), "--settings", replay.model_dump_json()]
    env = {**os.environ, "RANKLOOP_HOME": str(settings.home_dir), "PYTHONPATH": _repo_path()}
    if settings.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=replay.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return ReplayReport(version, (f"the replay process did not finish within {replay.timeout_s:.0f} s",))
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return ReplayReport(version, (f"the replay process could not load or score the version: {last[:500]}",))
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return ReplayReport(version, tuple(data["problems"]), data["figures"])


def _repo_path() -> str:
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)


def main(argv: list[str] | None = None) -> None:
    """The fresh process: load through ``registry.load``, replay, print the report as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m registry.replay")
    parser.add_argument("--kind", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--columns", required=True)
    parser.add_argument("--settings", required=True)
    args = parser.parse_args(argv)
    import pyarrow.parquet as pq

    from models.ranker import Ranker
    from registry.loader import load

    model = load(args.kind, alias=args.alias)
    frame = pq.read_table(args.requests, columns=json.loads(args.columns)).to_pandas()
    own = Ranker.load(model.path / "model.txt").feature_names_
    report = score_requests(model, own, frame, ReplaySettings.model_validate_json(args.settings))
    # the protocol with the parent process: one JSON line on stdout
    sys.stdout.write(json.dumps({"version": report.version, "problems": list(report.problems),
                                 "figures": report.figures}) + "\n")


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    main()
