"""Arrow's memory pool: the runs use ``executor.arrow_memory_pool`` (jemalloc) in their own process and
in the workers of a LocalCluster they start; a pyarrow without that pool keeps its own, with a warning."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pyarrow as pa
import pytest

from core.config.executor import ExecutorSettings
from core.memory import use_arrow_pool


@pytest.fixture
def restored_pool() -> Iterator[None]:
    before = pa.default_memory_pool()
    yield
    pa.set_memory_pool(before)


def test_the_pool_asked_for_allocates_what_arrow_allocates_next(restored_pool: None) -> None:
    for backend in ("system", "jemalloc", "mimalloc", "jemalloc"):
        assert use_arrow_pool(backend) == backend
        assert pa.default_memory_pool().backend_name == backend
        before = pa.default_memory_pool().bytes_allocated()
        values = pa.array(range(100_000), type=pa.int64())  # allocated from the default pool
        assert pa.default_memory_pool().bytes_allocated() >= before + 800_000
        del values
    with pytest.raises(ValueError, match="unknown Arrow memory pool 'tcmalloc'"):
        use_arrow_pool("tcmalloc")


def test_a_pyarrow_without_the_pool_keeps_its_own_and_says_so(restored_pool: None, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    use_arrow_pool("mimalloc")

    def missing() -> pa.MemoryPool:
        raise NotImplementedError("jemalloc support is not enabled")

    monkeypatch.setattr(pa, "jemalloc_memory_pool", missing)
    with caplog.at_level(logging.WARNING, logger="core.memory"):
        assert use_arrow_pool("jemalloc") == "mimalloc"
    assert pa.default_memory_pool().backend_name == "mimalloc"
    assert "no jemalloc memory pool" in caplog.text


def test_the_default_is_jemalloc_and_a_local_cluster_s_workers_get_the_pool() -> None:
    """The workers are other processes: the pool goes to them in their environment, which Arrow reads
    when a worker first allocates."""
    from distributed import Client, LocalCluster

    assert ExecutorSettings().arrow_memory_pool == "jemalloc"
    kwargs = ExecutorSettings(kind="dask", local_cluster_workers=1, arrow_memory_pool="system").task_runner_kwargs(
        "http://127.0.0.1:4200/api")["cluster_kwargs"]
    assert kwargs["env"] == {"ARROW_DEFAULT_MEMORY_POOL": "system", "PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    with LocalCluster(**kwargs | {"dashboard_address": None}) as cluster, Client(cluster) as client:
        pools = client.run(lambda: pa.default_memory_pool().backend_name)
    assert list(pools.values()) == ["system"]


def test_an_empty_like_frame_keeps_the_columns_and_dtypes_and_none_of_the_rows() -> None:
    """``frame.iloc[:0]`` keeps every buffer of ``frame`` alive (and so does its copy, for Arrow-backed
    strings): a table that empties a frame that way still holds all of its rows."""
    import numpy as np
    import pandas as pd

    from core.memory import empty_like
    from tests.buffers import held_bytes

    n = 50_000
    frame = pd.DataFrame({
        "user_id": pd.array([f"user-{i:08d}" for i in range(n)], dtype="str"), "count": np.arange(n),
        "rate": np.linspace(0, 1, n), "kind": pd.Categorical(["a", "b"] * (n // 2)),
        "ts": pd.date_range("2026-01-01", periods=n, freq="s", tz="UTC"), "n": pd.array(range(n), dtype="Int64"),
    })
    assert held_bytes(frame.iloc[:0]) > 1_000_000 and held_bytes(frame.iloc[:0].copy()) > 500_000
    empty = empty_like(frame)
    assert len(empty) == 0 and list(empty.columns) == list(frame.columns)
    assert empty.dtypes.to_dict() == frame.dtypes.to_dict()
    assert held_bytes(empty) < 1_000
    assert pd.concat([empty, frame.iloc[:3]], ignore_index=True).dtypes.to_dict() == frame.dtypes.to_dict()
