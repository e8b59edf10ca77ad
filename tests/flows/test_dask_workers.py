"""Before the Dask training pins its train days to the workers, no worker may be paused (no cluster needed)."""

from __future__ import annotations

import pytest

from rankloop import distributed


class _Cluster:
    """A client stand-in: workers whose status changes after some polls; ``run`` calls are recorded."""

    def __init__(self, statuses: list[dict[str, str]]) -> None:
        self.statuses, self.ran = statuses, []

    def run(self, fn: object) -> None:
        self.ran.append(fn)

    def scheduler_info(self, n_workers: int = 5) -> dict:
        now = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"workers": {a: {"status": s, "memory_limit": 8 * 2**30, "metrics": {"memory": 7.4 * 2**30}}
                            for a, s in now.items()}}


def test_training_waits_for_a_paused_worker_and_names_it_if_it_stays_paused() -> None:
    """The training pins train days to every worker; a worker paused over its memory threshold would
    stall it for good (stop 31's 10M run). Workers hand memory back first; a pause that passes is waited
    out; one that stays ends the run naming the worker, its memory and what to do."""
    from core.errors import Reason, TrainingError
    from core.memory import release_memory

    passing = _Cluster([{"tcp://a": "running", "tcp://b": "paused"}, {"tcp://a": "running", "tcp://b": "running"}])
    assert distributed.ready_workers(passing, timeout_s=5, poll_s=0.01) == ["tcp://a", "tcp://b"]
    assert passing.ran == [release_memory]

    stuck = _Cluster([{"tcp://a": "running", "tcp://b": "paused"}])
    with pytest.raises(TrainingError) as caught:
        distributed.ready_workers(stuck, timeout_s=0.05, poll_s=0.01)
    assert caught.value.reason == Reason.TRAINING
    assert "tcp://b (7.4 of 8.0 GiB)" in str(caught.value) and "tcp://a" not in str(caught.value)
    assert "RANKLOOP_EXECUTOR__MEMORY_LIMIT" in caught.value.hint
