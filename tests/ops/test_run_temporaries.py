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
