"""The mapping language on real tables in shapes the simulator never writes.

A ratings-only PostgreSQL table with no id column and a JSONB review; a MariaDB shop whose orders and
page views are two tables; SQL `query:` joins on both servers; MongoDB collections unioned. Every
feature is checked on what lands in the snapshot, then through the contract.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mongomock
import pyarrow as pa
import pytest

from core.errors import Reason, SourceError
from data_contracts import ContractSettings, check_interactions
from sources import connect, extract_snapshot, load_snapshot, write_collection, write_table
from sources.mapping import load_mapping
from sources.uri import parse_uri

from .conftest import MYSQL_URI, PG_URI, drop_sql_table

START, END = datetime(2026, 10, 26, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 30, tzinfo=UTC)
SETTINGS = ContractSettings(min_rows=1, max_quarantine_fraction=1.0)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return str(path)


def _epoch(hours: float) -> int:
    return int((START + timedelta(hours=hours)).timestamp())


@pytest.mark.postgres
def test_ratings_table_composite_ids_thresholds_transforms_filters_json_and_extras(tmp_path: Path,
                                                                                  pg_table: str) -> None:
    reviews = [{"tags": "funny,long", "device": {"kind": "tv"}}, {"device": {"kind": "phone"}}, None,
               {"tags": "dull", "device": {"kind": "fridge"}}, {"tags": "gone"}, {"tags": "late"}]
    rows = pa.table({
        "user_ref": pa.array([7, 7, 8, 9, 9, 9], pa.int32()), "movie": pa.array([10, 11, 10, 12, 13, 14], pa.int32()),
        "stars": pa.array([5, 3, 1, 0, 4, 4], pa.int16()),
        "rated_at": pa.array([_epoch(1), _epoch(2), _epoch(3), _epoch(4), _epoch(5), _epoch(24 * 7)], pa.int64()),
        "review": pa.array([None if r is None else json.dumps(r) for r in reviews], pa.string()),
        "deleted": pa.array([False, False, None, False, True, False]),
    })
    write_table(PG_URI, pg_table, rows, indexes=[("rated_at",)])
    conn = connect.connect_postgres(parse_uri(PG_URI))
    with contextlib.closing(conn), conn.cursor() as cur:  # a real JSONB column, as such tables have
        cur.execute(f'ALTER TABLE "{pg_table}" ALTER COLUMN review TYPE JSONB USING review::jsonb')
        conn.commit()
    mapping = _write(tmp_path, f"""
name: ratings_pg
table: {pg_table}
filter:
  - {{from: deleted, ne: true}}          # a null 'deleted' passes
columns:
  event_id: {{concat: [{{from: user_ref}}, {{from: movie}}, {{from: rated_at}}], sep: "-"}}
  user_id: {{from: user_ref}}
  item_id: {{from: movie}}
  event_type:
    from: stars
    cases: [{{ge: 4, then: like}}, {{le: 2, then: dislike}}]
    otherwise: rating
  value: {{from: stars, clamp: [1, 5]}}
  mood_delta: {{from: stars, scale: 0.5, offset: -1.5, clamp: [-1, 1]}}
  device: {{from: review.device.kind, lookup: {{tv: tv, phone: mobile}}, unmapped: "null"}}
  ts: {{from: rated_at, unit: s}}
extra:
  tag_text: {{from: review.tags}}
  stars_raw: {{from: stars, type: int}}
""")
    snap = extract_snapshot(PG_URI, mapping, START, END, tmp_path / "snaps", retries=0)
    got = load_snapshot(snap.path)
    assert got.column("event_id").to_pylist() == [f"7-10-{_epoch(1)}", f"7-11-{_epoch(2)}", f"8-10-{_epoch(3)}",
                                                  f"9-12-{_epoch(4)}"]  # deleted and out-of-window rows gone
    assert got.column("event_type").to_pylist() == ["like", "rating", "dislike", "dislike"]
    assert got.column("value").to_pylist() == [5.0, 3.0, 1.0, 1.0]  # 0 stars clamped to 1
    assert got.column("mood_delta").to_pylist() == [1.0, 0.0, -1.0, -1.0]
    assert got.column("device").to_pylist() == ["tv", "mobile", None, None]
    assert got.column("tag_text").to_pylist() == ["funny,long", None, None, "dull"]
    assert got.column("stars_raw").to_pylist() == [5, 3, 1, 0] and got.schema.field("stars_raw").type == pa.int64()
    assert got.column("session_id").null_count == got.num_rows  # unmapped optional columns are null
    assert snap.manifest["counts"] | {"parts": None} == {"source_rows": 5, "rows_read": 5, "rows_filtered": 1,
                                                       "rows_written": 4, "parts": None}
    result = check_interactions(got, window=(START, END), settings=SETTINGS, run_ge=True, now=NOW)
    assert result.quarantined.num_rows == 0 and result.gate_passed  # no impressions at all: still valid
    assert result.valid.column("tag_text").to_pylist() == ["funny,long", None, None, "dull"]  # extras carried
    assert not next(r for r in result.expectations if r["name"] == "has_exposures")["success"]  # said, not fatal


def _mariadb(sql: list[str]) -> None:
    conn = connect.connect_mysql(parse_uri(MYSQL_URI))
    with contextlib.closing(conn), conn.cursor() as cur:
        for statement in sql:
            cur.execute(statement)


@pytest.fixture
def shop_tables(table_name: str):
    orders, views = f"{table_name}_orders", f"{table_name}_views"
    yield orders, views
    drop_sql_table(MYSQL_URI, orders)
    drop_sql_table(MYSQL_URI, views)


def _day(days: float) -> str:
    return (START + timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.mariadb
def test_mariadb_two_tables_unioned_with_filters_json_and_a_later_session_purchase(tmp_path: Path,
                                                                                  shop_tables) -> None:
    orders, views = shop_tables
    _mariadb([
        f"CREATE TABLE `{orders}` (order_id INT PRIMARY KEY, customer VARCHAR(20), sku VARCHAR(20), "
        "placed_at DATETIME, status VARCHAR(12), meta JSON, INDEX (placed_at))",
        f"CREATE TABLE `{views}` (view_id BIGINT PRIMARY KEY, visitor VARCHAR(20), sku VARCHAR(20), "
        "seen_at DATETIME(3), ms INT, INDEX (seen_at))",
        f"INSERT INTO `{orders}` VALUES (1, 'c1', 'sku-a', '{_day(3)}', 'paid', '{{\"category\": \"shoes\"}}'), "
        f"(2, 'c1', 'sku-b', '{_day(3.5)}', 'cancelled', NULL), (3, 'c2', 'sku-c', '{_day(4)}', 'shipped', "
        f"'{{\"category\": \"hats\"}}'), (4, 'c2', 'sku-a', '{_day(9)}', 'paid', NULL)",
        f"INSERT INTO `{views}` VALUES (1, 'c1', 'sku-a', '{_day(0.5)}', 42000), (2, 'c2', 'sku-z', '{_day(1)}', 500), "
        f"(3, 'c1', 'sku-b', '{_day(2)}', NULL)",
    ])
    mapping = _write(tmp_path, f"""
name: shop_union
columns:
  item_id: {{from: sku}}
  content_type: {{const: product}}
union:
  - table: {orders}
    filter: [{{from: status, in: [paid, shipped]}}]
    columns:
      event_id: {{concat: [{{const: order}}, {{from: order_id}}]}}
      user_id: {{from: customer}}
      event_type: {{const: purchase}}
      category: {{from: meta.category}}
      ts: {{from: placed_at, unit: timestamp}}
  - table: {views}
    columns:
      event_id: {{concat: [{{const: view}}, {{from: view_id}}]}}
      user_id: {{from: visitor}}
      event_type: {{const: view}}
      value: {{from: ms, scale: 0.001}}
      ts: {{from: seen_at, unit: timestamp}}
""")
    snap = extract_snapshot(MYSQL_URI, mapping, START, END, tmp_path / "snaps", retries=0)
    got = load_snapshot(snap.path)
    assert got.column("event_id").to_pylist() == ["order:1", "order:3", "view:1", "view:2", "view:3"]
    assert got.column("category").to_pylist() == ["shoes", "hats", None, None, None]
    assert got.column("value").to_pylist() == [None, None, 42.0, 0.5, None]
    assert set(got.column("content_type").to_pylist()) == {"product"}
    counts = snap.manifest["counts"]
    assert (counts["source_rows"], counts["rows_filtered"], counts["rows_written"]) == (6, 1, 5)
    assert [p["source_rows"] for p in counts["parts"]] == [3, 3]
    result = check_interactions(got, window=(START, END), settings=SETTINGS, run_ge=False, now=NOW)
    # order:1 follows c1's view of sku-a 2.5 days before, in another session; nobody showed c2 sku-c
    assert {r["event_id"]: r["reason"] for r in result.quarantined.to_pylist()} == {"order:3": "no_impression"}


@pytest.mark.postgres
def test_postgres_query_with_start_and_end(tmp_path: Path, table_name: str) -> None:
    events, items = f"{table_name}_e", f"{table_name}_i"
    try:
        write_table(PG_URI, events, pa.table({
            "id": [1, 2, 3], "uid": ["u1", "u2", "u1"], "iid": [10, 11, 10], "kind": ["view", "view", "click"],
            "at": pa.array([START + timedelta(hours=1), START - timedelta(hours=1), START + timedelta(hours=2)],
                           pa.timestamp("us", tz="UTC"))}))
        write_table(PG_URI, items, pa.table({"id": [10, 11], "cat": ["jazz", "news"]}))
        mapping = _write(tmp_path, f"""
name: joined_pg
query: >
  SELECT e.id, e.uid, e.iid, e.kind, e.at, i.cat FROM "{events}" e JOIN "{items}" i ON i.id = e.iid
  WHERE e.at >= :start AND e.at < :end AND e.kind <> '%none%'
columns:
  event_id: {{from: id}}
  user_id: {{from: uid}}
  item_id: {{from: iid}}
  event_type: {{from: kind}}
  category: {{from: cat}}
  ts: {{from: at, unit: timestamp}}
""")
        snap = extract_snapshot(PG_URI, mapping, START, END, tmp_path / "snaps", retries=0)
        got = load_snapshot(snap.path)
        assert got.column("event_id").to_pylist() == ["1", "3"]
        assert got.column("category").to_pylist() == ["jazz", "jazz"]
        assert snap.manifest["counts"]["source_rows"] == 2
        assert "COPY" not in snap.manifest["query"] and "'2026-10-26 00:00:00.000000+00'::timestamptz" in snap.manifest["query"]
    finally:
        drop_sql_table(PG_URI, events)
        drop_sql_table(PG_URI, items)


@pytest.mark.mariadb
def test_mariadb_query_is_read_in_time_slices(tmp_path: Path, mysql_table: str) -> None:
    _mariadb([f"CREATE TABLE `{mysql_table}` (id INT, who VARCHAR(9), what VARCHAR(9), at BIGINT, INDEX (at))",
              f"INSERT INTO `{mysql_table}` VALUES " + ", ".join(
                  f"({i}, 'u{i % 3}', 'i{i % 5}', {(_epoch(i) * 1000)})" for i in range(-5, 60))])
    mapping = _write(tmp_path, f"""
name: sliced_query
query: SELECT id, who, what, at FROM `{mysql_table}` WHERE at >= :start AND at < :end AND what LIKE 'i%'
columns:
  event_id: {{from: id}}
  user_id: {{from: who}}
  item_id: {{from: what}}
  event_type: {{const: view}}
  ts: {{from: at, unit: ms}}
""")
    snap = extract_snapshot(MYSQL_URI, mapping, START, END, tmp_path / "snaps", batch_rows=7, retries=0)
    got = load_snapshot(snap.path)
    assert got.column("event_id").to_pylist() == [str(i) for i in range(60)]
    assert snap.manifest["counts"]["source_rows"] == 60


def test_mongomock_collections_unioned_with_nested_paths_and_cases(tmp_path: Path) -> None:
    with mongomock.patch(servers=(("mongo.union", 27017),)):
        uri = "mongodb://mongo.union:27017/app"
        write_collection(uri, "plays", [
            {"_id": f"p{i}", "who": {"id": f"u{i}"}, "track": f"t{i}", "pct": pct, "at": START + timedelta(hours=i)}
            for i, pct in enumerate([100, 35, 80])])
        write_collection(uri, "skips", [{"_id": "s1", "who": {"id": "u9"}, "track": "t1", "at": START}])
        mapping = _write(tmp_path, """
name: music
columns:
  user_id: {from: who.id}
  item_id: {from: track}
  ts: {from: at, unit: timestamp}
union:
  - collection: plays
    columns:
      event_id: {from: _id}
      event_type: {from: pct, cases: [{ge: 90, then: complete}, {between: [30, 89.99], then: view}]}
      value: {from: pct}
  - collection: skips
    columns:
      event_id: {from: _id}
      event_type: {const: skip}
""")
        snap = extract_snapshot(uri, mapping, START, END, tmp_path / "snaps", retries=0)
    got = load_snapshot(snap.path)
    assert got.column("event_id").to_pylist() == ["p0", "p1", "p2", "s1"]
    assert got.column("event_type").to_pylist() == ["complete", "view", "view", "skip"]
    assert got.column("user_id").to_pylist() == ["u0", "u1", "u2", "u9"]
    assert snap.manifest["counts"]["source_rows"] == 4


@pytest.mark.parametrize(("body", "says"), [
    ("columns: {device: {from: k, values: {a: b}, cases: [{eq: 1, then: x}]}}", "either `values`"),
    ("columns: {session_id: {from: a, concat: [{from: b}]}}", "exactly one of from/const/coalesce/concat"),
    ("extra: {user_id: {from: u}}", "canonical column name"),
    ("extra: {Tag-Text: {from: u}}", "lower-case letters"),
    ("query: SELECT * FROM t WHERE at >= :start", "both :start and :end"),
    ("query: SELECT 1; DROP TABLE t -- :start :end", "one SELECT statement"),
    ("columns: {category: {from: \"ctx.a'b\"}}", "letters, digits"),
    ("filter: [{from: status}]", "at least one of eq"),
    ("union: []", "at least one"),
])
def test_invalid_mappings_are_refused_with_the_reason(tmp_path: Path, body: str, says: str) -> None:
    base = ("name: bad\ntable: t\ncolumns: {event_id: {from: id}, user_id: {from: u}, item_id: {from: i}, "
            "event_type: {const: view}, ts: {from: at, unit: timestamp}}\n")
    text = base
    for line in body.split("\n"):
        key = line.split(":", 1)[0]
        if key == "columns":  # merged into the required columns
            text = text.replace("columns: {", "columns: {" + line.split("{", 1)[1].rsplit("}", 1)[0] + ", ", 1)
        elif key in ("query", "union"):
            text = text.replace("table: t\n", "") + line + "\n" if key == "query" else text + line + "\n"
        else:
            text += line + "\n"
    with pytest.raises(SourceError) as info:
        load_mapping(_write(tmp_path, text))
    assert info.value.reason is Reason.BAD_MAPPING
    assert says in str(info.value)


def test_every_shipped_mapping_stays_valid() -> None:
    from sources import shipped_mappings

    assert {"rankloop", "cochain_pg", "ecommerce_mysql", "entertainment", "infra_mind_mongo"} <= set(shipped_mappings())
    for name in shipped_mappings():
        mapping, digest = load_mapping(name)
        assert mapping.parts() and len(digest) == 64
