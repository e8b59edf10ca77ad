"""Replay before promotion: the candidate, loaded through registry.load in a fresh process, scores the
requests serving builds; a feature set that differs from the manifest, or NaN scores, hold it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankloop.promotion import Candidate, Status
from registry.decision import Decision, Verdict
from registry.gate import replay_gate
from registry.replay import ReplayReport, replay_version
from registry.store import aliases

from .conftest import FEATURES, Store, register, tiny_model_text

pytestmark = [pytest.mark.slow]


@pytest.fixture
def requests(tmp_path: Path) -> Path:
    """A week of requests as serving builds them: query_id and the serving feature set's columns."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(600, len(FEATURES))), columns=FEATURES)
    frame.insert(0, "query_id", np.repeat(np.arange(60), 10))
    path = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pandas(frame), path)
    return path


def _nan_leaves(text: str) -> str:
    """The model with every leaf value nan: a broken artefact that still loads (without ``tree_sizes``,
    which would no longer match, LightGBM reads the trees one after the other)."""
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)
    return re.sub(r"^leaf_value=.*$", lambda m: "leaf_value=" + " ".join(
        "nan" for _ in m.group(0).split("=")[1].split()), text, flags=re.M)


def test_a_servable_candidate_passes_with_its_figures(store: Store, requests: Path) -> None:
    version = register(store, tiny_model_text(1))
    report = replay_version(store.settings, "ranker", version, requests, FEATURES)
    assert report.passed, report.problems
    assert report.figures["rows"] == 600 and report.figures["nonfinite_scores"] == 0
    assert 0 < report.figures["p99_ms"] < store.settings.gate.replay.p99_ms
    assert report.figures["peak_memory_mb"] > 50  # the fresh process: interpreter, MLflow, LightGBM
    assert "replay-1" not in aliases(store.client, "ranker")  # the temporary alias is gone
    assert not list((store.settings.cache_dir / "models" / "ranker").glob("alias-replay-*"))


def test_a_manifest_whose_feature_set_differs_holds_the_candidate(store: Store, requests: Path) -> None:
    listed = ["f_pop", "f_sim", "f_recency"]  # what the manifest says; the model was trained on FEATURES
    version = register(store, tiny_model_text(1), manifest_features=listed)
    report = replay_version(store.settings, "ranker", version, requests, FEATURES)
    assert not report.passed
    assert any("the model's own features differ from its manifest's feature set: missing ['f_recency'], "
               "extra ['f_fresh']" in p for p in report.problems), report.problems
    assert any("differs from what serving builds: missing ['f_recency'], extra ['f_fresh']" in p
               for p in report.problems), report.problems


def test_nan_scores_hold_the_candidate(store: Store, requests: Path) -> None:
    version = register(store, _nan_leaves(tiny_model_text(1)))
    report = replay_version(store.settings, "ranker", version, requests, FEATURES)
    assert report.problems == ("600 of 600 replayed scores are NaN or infinite",)


def test_a_load_failure_and_a_tight_latency_bound_are_problems(store: Store, requests: Path) -> None:
    version = register(store, tiny_model_text(1))
    settings = store.settings.model_copy(update={"gate": store.settings.gate.model_copy(update={
        "replay": store.settings.gate.replay.model_copy(update={"p99_ms": 1e-6})})})
    report = replay_version(settings, "ranker", version, requests, FEATURES)
    assert len(report.problems) == 1 and report.problems[0].startswith("p99 latency")
    report = replay_version(store.settings, "ranker", version, requests.with_name("gone.parquet"), FEATURES)
    assert report.problems[0].startswith("the replay process could not load or score the version")


def test_a_failed_replay_turns_the_decision_into_fail_and_holds_the_run_candidate(store: Store, requests: Path) -> None:
    import mlflow

    from rankloop.checks import replay_ranker

    version = register(store, _nan_leaves(tiny_model_text(1)))
    decision = Decision("ranker", Verdict.PASS, ("first version: no champion to compare with",),
                        {"n_queries": 60}, version, None)
    assert replay_gate(decision, ReplayReport(version, ())).verdict is Verdict.PASS
    with mlflow.start_run(experiment_id=store.client.get_experiment_by_name("rankloop").experiment_id) as run:
        pass
    candidate = Candidate("ranker", Status.PASSED, version, None, decision.reasons, decision, run_id=run.info.run_id)

    class Split:
        paths = {"test": requests}

    class Dataset:
        split, features = Split(), tuple(FEATURES)

    held = replay_ranker(store.settings, [candidate], Dataset())[0]
    assert held.status is Status.HELD and held.verdict == "FAIL"
    assert held.decision.reasons == ("first version: no champion to compare with",
                                     "replay: 600 of 600 replayed scores are NaN or infinite")
    logged = store.client.get_run(run.info.run_id).data
    assert logged.tags["gate.verdict"] == "FAIL" and "replay: 600 of 600" in logged.tags["gate.reasons"]
    assert logged.metrics["gate.replay_nonfinite_scores"] == 600


def test_the_memory_bound_measures_the_replay_process_not_the_one_that_started_it(tmp_path: Path) -> None:
    """A process that peaked at ~600 MB (a training run) starts a small one: the small one's peak is
    its own, though the kernel's ru_maxrss carries the parent's peak across the exec."""
    import subprocess
    import sys

    child = ("import json, resource; from registry.replay import own_peak_rss_mb; "
             "print(json.dumps([own_peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))")
    parent = ("import subprocess, sys, numpy as np\n"
              "big = np.ones(600 * 2**20 // 8); del big\n"  # touched, then freed: the parent's peak stays
              f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True, check=True).stdout)")
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parents[2])
    own, inherited = json.loads(done.stdout.strip().splitlines()[-1])
    assert inherited > 550  # what the replay used to report: the parent's peak
    assert 5 < own < 300  # the interpreter, numpy and the registry package


class _Model:
    """A stand-in ranker: a fixed linear score (NaN where f_pop < -2), recording each batch's size."""

    version = 3

    def __init__(self) -> None:
        self.manifest = {"feature_set": {"features": list(FEATURES)}}
        self.sizes: list[int] = []
        self.timed: list[np.ndarray] = []

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        self.sizes.append(len(X))
        if len(X) == 3:  # a timed request (candidates=3 below; no batch has 3 rows): which rows it scored
            self.timed.append(X.to_numpy().copy())
        scores = X.to_numpy() @ np.arange(1, X.shape[1] + 1, dtype=float)
        return np.where(X["f_pop"].to_numpy() < -2, np.nan, scores)


@pytest.mark.parametrize("batch_rows", [7, 64, 10_000])
def test_the_replay_holds_one_batch_of_the_week_and_reports_the_same(requests: Path, batch_rows: int) -> None:
    """The replay process scores the week a batch at a time (its memory is the model's and a batch's, not
    the week's, which grows with the window); the report and the timed requests' rows do not depend on
    the batch size."""
    from core.config.gate import ReplaySettings
    from registry.replay import replay_file

    settings = ReplaySettings(requests=20, candidates=3)
    whole, batched = _Model(), _Model()
    expected = replay_file(whole, FEATURES, requests, FEATURES, settings, batch_rows=600)
    got = replay_file(batched, FEATURES, requests, FEATURES, settings, batch_rows=batch_rows)
    frame = pq.read_table(requests).to_pandas()
    nan = int((frame["f_pop"] < -2).sum())
    assert nan > 0 and got.problems == expected.problems == (f"{nan} of 600 replayed scores are NaN or infinite",)
    assert got.figures["rows"] == 600 and got.figures["nonfinite_scores"] == nan
    assert max(s for s in batched.sizes if s != 3) == min(batch_rows, 600)  # never the whole week at once
    assert sum(s for s in batched.sizes if s != 3) == 2 * 600  # every row scored twice
    assert len(batched.timed) == 20 and all((a == b).all() for a, b in zip(whole.timed, batched.timed, strict=True))
    rows = np.random.default_rng(0).integers(0, 600, 3)  # the first draw: rows of the whole file
    assert (batched.timed[0] == frame[FEATURES].to_numpy()[rows]).all()
