"""Fixtures for the sources tests: real PostgreSQL/MariaDB URIs, unique table names, seeded tables."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from core.schema import INTERACTION_SCHEMA

PG_URI = os.environ.get("RANKLOOP_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URI = os.environ.get("RANKLOOP_TEST_MYSQL_URI", "mysql://root@127.0.0.1:3306/test")
T0 = datetime(2025, 3, 3, tzinfo=UTC)
START = T0 + timedelta(hours=10)
END = T0 + timedelta(hours=20)


@pytest.fixture
def table_name() -> str:
    return f"rl_src_{uuid.uuid4().hex[:10]}"


def drop_sql_table(uri: str, name: str) -> None:
    """Drop a test table from PostgreSQL or MariaDB."""
    from sources import connect
    from sources.uri import parse_uri

    src = parse_uri(uri)
    if src.kind == "postgresql":
        conn = connect.connect_postgres(src)
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{name}"')
            conn.commit()
    elif src.kind == "mysql":
        conn = connect.connect_mysql(src)
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")


@pytest.fixture
def pg_table(table_name: str) -> Iterator[str]:
    yield table_name
    drop_sql_table(PG_URI, table_name)


@pytest.fixture
def mysql_table(table_name: str) -> Iterator[str]:
    yield table_name
    drop_sql_table(MYSQL_URI, table_name)


def canonical_rows(n: int = 600, *, ms_precision: bool = False) -> pa.Table:
    """``n`` canonical interactions every 3 minutes from T0, with rows exactly at START and END."""
    step_us = 180_000_000
    base = int(T0.timestamp()) * 1_000_000
    ts = base + np.arange(n, dtype=np.int64) * step_us + (0 if ms_precision else 7)
    ts[200], ts[400] = int(START.timestamp()) * 1_000_000, int(END.timestamp()) * 1_000_000
    rng = np.random.default_rng(7)
    cols = {f.name: pa.nulls(n, f.type) for f in INTERACTION_SCHEMA}
    cols.update(
        event_id=pa.array([f"e{i:05d}" for i in range(n)]),
        user_id=pa.array([f"u{i % 17}" for i in range(n)]),
        item_id=pa.array([f"i{i % 31}" for i in range(n)]),
        event_type=pa.array(np.array(["impression", "click", "dwell", "mystery_event"])[np.arange(n) % 4]),
        value=pa.array(np.where(np.arange(n) % 3 == 0, np.nan, rng.random(n) * 100), from_pandas=True),
        ts=pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
        session_id=pa.array([f"s{i // 10}" if i % 5 else None for i in range(n)]),
        position=pa.array(np.arange(n) % 10, pa.int32()),
        propensity=pa.array(rng.random(n)),
        action_id=pa.array(np.arange(n) % 27, pa.int32()),
        device=pa.array(np.array(["mobile", "desktop", "tv"])[np.arange(n) % 3]),
        trait_openness=pa.array(rng.random(n)),
    )
    return pa.table(cols, schema=INTERACTION_SCHEMA)


def canonical(snapshot: pa.Table) -> pa.Table:
    """A snapshot's canonical columns in INTERACTION_SCHEMA, after checking every value converted."""
    from core.schema import SOURCE_ERRORS

    assert snapshot.column(SOURCE_ERRORS).null_count == snapshot.num_rows, snapshot.column(SOURCE_ERRORS).drop_null()
    return snapshot.select(INTERACTION_SCHEMA.names).cast(INTERACTION_SCHEMA)


def in_window(table: pa.Table, start: datetime = START, end: datetime = END) -> pa.Table:
    """Rows with start <= ts < end, ordered by (ts, event_id), as the extractor returns them."""
    import pyarrow.compute as pc

    kind = pa.timestamp("us", tz="UTC")
    mask = pc.and_(pc.greater_equal(table["ts"], pa.scalar(start, kind)), pc.less(table["ts"], pa.scalar(end, kind)))
    return table.filter(mask).sort_by([("ts", "ascending"), ("event_id", "ascending")])
