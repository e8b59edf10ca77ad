"""The window is pushed down type-correctly on every way a table stores time, or the mapping is refused.

Each table holds rows on the first day of the window (where a text comparison against an ISO bound
with 'T' used to lose them), rows exactly at start (in) and at end (out), and rows outside. The
snapshot must hold exactly the window's rows, and its count must equal the source's COUNT(*).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from core.errors import Reason, SourceError
from sources import connect, extract_snapshot, load_snapshot, write_table
from sources.uri import parse_uri

from .conftest import MYSQL_URI, PG_URI

START, END = datetime(2026, 10, 27, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
MOMENTS = [START - timedelta(seconds=1), START, START + timedelta(hours=5), START + timedelta(hours=23, minutes=59),
           START + timedelta(days=3, hours=12), END - timedelta(seconds=1), END, END + timedelta(days=1)]
IN_WINDOW = [m for m in MOMENTS if START <= m < END]


def _mapping(tmp_path: Path, table: str, unit: str, fmt: str | None = None) -> str:
    path = tmp_path / f"ts_{unit}.yaml"
    ts = f"{{from: at, unit: {unit}{', format: ' + repr(fmt) if fmt else ''}}}"
    path.write_text(f"name: ts_{unit}\ntable: {table}\ncolumns:\n  event_id: {{from: id}}\n  user_id: {{const: u}}\n"
                    f"  item_id: {{const: i}}\n  event_type: {{const: view}}\n  ts: {ts}\n")
    return str(path)


def _rows(at: pa.Array) -> pa.Table:
    return pa.table({"id": pa.array(range(len(MOMENTS)), pa.int64()), "at": at})


def _assert_window_exact(tmp_path: Path, uri: str, mapping: str, expected: list[datetime] = IN_WINDOW) -> None:
    snap = extract_snapshot(uri, mapping, START, END, tmp_path / "snaps", retries=0)
    got = load_snapshot(snap.path)
    assert got.column("ts").to_pylist() == expected  # first day included, end excluded, nothing shifted
    assert snap.manifest["counts"]["source_rows"] == snap.rows == len(expected)
    assert got.column("source_errors").null_count == got.num_rows


def _text(moments: list[datetime], layout: str = "%Y-%m-%d %H:%M:%S") -> pa.Array:
    return pa.array([m.strftime(layout) for m in moments], pa.string())


def _epoch(moments: list[datetime], per_second: int) -> pa.Array:
    return pa.array([int(m.timestamp()) * per_second for m in moments], pa.int64())


@pytest.mark.postgres
@pytest.mark.parametrize(("unit", "column"), [
    ("timestamp", lambda: _text(MOMENTS)),  # TEXT 'YYYY-MM-DD HH:MM:SS'
    ("timestamp", lambda: _text(MOMENTS, "%Y-%m-%dT%H:%M:%S")),  # TEXT ISO with T
    ("s", lambda: _epoch(MOMENTS, 1)),  # BIGINT epoch seconds
    ("ms", lambda: _epoch(MOMENTS, 1000)),  # BIGINT epoch milliseconds
    ("us", lambda: _epoch(MOMENTS, 1_000_000)),
    ("timestamp", lambda: pa.array(MOMENTS, pa.timestamp("us", tz="UTC"))),  # timestamptz
    ("timestamp", lambda: pa.array([m.replace(tzinfo=None) for m in MOMENTS], pa.timestamp("us"))),  # timestamp
])
def test_postgres_ts_storage(tmp_path: Path, pg_table: str, unit: str, column) -> None:
    write_table(PG_URI, pg_table, _rows(column()), indexes=[("at",)])
    _assert_window_exact(tmp_path, PG_URI, _mapping(tmp_path, pg_table, unit))


@pytest.mark.mariadb
@pytest.mark.parametrize(("unit", "ddl", "values"), [
    ("timestamp", "VARCHAR(19)", lambda: [m.strftime("%Y-%m-%d %H:%M:%S") for m in MOMENTS]),
    ("timestamp", "DATETIME", lambda: [m.replace(tzinfo=None) for m in MOMENTS]),
    ("timestamp", "DATETIME(6)", lambda: [m.replace(tzinfo=None) for m in MOMENTS]),
    ("s", "INT", lambda: [int(m.timestamp()) for m in MOMENTS]),
    ("ms", "BIGINT", lambda: [int(m.timestamp()) * 1000 for m in MOMENTS]),
])
def test_mariadb_ts_storage(tmp_path: Path, mysql_table: str, unit: str, ddl: str, values) -> None:
    conn = connect.connect_mysql(parse_uri(MYSQL_URI))
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(f"CREATE TABLE `{mysql_table}` (id BIGINT, at {ddl}, INDEX ix_at (at))")
        cur.executemany(f"INSERT INTO `{mysql_table}` VALUES (%s, %s)", list(enumerate(values())))
    _assert_window_exact(tmp_path, MYSQL_URI, _mapping(tmp_path, mysql_table, unit))


@pytest.mark.parametrize(("unit", "column", "fmt"), [
    ("timestamp", lambda: _text(MOMENTS), None),
    ("timestamp", lambda: _text(MOMENTS, "%Y/%m/%d %H:%M"), "%Y/%m/%d %H:%M"),  # a layout of its own
    ("s", lambda: _epoch(MOMENTS, 1), None),
    ("auto", lambda: _epoch(MOMENTS, 1_000_000), None),
])
def test_sqlite_ts_storage(tmp_path: Path, unit: str, column, fmt: str | None) -> None:
    uri = f"sqlite:///{tmp_path / 'ts.db'}"
    write_table(uri, "events", _rows(column()))
    stored = [m.replace(second=0) for m in MOMENTS] if fmt else MOMENTS  # the layout keeps minutes only
    _assert_window_exact(tmp_path, uri, _mapping(tmp_path, "events", unit, fmt), [m for m in stored if START <= m < END])


def test_parquet_text_ts(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(_rows(_text(MOMENTS)), tmp_path / "events.parquet")
    _assert_window_exact(tmp_path, str(tmp_path / "events.parquet"), _mapping(tmp_path, "events", "timestamp"))


def test_mongomock_epoch_ms_ts(tmp_path: Path) -> None:
    import mongomock

    from sources import write_collection

    docs = [{"id": i, "at": int(m.timestamp()) * 1000} for i, m in enumerate(MOMENTS)]
    with mongomock.patch(servers=(("mongo.ts", 27017),)):
        uri = "mongodb://mongo.ts:27017/app?collection=events"
        write_collection(uri, "events", docs)
        _assert_window_exact(tmp_path, uri, _mapping(tmp_path, "events", "ms"))


@pytest.mark.postgres
@pytest.mark.parametrize(("unit", "column", "says"), [
    ("ms", lambda: pa.array(MOMENTS, pa.timestamp("us", tz="UTC")), "declare `unit: timestamp`"),
    ("timestamp", lambda: _epoch(MOMENTS, 1), "declare their epoch unit"),
    ("s", lambda: pa.array([str(int(m.timestamp())) for m in MOMENTS]), "do not sort as numbers"),
])
def test_a_unit_the_stored_type_cannot_be_compared_with_is_refused(tmp_path: Path, pg_table: str, unit: str,
                                                                     column, says: str) -> None:
    write_table(PG_URI, pg_table, _rows(column()))
    with pytest.raises(SourceError) as info:
        extract_snapshot(PG_URI, _mapping(tmp_path, pg_table, unit), START, END, tmp_path / "snaps", retries=0)
    assert info.value.reason is Reason.BAD_MAPPING and info.value.exit_code == 2
    assert "'at'" in str(info.value) and says in str(info.value) and info.value.hint


def test_a_day_first_text_layout_is_refused_when_the_mapping_loads(tmp_path: Path) -> None:
    from sources.mapping import load_mapping

    with pytest.raises(SourceError) as info:
        load_mapping(_mapping(tmp_path, "events", "timestamp", "%d/%m/%Y %H:%M"))
    assert info.value.reason is Reason.BAD_MAPPING and "text order is time order" in str(info.value)


@pytest.mark.postgres
def test_rows_read_that_differ_from_the_source_count_fail_loudly(tmp_path: Path, pg_table: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from sources import sql_reader

    write_table(PG_URI, pg_table, _rows(_text(MOMENTS)))
    real = sql_reader.count_rows
    monkeypatch.setattr(sql_reader, "count_rows", lambda read: real(read) + 1)  # one row the read will not see
    with pytest.raises(SourceError) as info:
        extract_snapshot(PG_URI, _mapping(tmp_path, pg_table, "timestamp"), START, END, tmp_path / "snaps", retries=0)
    assert info.value.reason is Reason.SOURCE_COUNT and not info.value.transient
    assert info.value.details == {"part": f"table {pg_table!r}", "rows_read": len(IN_WINDOW),
                                  "source_rows": len(IN_WINDOW) + 1}
    assert not list((tmp_path / "snaps").glob("*/data.parquet"))  # nothing published
