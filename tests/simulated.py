"""A simulated window as the validate stage leaves it, for tests that start at the labels + features stage."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rankloop import stages
from rankloop.simulator import SimulationConfig, items_table, make_world, simulate, users_table


def stage_inputs(config: SimulationConfig, folder: Path, *, days: int = 35,
                 catalog: bool = True) -> tuple[stages.Validated, stages.Extracted]:
    """The last ``days`` days before ``config.end`` of the simulated log written to ``folder/events.parquet``
    (all valid), and the extract that names it, with the simulator's item and user tables unless ``catalog``
    is false."""
    log = pa.concat_tables(list(simulate(config)))
    ts = log.column("ts")
    path = folder / "events.parquet"
    pq.write_table(log.filter(pc.greater_equal(ts, pa.scalar(config.end - timedelta(days=days), ts.type))), path)
    rows = pq.read_metadata(path).num_rows
    world = make_world(config) if catalog else None
    validated = stages.Validated(events_path=path, rows_in=rows, rows_valid=rows, rows_quarantined=0,
                                 quarantine_path=None, suite_name="test", suite_version="0")
    extracted = stages.Extracted(snapshot_path=path, digest="test-digest", rows=rows, reused=False, source="simulator",
                                 items=items_table(world) if world else None, users=users_table(world) if world else None)
    return validated, extracted
