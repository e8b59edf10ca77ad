"""The four seed layouts, loaded into their databases, map into the canonical schema."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

import mongomock
import pyarrow as pa
import pytest

from sources import connect, extract_snapshot, load_snapshot, write_collection, write_table
from sources.mapping import MAPPINGS_DIR
from sources.uri import parse_uri

from .conftest import MYSQL_URI, PG_URI

START, END = datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 5, 2, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def _mapping(tmp_path: Path, name: str, relation: str, unique: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text((MAPPINGS_DIR / f"{name}.yaml").read_text().replace(relation, unique))
    return str(path)


def _ts(*hours: float) -> pa.Array:
    return pa.array([int((START.timestamp() + h * 3600) * 1e6) for h in hours], pa.int64()).cast(TS)


@pytest.mark.postgres
def test_cochain_postgres(tmp_path: Path, pg_table: str) -> None:
    rows = pa.table({
        "id": pa.array([1, 2, 3, 4, 5, 6], pa.int32()), "user_id": ["u1"] * 6, "project_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
        "interaction_type": ["click", "VIEW", "time_spent", "bookmark", "rating", "click"],
        "position": pa.array([1, 2, None, 3, None, 1], pa.int32()),
        "time_spent_ms": pa.array([None, None, 42_500, None, None, None], pa.int64()),
        "rating": pa.array([None, None, None, None, 4, None], pa.int16()),
        "session_id": ["s1"] * 6, "timestamp": _ts(0, 1, 2, 3, 4, 24),
    })
    write_table(PG_URI, pg_table, rows, indexes=[("timestamp",)])
    snap = extract_snapshot(PG_URI, _mapping(tmp_path, "cochain_pg", "user_interactions", pg_table), START, END, tmp_path)
    got = load_snapshot(snap.path)
    assert got.column("event_id").to_pylist() == ["1", "2", "3", "4", "5"]  # the row at END is out
    assert got.column("event_type").to_pylist() == ["click", "impression", "dwell", "save", "rating"]
    assert got.column("value").to_pylist() == [None, None, 42.5, None, 4.0]  # ms -> s; stars
    assert got.column("position").to_pylist() == [0, 1, None, 2, None]  # 1-based -> 0-based
    assert set(got.column("content_type").to_pylist()) == {"project"}


def test_infra_mind_mongomock(tmp_path: Path) -> None:
    docs = [
        {"recommendation_id": f"r{i}", "user_id": "u7", "interaction_type": t, "interaction_value": v,
         "context": {"session_id": f"s{i}", "assessment_id": "a1"}, "timestamp": START.replace(hour=i)}
        for i, (t, v) in enumerate([("view", 12.5), ("click", None), ("rate", 5), ("implement", None), ("teleport", None)])
    ]
    docs.append({"recommendation_id": "late", "user_id": "u7", "interaction_type": "click", "timestamp": END})
    with mongomock.patch(servers=(("mongo.seed", 27017),)):
        uri = "mongodb://mongo.seed:27017/infra_mind"
        write_collection(uri, "recommendation_interactions", docs)
        snap = extract_snapshot(uri, "infra_mind_mongo", START, END, tmp_path)
    got = load_snapshot(snap.path)
    assert got.column("item_id").to_pylist() == ["r0", "r1", "r2", "r3", "r4"]
    assert got.column("event_type").to_pylist() == ["view", "click", "rating", "implement", "teleport"]
    assert got.column("value").to_pylist() == [12.5, None, 5.0, None, None]
    assert got.column("session_id").to_pylist() == ["s0", "s1", "s2", "s3", "s4"]
    assert set(got.column("request_id").to_pylist()) == {"a1"}
    assert all(len(e) == 24 for e in got.column("event_id").to_pylist())  # ObjectId text


@pytest.mark.mariadb
def test_ecommerce_mariadb_json_context(tmp_path: Path, mysql_table: str) -> None:
    conn = connect.connect_mysql(parse_uri(MYSQL_URI))
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(f"CREATE TABLE `{mysql_table}` (id BIGINT PRIMARY KEY AUTO_INCREMENT, user_id BIGINT NOT NULL, "
                    "product_id BIGINT NOT NULL, interaction_type VARCHAR(50) NOT NULL, session_id VARCHAR(255), "
                    "timestamp DATETIME NOT NULL, context JSON, reward DECIMAL(10,2), INDEX ix_ts (timestamp))")
    contexts = [{"category": "shoes", "position": 2, "device": "mobile", "request_id": "q1"}, None,
                {"category": "hats"}, {"position": 0}, {"category": "x"}, {"category": "late"}]
    rows = pa.table({
        "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()), "user_id": pa.array([10] * 6, pa.int64()),
        "product_id": pa.array([100, 101, 102, 103, 104, 105], pa.int64()),
        "interaction_type": ["CLICK", "VIEW", "CART_ADD", "PURCHASE", "WISHLIST", "CLICK"], "session_id": ["s"] * 6,
        "timestamp": _ts(0, 1, 2, 3, 23.5, 24), "context": [None if c is None else json.dumps(c) for c in contexts],
        "reward": [1.0, 0.1, 2.0, 5.0, 1.0, 1.0],
    })
    write_table(MYSQL_URI, mysql_table, rows, mode="append")
    mapping = _mapping(tmp_path, "ecommerce_mysql", "user_product_interactions", mysql_table)
    got = load_snapshot(extract_snapshot(MYSQL_URI, mapping, START, END, tmp_path).path)
    assert got.column("event_type").to_pylist() == ["click", "view", "cart_add", "purchase", "save"]
    assert got.column("user_id").to_pylist() == ["10"] * 5
    assert got.column("category").to_pylist() == ["shoes", None, "hats", None, "x"]
    assert got.column("position").to_pylist() == [2, None, None, 0, None]
    assert got.column("device").to_pylist()[0] == "mobile" and got.column("request_id").to_pylist()[0] == "q1"
    assert got.column("ts").to_pylist()[-1] == datetime(2025, 5, 1, 23, 30, tzinfo=UTC)


def test_entertainment_sqlite_rl_params(tmp_path: Path) -> None:
    meta = [{"rl_params": {"action_id": 13, "min_energy": 0.2, "max_energy": 0.5}, "time_of_day": "evening",
             "personality": {"openness": 0.8, "neuroticism": 0.1}}, None, {"time_of_day": "morning"}]
    rows = pa.table({
        "id": ["x1", "x2", "x3"], "user_id": ["user-123"] * 3, "content_id": ["track-1", "vid-2", "track-3"],
        "content_type": ["music", "video", "music"], "interaction_type": ["LIKE", "complete", "skip"],
        "completion_percentage": [95.0, 100.0, 10.0], "mood": ["neutral", "relaxed", None],
        "mood_change": ["improved", "same", "bogus"], "created_at": _ts(20, 21, 22),
        "metadata": [None if m is None else json.dumps(m) for m in meta],
    })
    uri = f"sqlite:///{tmp_path / 'ent.db'}"
    write_table(uri, "entertainment_interactions", rows, indexes=[("created_at",)])
    got = load_snapshot(extract_snapshot(uri, "entertainment", START, END, tmp_path / "s").path)
    assert got.column("event_type").to_pylist() == ["like", "complete", "skip"]
    assert got.column("action_id").to_pylist() == [13, None, None]
    assert got.column("time_of_day").to_pylist() == ["evening", None, "morning"]
    assert got.column("mood_delta").to_pylist() == [1.0, 0.0, None]
    assert got.column("trait_openness").to_pylist() == [0.8, None, None]
    assert got.column("value").to_pylist() == [95.0, 100.0, 10.0]
