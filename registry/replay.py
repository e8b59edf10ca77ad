"""Replay before promotion: can the candidate serve? (TFX's InfraValidator, for the ranker.)

:func:`replay_version` points a temporary alias ``replay-<version>`` at the candidate and starts a
fresh Python process (``python -m registry.replay``) that loads it through the serving path,
``registry.load("ranker", alias)`` (manifest, checksums, cache), and scores the last week's
requests as serving builds them (the run's test week, the configured feature set's columns), one
batch of rows at a time: the process holds the model and a batch, as serving would, whatever the week's size.
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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.config.gate import ReplaySettings
from core.config.registry import RegistryConfig
from registry.config import config_of

if TYPE_CHECKING:
    from core.settings import Settings

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


# Rows of the week's requests scored at a time: the replay holds the model and one batch, never the week
# (the test week grows with the window: 4.5M rows x 88 features held ~6.4 GB at 30M interactions, past
# ``replay.max_memory_mb``, and every ranker trained there was held for the week's size, not the model's).
REPLAY_BATCH_ROWS = 262_144


def replay_file(model: Any, model_features: list[str], path: Path, columns: list[str], settings: ReplaySettings,
                seed: int = 0, batch_rows: int = REPLAY_BATCH_ROWS) -> ReplayReport:
    """Replay the requests in the Parquet file at ``path`` against a loaded ranker, ``batch_rows`` at a time.

    Every row is scored twice (finite? the same both times?); the timed requests are ``replay.requests``
    draws of ``replay.candidates`` rows over the whole file (the draws do not depend on ``batch_rows``),
    gathered while the batches pass and timed after.

    Args:
        model: a ``registry.load`` result (``.version``, ``.manifest``, ``.predict``).
        model_features: the feature names stored in the model file itself.
        path: the requests' rows; columns: the columns serving builds (the file has them).
        settings: the bounds; seed: which rows form the timed requests.
    """
    from core.parquet import open_for_streaming

    expected = list(model.manifest["feature_set"]["features"])
    problems: list[str] = []
    if list(model_features) != expected:
        problems.append(f"the model's own features differ from its manifest's feature set: missing "
                        f"{[f for f in expected if f not in model_features]}, extra "
                        f"{[f for f in model_features if f not in expected]}")
    # Opened for streaming (core.parquet): pre-buffered, the reader would keep the whole week again (by hand
    # 4.8 GB for a 4.5M-row file read a batch at a time; 0.8 GB without).
    file = open_for_streaming(path)
    rows = file.metadata.num_rows
    missing = [f for f in expected if f not in columns]
    extra = [str(c) for c in columns if c not in expected]
    if missing or extra:
        problems.append(f"the manifest's feature set differs from what serving builds: missing {missing}, extra {extra}")
        return ReplayReport(model.version, tuple(problems), {"rows": float(rows)})
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, rows, settings.candidates) for _ in range(settings.requests)]
    wanted = np.unique(np.concatenate(draws)) if draws else np.zeros(0, dtype=np.int64)
    bad = unequal = differ = 0
    drawn, lo = [], 0
    for batch in file.iter_batches(batch_size=batch_rows, columns=expected):
        X = batch.to_pandas()
        scores = np.asarray(model.predict(X), dtype=float)
        again = np.asarray(model.predict(X.copy()), dtype=float)
        bad += int((~np.isfinite(scores)).sum())
        unequal += int((scores != again).sum())
        differ += 0 if np.array_equal(scores, again, equal_nan=True) else 1
        here = wanted[(wanted >= lo) & (wanted < lo + len(X))]
        if len(here):
            drawn.append(X.iloc[here - lo].set_axis(pd.Index(here), axis=0))
        lo += len(X)
        del X, scores, again, batch
    if bad:
        problems.append(f"{bad} of {rows} replayed scores are NaN or infinite")
    if differ:
        problems.append(f"scores are not deterministic: {unequal} of {rows} differ when the same rows are scored again")
    p99 = _p99_ms(model, pd.concat(drawn) if drawn else None, draws)
    if p99 > settings.p99_ms:
        problems.append(f"p99 latency {p99:.1f} ms for a {settings.candidates}-candidate request > {settings.p99_ms} ms")
    peak_mb = own_peak_rss_mb()
    if peak_mb > settings.max_memory_mb:
        problems.append(f"peak memory {peak_mb:.0f} MB > {settings.max_memory_mb:.0f} MB")
    return ReplayReport(model.version, tuple(problems), {
        "rows": float(rows), "nonfinite_scores": float(bad), "p99_ms": p99, "peak_memory_mb": peak_mb})


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


def _p99_ms(model: Any, drawn: pd.DataFrame | None, draws: list[np.ndarray]) -> float:
    """p99 of the timed requests: each one the rows of its draw (file row numbers; ``drawn`` holds them)."""
    timings = np.empty(len(draws))
    for i, draw in enumerate(draws):
        rows = drawn.loc[draw]
        began = time.perf_counter()
        model.predict(rows)
        timings[i] = (time.perf_counter() - began) * 1000
    return float(np.percentile(timings, 99))


def replay_version(settings: Settings | RegistryConfig, kind: str, version: int, requests: Path,
                   columns: list[str]) -> ReplayReport:
    """Replay ``version`` of ``kind`` in a fresh process on the rows of ``requests`` (Parquet; ``columns``
    are what serving builds). The temporary alias and its cache pointer are removed afterwards (and any
    ``replay-*`` alias a killed run left, before; weekly runs of one home do not overlap)."""
    from registry.store import aliases, make_client, set_alias

    settings = config_of(settings)
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


def _run(settings: RegistryConfig, kind: str, alias: str, version: int, requests: Path, columns: list[str]) -> ReplayReport:
    replay = settings.replay
    command = [sys.executable, "-m", "registry.replay", "--kind", kind, "--alias", alias, "--requests", str(requests),
               "--columns", json.dumps(columns), "--settings", replay.model_dump_json()]
    env = {**os.environ, "RANKLOOP_HOME": str(settings.home_dir), "PYTHONPATH": _repo_path()}
    if settings.explicit_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = settings.explicit_tracking_uri
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
    from models.ranker import Ranker
    from registry.loader import load

    model = load(args.kind, alias=args.alias)
    own = Ranker.load(model.path / "model.txt").feature_names_
    report = replay_file(model, own, args.requests, json.loads(args.columns),
                         ReplaySettings.model_validate_json(args.settings))
    # the protocol with the parent process: one JSON line on stdout
    sys.stdout.write(json.dumps({"version": report.version, "problems": list(report.problems),
                                 "figures": report.figures}) + "\n")


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    main()
