"""write_table storage conventions on each database, and argument checks."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from sources import connect, write_table
from sources.uri import parse_uri

from .conftest import MYSQL_URI, PG_URI

TS = pa.timestamp("us", tz="UTC")


def _table() -> pa.Table:
    return pa.table({
        "k": ["a", 'q"uo\\te,\nx', None],
        "ts": pa.array([1_700_000_000_123_456, 0, None], pa.int64()).cast(TS),
        "v": [1.5, None, -2.0],
        "emb": pa.array([[0.5, 0.25], None, []], pa.list_(pa.float32())),
    })


def test_sqlite_stores_micros_and_json(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'w.db'}"
    assert write_table(uri, "t", _table(), indexes=[("ts",)]) == 3
    assert write_table(uri, "t", _table(), mode="append") == 3
    db = sqlite3.connect(tmp_path / "w.db")
    rows = db.execute("SELECT k, ts, v, emb FROM t").fetchall()
    assert len(rows) == 6
    assert rows[0] == ("a", 1_700_000_000_123_456, 1.5, "[0.5,0.25]")
    assert rows[1][0] == 'q"uo\\te,\nx' and rows[1][3] is None and rows[2][3] == "[]"
    assert db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall() == [("ix_t_ts",)]


@pytest.mark.postgres
def test_postgres_stores_timestamptz(pg_table: str) -> None:
    write_table(PG_URI, pg_table, _table(), indexes=[("ts",), ("k", "ts")])
    conn = connect.connect_postgres(parse_uri(PG_URI))
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(f"SELECT data_type FROM information_schema.columns WHERE table_name = '{pg_table}' AND column_name = 'ts'")
        assert cur.fetchall() == [("timestamp with time zone",)]
        cur.execute(f'SELECT k, ts, emb FROM "{pg_table}"')
        got = cur.fetch_arrow_table()
    assert got.column("ts").cast(TS).to_pylist() == _table().column("ts").to_pylist()
    assert json.loads(got.column("emb")[0].as_py()) == [0.5, 0.25]


@pytest.mark.mariadb
def test_mariadb_stores_datetime6_utc(mysql_table: str) -> None:
    write_table(MYSQL_URI, mysql_table, _table(), indexes=[("ts",)])
    write_table(MYSQL_URI, mysql_table, _table(), mode="append")
    conn = connect.connect_mysql(parse_uri(MYSQL_URI))
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(f"SELECT k, ts, v, emb FROM `{mysql_table}`")
        rows = cur.fetchall()
        cur.execute(f"SHOW CREATE TABLE `{mysql_table}`")
        ddl = cur.fetchall()[0][1]
    assert len(rows) == 6 and "datetime(6)" in ddl
    assert rows[0][1].isoformat() == "2023-11-14T22:13:20.123456"
    assert rows[1][0] == 'q"uo\\te,\nx' and rows[2] == (None, None, -2.0, "[]")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"table_name": "bad name"}, ValueError), ({"mode": "upsert"}, ValueError),
     ({"indexes": [("nope",)]}, ValueError), ({"table": {"k": [1]}}, TypeError)],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict, error: type) -> None:
    args = {"uri": f"sqlite:///{tmp_path / 'w.db'}", "table_name": "t", "table": _table(), **kwargs}
    with pytest.raises(error):
        write_table(**args)
