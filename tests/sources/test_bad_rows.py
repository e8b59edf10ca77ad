"""Every bad row reaches the contract and is quarantined with its reason; nothing crashes, nothing is lost.

Real PostgreSQL, MariaDB and SQLite tables (and mongomock) holding one row per kind of defect. For
each: the snapshot holds every row of the window (its count equals the source's COUNT(*)), the
contract quarantines each bad row with its reason, and clean + quarantined = extracted = source count.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

import mongomock
import pyarrow as pa
import pytest

from data_contracts import ContractSettings, check_interactions
from sources import connect, extract_snapshot, load_snapshot, write_collection, write_table
from sources.uri import parse_uri

from .conftest import MYSQL_URI, PG_URI

START, END = datetime(1969, 6, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 30, tzinfo=UTC)
SETTINGS = ContractSettings(min_rows=1, max_quarantine_fraction=1.0)
LONG = "u" * 10_000
# event id -> (user_id, item_id, value text, propensity, ts text, reasons expected)
ROWS: dict[str, tuple] = {
    "ok-1": ("u1", "i1", "12.5", 0.5, "2026-10-27 00:00:00", None),
    "ok-2": ("u2", "i2", None, None, "2026-10-28 09:30:00", None),
    "null-user": (None, "i1", "1", 0.5, "2026-10-28 10:00:00", "null_user_id"),
    "null-item": ("u1", None, "1", 0.5, "2026-10-28 10:00:01", "null_item_id"),
    "empty-user": ("", "i1", "1", 0.5, "2026-10-28 10:00:02", "empty_user_id"),
    "blank-item": ("u1", "   ", "1", 0.5, "2026-10-28 10:00:03", "empty_item_id"),
    "text-value": ("u1", "i1", "abc", 0.5, "2026-10-28 10:00:04", "unparseable:value"),
    "nan-value": ("u1", "i1", "NaN", 0.5, "2026-10-28 10:00:05", "non_finite_value"),
    "inf-value": ("u1", "i1", "Infinity", 0.5, "2026-10-28 10:00:06", "non_finite_value"),
    "nan-propensity": ("u1", "i1", "2", float("nan"), "2026-10-28 10:00:07", "non_finite_propensity"),
    "long-user": (LONG, "i1", "1", 0.5, "2026-10-28 10:00:08", "long_user_id"),
    "pre-1970": ("u1", "i1", "1", 0.5, "1969-12-31 23:00:00", "ts_before_floor"),
    "bad-ts": ("u1", "i1", "1", 0.5, "2026-10-28 25:61:00", "unparseable:ts"),
}


def _typed_rows() -> pa.Table:
    columns = list(zip(*[(key, *row[:5]) for key, row in ROWS.items()], strict=True))
    names = ["id", "user_id", "item_id", "value", "propensity", "ts"]
    types = [pa.string()] * 4 + [pa.float64(), pa.string()]
    return pa.table([pa.array(c, t) for c, t in zip(columns, types, strict=True)], names=names)


def _expected_reasons() -> dict[str, str]:
    return {k: r for k, (*_, r) in ROWS.items() if r is not None}


def _mapping(tmp_path: Path, table: str, *, ts_unit: str = "timestamp") -> str:
    path = tmp_path / "bad_rows.yaml"
    path.write_text(f"""
name: bad_rows
table: {table}
columns:
  event_id: {{from: id}}
  user_id: {{from: user_id}}
  item_id: {{from: item_id}}
  event_type: {{const: impression}}
  value: {{from: value}}
  propensity: {{from: propensity}}
  ts: {{from: ts, unit: {ts_unit}}}
""")
    return str(path)


def _check_everything_accounted(tmp_path: Path, uri: str, mapping: str) -> None:
    snap = extract_snapshot(uri, mapping, START, END, tmp_path / "snaps", retries=0)
    assert snap.manifest["counts"]["source_rows"] == snap.rows == len(ROWS)  # = the source's COUNT(*)
    table = load_snapshot(snap.path)
    result = check_interactions(table, window=(START, END), settings=SETTINGS, run_ge=True, now=NOW)
    summary = result.summary()
    assert summary["rows_valid"] + summary["rows_quarantined"] == summary["rows_in"] == snap.rows
    quarantined = {r["event_id"]: r for r in result.quarantined.to_pylist()}
    assert {k: r["reason"] for k, r in quarantined.items()} == _expected_reasons()
    assert json.loads(quarantined["text-value"]["source_errors"]) == {"value": "abc"}  # raw text kept
    assert json.loads(quarantined["bad-ts"]["source_errors"]) == {"ts": "2026-10-28 25:61:00"}
    assert quarantined["long-user"]["user_id"] == LONG
    assert sorted(result.valid.column("event_id").to_pylist()) == ["ok-1", "ok-2"]


@pytest.mark.postgres
def test_postgres_bad_rows_are_quarantined_with_their_reasons(tmp_path: Path, pg_table: str) -> None:
    write_table(PG_URI, pg_table, _typed_rows())  # value and ts are TEXT columns, propensity DOUBLE PRECISION
    _check_everything_accounted(tmp_path, PG_URI, _mapping(tmp_path, pg_table))


@pytest.mark.mariadb
def test_mariadb_bad_rows_are_quarantined_with_their_reasons(tmp_path: Path, mysql_table: str) -> None:
    conn = connect.connect_mysql(parse_uri(MYSQL_URI))
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(f"CREATE TABLE `{mysql_table}` (id VARCHAR(40), user_id TEXT, item_id TEXT, value VARCHAR(20), "
                    "propensity VARCHAR(20), ts VARCHAR(30))")  # MariaDB's DOUBLE holds no NaN: text it is
        for key, (user, item, value, propensity, ts, _) in ROWS.items():
            cur.execute(f"INSERT INTO `{mysql_table}` VALUES (%s, %s, %s, %s, %s, %s)",
                        (key, user, item, value, None if propensity is None else str(propensity), ts))
    _check_everything_accounted(tmp_path, MYSQL_URI, _mapping(tmp_path, mysql_table))


def test_sqlite_bad_rows_are_quarantined_with_their_reasons(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "bad.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        # REAL columns: SQLite keeps 'abc' as text in them, and CAST('abc' AS REAL) would say 0.0
        conn.execute("CREATE TABLE events (id TEXT, user_id TEXT, item_id TEXT, value REAL, propensity REAL, ts TEXT)")
        for key, (user, item, value, propensity, ts, _) in ROWS.items():
            number = {"NaN": None, "Infinity": float("inf")}.get(value, value)
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", (key, user, item, number, propensity, ts))
        conn.commit()
    mapping = _mapping(tmp_path, "events")
    snap = extract_snapshot(f"sqlite:///{db}", mapping, START, END, tmp_path / "snaps", retries=0)
    table = load_snapshot(snap.path)
    result = check_interactions(table, window=(START, END), settings=SETTINGS, run_ge=False, now=NOW)
    reasons = {r["event_id"]: r["reason"] for r in result.quarantined.to_pylist()}
    # SQLite stores NaN as NULL: that row is clean here; every other defect is caught
    assert reasons == {k: v for k, v in _expected_reasons().items() if k not in ("nan-value", "nan-propensity")}
    assert snap.manifest["counts"]["source_rows"] == snap.rows == result.rows_in == len(ROWS)
    errors = {r["event_id"]: r["source_errors"] for r in result.quarantined.to_pylist() if r["source_errors"]}
    assert json.loads(errors["text-value"]) == {"value": "abc"}


def test_mongomock_bad_documents_are_quarantined_with_their_reasons(tmp_path: Path) -> None:
    docs = []
    for key, (user, item, value, propensity, ts, _) in ROWS.items():
        number: object = {"NaN": float("nan"), "Infinity": float("inf"), None: None}.get(value, value)
        if isinstance(number, str) and number != "abc":
            number = float(number)
        docs.append({"id": key, "user_id": user, "item_id": item, "value": number, "propensity": propensity, "ts": ts})
    with mongomock.patch(servers=(("mongo.bad", 27017),)):
        uri = "mongodb://mongo.bad:27017/app?collection=events"
        write_collection(uri, "events", docs)
        snap = extract_snapshot(uri, _mapping(tmp_path, "events"), START, END, tmp_path / "snaps", retries=0)
    table = load_snapshot(snap.path)
    result = check_interactions(table, window=(START, END), settings=SETTINGS, run_ge=False, now=NOW)
    assert {r["event_id"]: r["reason"] for r in result.quarantined.to_pylist()} == _expected_reasons()
    assert snap.manifest["counts"]["source_rows"] == snap.rows == result.rows_in == len(ROWS)


def test_a_value_column_of_mixed_text_converts_what_it_can(tmp_path: Path) -> None:
    from sources.convert import convert_each, to_number

    values = pa.array(["1.5", " 2 ", "abc", None, "", "1e3", "12,5"] * 1000)
    out, failed = convert_each(lambda a: to_number(a, pa.float64()), values, pa.float64())
    assert out.to_pylist()[:7] == [1.5, 2.0, None, None, None, 1000.0, None]
    assert failed is not None and failed.sum() == 2000  # 'abc' and '12,5'; '' is a missing value
    assert [i % 7 for i in failed.nonzero()[0][:2]] == [2, 6]
