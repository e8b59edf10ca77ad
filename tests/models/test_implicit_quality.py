"""Quality floor on a ratings-only log: with three months of history the ranker, trained on implicit
queries, beats popularity on the same test rows (bench/implicit_quality.py runs many windows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.settings import Settings
from rankloop import stages
from rankloop.simulator import SimulationConfig, simulate

END = datetime(2026, 6, 1, tzinfo=UTC)

pytestmark = pytest.mark.slow


def test_ranker_beats_popularity_on_a_ratings_only_log(tmp_path: Path) -> None:
    config = SimulationConfig(n_users=600, n_items=150, weeks=14, requests_per_user_week=8.0, end=END, seed=0,
                              log_layout="ratings")
    log = pa.concat_tables(list(simulate(config)))
    settings = Settings(window={"history_days": 91}, home=tmp_path / "home")
    start = END - timedelta(days=settings.window.history_days)
    ts = log.column("ts")
    pq.write_table(log.filter(pc.greater_equal(ts, pa.scalar(start, ts.type))), tmp_path / "events.parquet")
    rows = pq.read_metadata(tmp_path / "events.parquet").num_rows
    validated = stages.Validated(events_path=tmp_path / "events.parquet", rows_in=rows, rows_valid=rows,
                                 rows_quarantined=0, quarantine_path=None, suite_name="test", suite_version="0")
    extracted = stages.Extracted(snapshot_path=tmp_path / "events.parquet", digest="test", rows=rows, reused=False,
                                 source="simulator")
    dataset = stages.build_dataset(settings, validated, extracted, END, tmp_path)
    trained = stages.train_ranker(settings, dataset, tmp_path)
    assert dataset.protocol["name"] == "implicit_sampled" and dataset.feature_set == "ranker_implicit"
    ranker, popularity = trained.report["ndcg_at_10"], trained.baselines["popularity"]["ndcg_at_10"]
    assert ranker > popularity + 0.01, (ranker, popularity)
