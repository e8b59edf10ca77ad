"""Fixtures for the data-contract tests: a window, seeded clean tables, lenient settings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from core.schema import INTERACTION_SCHEMA
from data_contracts import ContractSettings
from data_contracts.synthetic import synthetic_interactions

WINDOW = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 2, 9, tzinfo=UTC))


@pytest.fixture
def window() -> tuple[datetime, datetime]:
    return WINDOW


@pytest.fixture
def settings() -> ContractSettings:
    return ContractSettings(min_rows=10, max_quarantine_fraction=0.5)


@pytest.fixture
def clean() -> pa.Table:
    """200 valid canonical rows in WINDOW."""
    return synthetic_interactions(200, window=WINDOW, seed=7)


@pytest.fixture
def with_rows(clean: pa.Table) -> Callable[..., pa.Table]:
    """Append rows (dicts overriding a copy of clean row 1, ts 1 us apart) to the clean table."""

    def build(*changes: dict[str, Any]) -> pa.Table:
        base = clean.slice(1, 1).to_pylist()[0]
        # distinct ts: copies of one row would otherwise be duplicate events (same user, item, type, ts)
        rows = [{**base, "event_id": f"x{i}", "ts": base["ts"] + timedelta(microseconds=i + 1), **c}
                for i, c in enumerate(changes)]
        return pa.concat_tables([clean, pa.Table.from_pylist(rows, schema=INTERACTION_SCHEMA)])

    return build
