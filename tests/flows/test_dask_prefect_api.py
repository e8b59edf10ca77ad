"""The workers of the LocalCluster a Dask run starts report to the flow's own Prefect API.

On the embedded default the flow talks to a temporary Prefect server that only its process knows
(no ``PREFECT_API_URL``). Until stop 33 each worker then started a temporary server of its own on its
first task, against the same database (seen in the bench's log: three servers for one run)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, os
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from core.settings import Settings
    from flows.executors import dask_task_runner

    @task
    def seen_by_worker():
        with get_client(sync_client=True) as client:
            return {"pid": os.getpid(), "env": os.environ.get("PREFECT_API_URL"), "api": str(client.api_url)}

    @flow
    def outer():
        settings = Settings()
        @flow(task_runner=dask_task_runner(settings))
        def inner():
            return seen_by_worker.submit().result()
        with get_client(sync_client=True) as client:
            mine = str(client.api_url)
        return {"flow": mine, "flow_pid": os.getpid(), "worker": inner()}

    print("RESULT " + json.dumps(outer()))
""")


def test_local_cluster_workers_use_the_flows_temporary_api(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "RANKLOOP_HOME": str(tmp_path / "home"),
            "RANKLOOP_EXECUTOR__KIND": "dask", "RANKLOOP_EXECUTOR__LOCAL_CLUSTER_WORKERS": "1",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    worker = result["worker"]
    assert worker["pid"] != result["flow_pid"]  # the task ran in a worker process
    assert worker["api"].rstrip("/") == result["flow"].rstrip("/") == worker["env"].rstrip("/")
    assert (out.stdout + out.stderr).count("Starting temporary server") == 1  # the flow's only
