"""A full disk ends in one line that names the stage, the path and "no space left on device"; once
space is freed the next run completes. The data home is a small tmpfs in a private mount namespace
(``unshare -m``: needs root, as the CI machine runs the tests)."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from core.errors import Reason, StorageError

from .conftest import BIN, PrefectServer, make_demo_home

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def test_a_stage_that_hits_a_full_disk_says_where_and_what_to_delete(tmp_path: Path) -> None:
    from flows.tasks import stage_task

    def write(settings: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "runs" / "x" / "data" / "events.parquet"))

    with pytest.raises(StorageError) as info:
        stage_task(write, "validate").fn(object())
    error = info.value
    assert error.reason is Reason.NO_SPACE and error.exit_code == 10
    line = error.one_line()
    assert "stage validate" in line and "no space left on device" in line and "events.parquet" in line
    assert "<home>/runs" in line  # what can go


def test_a_connection_error_stays_a_connection_error(tmp_path: Path) -> None:
    from flows.retry import is_transient
    from flows.tasks import stage_task

    def connect(settings: object) -> None:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    with pytest.raises(ConnectionRefusedError) as info:
        stage_task(connect, "extract").fn(object())
    assert is_transient(info.value)  # still retried as transient, not reported as a storage problem


def test_a_full_data_home_fails_one_line_and_the_next_run_heals(tmp_path: Path, prefect_server: PrefectServer) -> None:
    assert shutil.which("unshare"), "util-linux unshare is needed"
    source = tmp_path / "source"
    make_demo_home(source)
    home = tmp_path / "home"
    home.mkdir()
    rankloop = (f"{BIN / 'rankloop'} train --home {home} --source sqlite:///{source / 'interactions.db'} "
                "--end 2026-11-16 --json")
    script = (f"mount -t tmpfs -o size=8m tmpfs {home} || exit 99\n"
              f"{rankloop} > {tmp_path}/full.out 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc\n"
              f"mount -o remount,size=256m {home}\n"
              f"{rankloop} > {tmp_path}/freed.out 2> {tmp_path}/freed.err; echo $? > {tmp_path}/freed.rc\n")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], env=prefect_server.env(RANKLOOP_RANKER__N_ESTIMATORS="40"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode != 99, f"cannot mount a tmpfs here (root and unshare -m needed): {done.stderr}"
    full_err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "10", full_err
    lines = full_err.splitlines()
    assert len(lines) == 1 and "Traceback" not in full_err, full_err
    assert lines[0].startswith("error (no_space): ") and "no space left on device" in lines[0]
    assert str(home) in lines[0] and "<home>/runs" in lines[0], lines[0]
    freed_err = (tmp_path / "freed.err").read_text()
    assert (tmp_path / "freed.rc").read_text().strip() == "0", freed_err
    assert '"status": "completed"' in (tmp_path / "freed.out").read_text()
