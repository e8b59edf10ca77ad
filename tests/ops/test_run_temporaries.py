"""What a killed writer leaves half-written in a run folder is removed by the next run's healing, and
never in a folder whose owner is alive (real SIGKILLed child processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from rankloop import recovery

# A child that starts a write the way the contract's key buckets and atomic writes do, then is killed.
_KILLED_WRITER = """
import os, signal, sys, tempfile
from pathlib import Path
from core.atomic import atomic_write

folder = Path(sys.argv[1])
spill = tempfile.mkdtemp(dir=folder, prefix=".keys.", suffix=".tmp")
(Path(spill) / "bucket-00000.arrow").write_bytes(b"x" * 4096)

def write(tmp):
    tmp.write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(folder / "valid.parquet", write)
"""


def _kill_a_writer(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(folder)], capture_output=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]


def test_the_temporaries_of_a_killed_run_are_swept_and_a_live_runs_are_not(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    dead, live = runs / "2026-11-16" / "20261116T010000Z", runs / "2026-11-16" / "20261116T020000Z"
    _kill_a_writer(dead / "data")
    _kill_a_writer(live / "data")
    recovery.claim(live, None)  # this process owns it: alive
    left = sorted(p.name.split(".")[1] for p in (dead / "data").glob(".*.tmp"))
    assert left == ["keys", "valid"], left  # what the kill left: the spill folder and the half-written file
    (dead / "data" / "labels.parquet").write_bytes(b"kept")  # a finished file of the failed run

    removed = recovery._sweep_temporaries(runs)

    assert len(removed) == 2 and all(str(dead) in r for r in removed), removed
    assert list((dead / "data").glob(".*.tmp")) == []
    assert (dead / "data" / "labels.parquet").read_bytes() == b"kept"  # kept for inspection
    assert len(list((live / "data").glob(".*.tmp"))) == 2  # a live owner's folder is never touched
    assert recovery._sweep_temporaries(runs) == []  # nothing left to do the second time
    recovery.release(live)
    assert len(recovery._sweep_temporaries(runs)) == 2
    assert not any(p.name.endswith(".tmp") for p in runs.rglob("*")), list(runs.rglob("*"))
    assert os.path.isdir(live / "data")


# A child that runs the drift report's events part and is killed while it reads its buckets of requests back.
_KILLED_DRIFT = """
import os, signal, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.config.policy import RewardSettings
from rankloop import drift_events

path = Path(sys.argv[1]) / "events.parquet"
start = datetime(2026, 3, 9, tzinfo=UTC)
n = 60
pq.write_table(pa.table({
    "user_id": [f"u{i % 7}" for i in range(n)], "item_id": [f"i{i % 5}" for i in range(n)],
    "event_type": ["impression" if i % 3 else "click" for i in range(n)],
    "ts": pa.array([start + timedelta(hours=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
    "request_id": [f"r{i // 3}" for i in range(n)], "value": pa.nulls(n, pa.float64())}), path)
drift_events._bucket = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
drift_events.event_drift(path, start + timedelta(days=4), 2, RewardSettings(), bucket_rows=5)
"""


def test_a_drift_report_killed_mid_bucket_leaves_a_folder_the_next_run_sweeps(tmp_path: Path) -> None:
    """The drift report's request buckets live in a ``.drift.*.tmp`` folder beside the events: SIGKILLed while
    it reads them back, that folder is what is left, and the next healing removes it."""
    runs = tmp_path / "runs"
    data = runs / "2026-11-16" / "20261116T010000Z" / "data"
    data.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", _KILLED_DRIFT, str(data)], capture_output=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    left = list(data.glob(".drift.*.tmp"))
    assert len(left) == 1 and len(list(left[0].glob("bucket-*.arrow"))) > 1, list(data.rglob("*"))
    removed = recovery._sweep_temporaries(runs)
    assert removed == [str(left[0])]
    assert sorted(p.name for p in data.iterdir()) == ["events.parquet"]
