"""The drift section of a weekly run's page in the MLflow UI (`rankloop ui`), in headless Chromium:
the run's Artifacts tab shows drift/drift.png beside drift.json.

RANKLOOP_UPDATE_DOCS_SCREENSHOT=1 also copies the screenshot to docs/mlflow-drift.png.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def ui(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with open(log, "wb") as out:
        child = subprocess.Popen([str(Path(sys.executable).parent / "rankloop"), "ui", "--port", str(port), "--home",
                                  str(trained_home)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=20)


def test_the_run_page_shows_the_drift_chart(ui: str, trained_home: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    uri = f"sqlite:///{trained_home / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name("rankloop")
    run = client.search_runs([experiment.experiment_id], "tags.`rankloop.completed` = 'true'")[0]
    shot = tmp_path / "mlflow-drift.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 860})
            page.set_default_timeout(60_000)
            page.goto(f"{ui}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}/artifacts/drift/drift.png")
            page.get_by_text("drift.json").wait_for()
            image = page.locator("img[alt='drift/drift.png']").first  # MLflow shows the artifact as a blob
            image.wait_for()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            width = image.evaluate("img => img.naturalWidth")
            page.get_by_role("button", name="Toggle sidebar").click()
            close = page.get_by_role("button", name="Close")
            if close.count():
                close.first.click()
            page.wait_for_timeout(500)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert width >= 1000  # the 13-inch-wide chart, not a broken-image icon
    assert shot.stat().st_size > 30_000
    if os.environ.get("RANKLOOP_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "mlflow-drift.png")
