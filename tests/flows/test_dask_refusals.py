"""What the Dask trainer does not do yet is refused up front, in one line, never trained silently
differently from the local run while the manifest records the setting."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import ConfigError, Reason
from core.settings import Settings
from rankloop import distributed
from rankloop.simulator import SimulationConfig, simulate


@pytest.mark.parametrize("variant", ["lightgbm", "propensity"])
def test_position_bias_correction_is_refused_on_dask(variant: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, ranker={"position_bias": variant}, executor={"kind": "dask"})
    with pytest.raises(ConfigError) as caught:
        distributed.check_supported(settings)
    assert caught.value.reason == Reason.BAD_CONFIG
    assert f"ranker.position_bias={variant}" in caught.value.one_line()
    assert "RANKLOOP_RANKER__POSITION_BIAS=none" in caught.value.one_line()


def test_forced_implicit_queries_are_refused_on_dask_and_the_defaults_pass(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, labels={"implicit": {"mode": "implicit"}}, executor={"kind": "dask"})
    with pytest.raises(ConfigError, match="labels.implicit.mode=implicit"):
        distributed.check_supported(settings)
    distributed.check_supported(Settings(home=tmp_path, executor={"kind": "dask"}))  # raises nothing


@pytest.mark.prefect
def test_the_dask_flow_refuses_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               prefect_api: None) -> None:
    from flows.weekly import weekly_retrain

    home = tmp_path / "home"
    monkeypatch.setenv("RANKLOOP_HOME", str(home))
    monkeypatch.setenv("RANKLOOP_EXECUTOR__KIND", "dask")
    monkeypatch.setenv("RANKLOOP_RANKER__POSITION_BIAS", "lightgbm")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="not supported with executor.kind=dask"):
        weekly_retrain(window_end=date(2026, 11, 16))
    assert not (home / "runs").exists()


def test_a_window_without_logged_slates_is_refused_by_the_dask_labels(tmp_path: Path) -> None:
    config = SimulationConfig(n_users=60, n_items=40, weeks=1, seed=2, log_layout="no_impressions",
                              end=datetime(2026, 11, 16, tzinfo=UTC))
    table = pa.concat_tables(list(simulate(config)))
    assert "impression" not in set(table["event_type"].to_pylist())
    path = tmp_path / "valid" / "2026-11-10.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    with pytest.raises(ConfigError) as caught:
        distributed.label_partitions(Settings(home=tmp_path), {date(2026, 11, 10): path}, None, tmp_path / "work")
    line = caught.value.one_line()
    assert "implicit protocol" in line and "0 logged slates" in line and "RANKLOOP_EXECUTOR__KIND=local" in line
