"""Hostile mappings run nothing: JSON paths are checked and bound, identifiers quoted, values never reach SQL.

Each payload is the kind that, spliced into SQL, copied another table's rows, slept or dropped a
table. Either the mapping is refused (BAD_MAPPING) before any connection is opened, or the payload
stays one quoted identifier (a missing table/column), or it is compared as a literal in Arrow.
A victim table with a secret is checked intact afterwards.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from core.errors import Reason, SourceError
from sources import connect, extract_snapshot, load_snapshot, write_table
from sources.sql import literal
from sources.uri import parse_uri

from .conftest import MYSQL_URI, PG_URI, drop_sql_table

START, END = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)
SECRET = "s3cret-row-of-another-table"

# JSON-path payloads: the PostgreSQL one (string literal break-out), and MySQL/SQLite equivalents
PATH_PAYLOADS = [
    "context.x}'::text[]) || (SELECT string_agg(secret, ',') FROM {victim}) || ('{",
    "context.x}' || pg_sleep(4) || '{",
    "context.a')), SLEEP(3)) -- ",
    "context.a'), (SELECT secret FROM {victim})) -- ",
    "meta.x') || (SELECT secret FROM {victim}) || ('",
    'context."a"; DROP TABLE {victim}; --',
]


def _events() -> pa.Table:
    ts = pa.array([START + timedelta(hours=h) for h in (1, 2)], pa.timestamp("us", tz="UTC"))
    return pa.table({"id": ["e1", "e2"], "uid": ["u1", "u2"], "iid": ["i1", "i2"], "kind": ["view", "click"],
                     "context": ['{"x": "1"}', '{"x": "2"}'], "at": ts})


def _yaml_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _hostile(tmp_path: Path, table: str, category: str) -> str:
    path = tmp_path / "hostile.yaml"
    path.write_text(f"""name: hostile
table: {_yaml_quote(table)}
columns:
  event_id: {{from: id}}
  user_id: {{from: uid}}
  item_id: {{from: iid}}
  event_type: {{from: kind}}
  category: {{from: {_yaml_quote(category)}}}
  ts: {{from: at, unit: timestamp}}
""")
    return str(path)


@pytest.fixture
def no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to reach a database."""
    def refuse(*args, **kwargs):
        raise AssertionError("a connection was opened for a mapping that should have been refused")
    for name in ("connect_postgres", "connect_mysql", "connect_sqlite", "connect_mongo"):
        monkeypatch.setattr(connect, name, refuse)


@pytest.mark.parametrize("payload", PATH_PAYLOADS)
@pytest.mark.parametrize("uri", [PG_URI, MYSQL_URI, "sqlite:///unused.db"])
def test_json_path_payloads_are_refused_before_any_connection(tmp_path: Path, uri: str, payload: str,
                                                             no_connection: None) -> None:
    mapping = _hostile(tmp_path, "events", payload.replace("{victim}", "victim"))
    with pytest.raises(SourceError) as info:
        extract_snapshot(uri, mapping, START, END, tmp_path / "snaps", retries=0)
    assert info.value.reason is Reason.BAD_MAPPING and "letters, digits" in str(info.value)


def _victim_intact_pg(victim: str) -> list[str]:
    conn = connect.connect_postgres(parse_uri(PG_URI))
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(f'SELECT secret FROM "{victim}"')
        return [r[0] for r in cur.fetchall()]


@pytest.mark.postgres
@pytest.mark.parametrize("table_payload", ['{events}" WHERE 1 = 0; DROP TABLE "{victim}"; --',
                                           '{events}" UNION SELECT secret, secret, secret, secret, secret, now() '
                                           'FROM "{victim}" --'])
def test_postgres_identifier_payloads_stay_one_quoted_name(tmp_path: Path, table_name: str, table_payload: str) -> None:
    events, victim = f"{table_name}_ev", f"{table_name}_victim"
    try:
        write_table(PG_URI, events, _events())
        write_table(PG_URI, victim, pa.table({"secret": [SECRET]}))
        mapping = _hostile(tmp_path, table_payload.format(events=events, victim=victim), "context.x")
        with pytest.raises(SourceError) as info:
            extract_snapshot(PG_URI, mapping, START, END, tmp_path / "snaps", retries=0)
        assert info.value.reason is Reason.MISSING_TABLE  # the whole payload was looked up as one table name
        assert _victim_intact_pg(victim) == [SECRET]
    finally:
        drop_sql_table(PG_URI, events)
        drop_sql_table(PG_URI, victim)


@pytest.mark.mariadb
def test_mariadb_identifier_payload_stays_one_quoted_name(tmp_path: Path, table_name: str) -> None:
    events, victim = f"{table_name}_ev", f"{table_name}_victim"
    try:
        write_table(MYSQL_URI, events, _events())
        write_table(MYSQL_URI, victim, pa.table({"secret": [SECRET]}))
        mapping = _hostile(tmp_path, f"{events}` WHERE 1 = 0; DROP TABLE `{victim}`; #", "context.x")
        with pytest.raises(SourceError) as info:
            extract_snapshot(MYSQL_URI, mapping, START, END, tmp_path / "snaps", retries=0)
        assert info.value.reason is Reason.MISSING_TABLE
        conn = connect.connect_mysql(parse_uri(MYSQL_URI))
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute(f"SELECT secret FROM `{victim}`")
            assert [r[0] for r in cur.fetchall()] == [SECRET]
    finally:
        drop_sql_table(MYSQL_URI, events)
        drop_sql_table(MYSQL_URI, victim)


@pytest.mark.postgres
def test_column_payloads_and_values_never_reach_sql(tmp_path: Path, table_name: str) -> None:
    events, victim = f"{table_name}_ev", f"{table_name}_victim"
    try:
        write_table(PG_URI, events, _events())
        write_table(PG_URI, victim, pa.table({"secret": [SECRET]}))
        column = f'kind", (SELECT secret FROM "{victim}") AS "kind'
        with pytest.raises(SourceError) as info:
            extract_snapshot(PG_URI, _hostile(tmp_path, events, column), START, END, tmp_path / "snaps", retries=0)
        assert info.value.reason is Reason.MISSING_COLUMN  # compared with the table's column names, never sent
        path = tmp_path / "values.yaml"  # values are compared in Arrow: an injection string is just a string
        path.write_text(f"""name: values
table: {events}
filter: [{{from: kind, ne: "x' OR '1'='1"}}]
columns:
  event_id: {{from: id}}
  user_id: {{from: uid}}
  item_id: {{from: iid}}
  event_type: {{from: kind, lookup: {{"view' OR 1=1 --": like, view: view}}, otherwise: "'); DROP TABLE x; --"}}
  ts: {{from: at, unit: timestamp}}
""")
        got = load_snapshot(extract_snapshot(PG_URI, str(path), START, END, tmp_path / "snaps", retries=0).path)
        assert got.column("event_type").to_pylist() == ["view", "'); DROP TABLE x; --"]
        assert SECRET not in str(got.to_pylist()) and _victim_intact_pg(victim) == [SECRET]
    finally:
        drop_sql_table(PG_URI, events)
        drop_sql_table(PG_URI, victim)


@pytest.mark.parametrize("value", ["it's", "a\\b", "x; DROP TABLE t", "a\nb", float("nan"), True, b"raw", object()])
def test_literal_renders_only_inert_values(value: object) -> None:
    with pytest.raises((SourceError, TypeError)):
        literal("postgresql", value)


def test_literal_renders_our_own_values() -> None:
    moment = datetime(2026, 1, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert literal("postgresql", moment) == "'2026-01-05 06:07:08.000009+00'::timestamptz"
    assert literal("postgresql", moment.replace(tzinfo=None)) == "'2026-01-05 06:07:08.000009'::timestamp"
    assert literal("mysql", moment) == "'2026-01-05 06:07:08.000009'"
    assert literal("mysql", 1_761_523_200_000) == "1761523200000" and literal("mysql", 1.5) == "1.5"
    assert literal("postgresql", '$."a"."b-c"') == "'$.\"a\".\"b-c\"'"
