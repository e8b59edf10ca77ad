"""`rankloop backfill` over missed weekly windows: one MLflow run per window, in window order."""

from __future__ import annotations

from datetime import date

import pytest

from .conftest import BACKFILL_ENDS, Backfilled

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _client(backfilled: Backfilled):
    from mlflow import MlflowClient

    uri = f"sqlite:///{backfilled.home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_three_missed_windows_become_three_runs_in_window_order(backfilled: Backfilled) -> None:
    assert backfilled.exit_code == 0, backfilled.output
    assert f"3 weekly window(s) ending {', '.join(BACKFILL_ENDS)}" in backfilled.output
    client = _client(backfilled)
    experiment = client.get_experiment_by_name("rankloop")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`rankloop.completed` = 'true'",
                              order_by=["attributes.start_time ASC"])
    ends = [date.fromisoformat(r.data.tags["rankloop.window_end"][:10]).isoformat() for r in runs]
    assert ends == list(BACKFILL_ENDS)
    assert all("ndcg_at_10" in r.data.metrics for r in runs)
    versions = {int(v.version): v.run_id for v in client.search_model_versions("name = 'rankloop.ranker'")}
    assert [versions[v] for v in sorted(versions)] == [r.info.run_id for r in runs]


def test_windows_before_the_first_monday_are_not_run(backfilled: Backfilled) -> None:
    from rankloop.ops import weekly_ends

    # --from 2026-10-27 is a Tuesday: the first window ends the next Monday.
    assert weekly_ends(date(2026, 10, 27), date(2026, 11, 16)) == [date.fromisoformat(d) for d in BACKFILL_ENDS]
    assert "2026-10-26" not in backfilled.output
