"""`rankloop ui` in a real browser: the backfilled weekly runs and their test NDCG@10 in MLflow's
runs table. Headless Debian Chromium (`.ci/ensure-browser` installs it) driven by playwright.

RANKLOOP_UPDATE_DOCS_SCREENSHOT=1 also copies the screenshot to docs/mlflow-ui.png.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import BACKFILL_ENDS, BIN, REPO, Backfilled, Child, child_env, free_port, wait_http

pytestmark = [pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 60_000
COLUMNS_SHOWN = ("ndcg_at_10", "popularity_ndcg_at_10", "rankloop.window_end", "rankloop.verdict")
COLUMNS_HIDDEN = ("Dataset", "Source")


@pytest.fixture(scope="module")
def ui_url(backfilled: Backfilled, spawn: Callable[..., Child]) -> Iterator[str]:
    assert backfilled.exit_code == 0, backfilled.output
    port = free_port()
    child = spawn("rankloop-ui", [str(BIN / "rankloop"), "ui", "--port", str(port), "--home", str(backfilled.home)],
                  child_env())
    try:
        wait_http(f"http://127.0.0.1:{port}/health", child)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.stop()


def _expected(backfilled: Backfilled) -> tuple[str, dict[str, float]]:
    """The experiment id and each window end's ndcg_at_10, from the MLflow store itself."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{backfilled.home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("rankloop")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`rankloop.completed` = 'true'")
    return experiment.experiment_id, {r.data.tags["rankloop.window_end"][:10]: r.data.metrics["ndcg_at_10"] for r in runs}


def _toggle_columns(page, names: tuple[str, ...]) -> None:
    """Tick (or untick) ``names`` in the runs table's "Columns" tree."""
    page.get_by_role("button", name="Columns").click()
    for name in names:
        title = page.locator(".du-bois-light-tree-title").filter(has_text=re.compile(f"^{re.escape(name)}$")).first
        title.dispatch_event("click")  # the tree is taller than the window: no scrolling needed
    page.keyboard.press("Escape")


def _table(page) -> dict[str, str]:
    """Window end -> the ndcg_at_10 text of each row of the runs table (its scrolling part)."""
    out = {}
    for row in page.locator(".ag-center-cols-container .ag-row").all():
        end = row.locator('[col-id="tags.`rankloop.window_end`"]').inner_text().strip()
        out[end[:10]] = row.locator('[col-id="metrics.`ndcg_at_10`"]').inner_text().strip()
    return out


def test_runs_table_shows_each_window_with_its_ndcg(ui_url: str, backfilled: Backfilled, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    experiment_id, expected = _expected(backfilled)
    assert sorted(expected) == list(BACKFILL_ENDS)
    shot = tmp_path / "mlflow-ui.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 560})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{ui_url}/#/experiments/{experiment_id}/runs")
            page.get_by_text(f"{len(expected)} matching runs").wait_for()
            _close_side_panels(page)
            _toggle_columns(page, COLUMNS_SHOWN + COLUMNS_HIDDEN)
            page.locator('.ag-header-cell[col-id="metrics.`ndcg_at_10`"]').wait_for()
            page.wait_for_function("n => document.querySelectorAll('.ag-center-cols-container .ag-row').length === n",
                                   arg=len(expected))
            shown = _table(page)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert sorted(shown) == sorted(expected)
    for end, value in expected.items():
        assert float(shown[end]) == pytest.approx(value, abs=1e-9), end
    assert shot.stat().st_size > 10_000
    if os.environ.get("RANKLOOP_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "mlflow-ui.png")


def _close_side_panels(page) -> None:
    """Fold MLflow's navigation and close its assistant panel (when shown) to give the table room."""
    page.get_by_role("button", name="Toggle sidebar").click()
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
