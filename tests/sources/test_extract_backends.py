"""Each backend extracts a seeded window exactly: rows at start are in, rows at end are out."""

from __future__ import annotations

import os
from pathlib import Path

import mongomock
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.schema import TRAIT_COLUMNS
from sources import extract_snapshot, load_snapshot, read_catalog, write_collection, write_table

from .conftest import END, MYSQL_URI, PG_URI, START, canonical, canonical_rows, in_window


def _check(snapshot_dir: Path, uri: str, source: pa.Table, *, mapping: str = "rankloop") -> None:
    snap = extract_snapshot(uri, mapping, START, END, snapshot_dir, batch_rows=64, retries=0)
    expected = in_window(source)
    got = canonical(load_snapshot(snap.digest, snapshot_dir))
    assert snap.rows == expected.num_rows == 200
    assert got.column("event_id").to_pylist() == expected.column("event_id").to_pylist()
    assert got.equals(expected), [c for c in got.column_names if not got[c].equals(expected[c])]
    assert snap.min_ts == START  # the row exactly at start is included
    assert END not in got.column("ts").to_pylist()  # the row exactly at end is excluded
    assert "e00400" not in got.column("event_id").to_pylist()
    assert "mystery_event" in got.column("event_type").to_pylist()  # unknown types are kept verbatim


def test_sqlite_window_is_exact(tmp_path: Path) -> None:
    table = canonical_rows()
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    write_table(uri, "interactions", table, indexes=[("ts",)])
    _check(tmp_path / "snaps", uri, table)


@pytest.mark.postgres
def test_postgres_window_is_exact(tmp_path: Path, pg_table: str) -> None:
    table = canonical_rows()
    write_table(PG_URI, pg_table, table, indexes=[("ts",)])
    _check(tmp_path, PG_URI, table, mapping=_renamed(tmp_path, pg_table))


@pytest.mark.mariadb
def test_mariadb_window_is_exact(tmp_path: Path, mysql_table: str) -> None:
    table = canonical_rows()
    write_table(MYSQL_URI, mysql_table, table, indexes=[("ts",)])
    _check(tmp_path, MYSQL_URI, table, mapping=_renamed(tmp_path, mysql_table))


def test_parquet_window_is_exact(tmp_path: Path) -> None:
    table = canonical_rows()
    pq.write_table(table, tmp_path / "events.parquet", row_group_size=50)
    _check(tmp_path / "snaps", str(tmp_path / "events.parquet"), table)


def test_mongomock_window_is_exact(tmp_path: Path) -> None:
    table = canonical_rows(ms_precision=True)
    with mongomock.patch(servers=(("mongo.test", 27017),)):
        uri = "mongodb://mongo.test:27017/app?collection=interactions"
        assert write_collection(uri, "interactions", table, indexes=[("ts",)]) == table.num_rows
        _check(tmp_path, uri, table)


@pytest.mark.mongodb_live
@pytest.mark.skipif(not os.environ.get("RANKLOOP_TEST_MONGODB_URI"), reason="RANKLOOP_TEST_MONGODB_URI not set")
def test_live_mongodb_window_is_exact(tmp_path: Path) -> None:
    table = canonical_rows(ms_precision=True)
    base = os.environ["RANKLOOP_TEST_MONGODB_URI"]
    write_collection(base, "rl_src_interactions", table)
    sep = "&" if "?" in base else "?"
    _check(tmp_path, f"{base}{sep}collection=rl_src_interactions", table)


def _renamed(tmp_path: Path, table_name: str) -> str:
    """The rankloop mapping pointed at a uniquely named table."""
    from sources.mapping import MAPPINGS_DIR

    text = (MAPPINGS_DIR / "rankloop.yaml").read_text().replace("table: interactions", f"table: {table_name}", 1)
    path = tmp_path / "rankloop_test.yaml"
    path.write_text(text)
    return str(path)


def test_catalog_is_read_with_embeddings(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'src.db'}"
    write_table(uri, "interactions", canonical_rows())
    items = pa.table({"item_id": ["a", "b"], "category": ["x", None], "content_type": ["music", "video"],
                      "created_at": pa.array([0, 1_000_000], pa.timestamp("us", tz="UTC")),
                      "embedding": pa.array([[0.5, -1.25], None], pa.list_(pa.float32()))})
    traits = {c: pa.array([0.25 if c == "trait_openness" else None], pa.float64()) for c in TRAIT_COLUMNS}
    users = pa.table({"user_id": ["u1"], **traits, "embedding": pa.array([[1.0]], pa.list_(pa.float32()))})
    write_table(uri, "items", items)
    write_table(uri, "users", users)
    got_items, got_users = read_catalog(uri, "rankloop")
    assert got_items.column("embedding").to_pylist() == [[0.5, -1.25], None]
    assert got_items.column("created_at").to_pylist() == items.column("created_at").to_pylist()
    assert got_users.column("trait_openness").to_pylist() == [0.25]
    assert got_users.column("trait_neuroticism").to_pylist() == [None]


@pytest.mark.parametrize("uri", [pytest.param(PG_URI, marks=pytest.mark.postgres),
                                 pytest.param(MYSQL_URI, marks=pytest.mark.mariadb)])
def test_catalog_is_read_from_postgres_and_mariadb(tmp_path: Path, table_name: str, uri: str) -> None:
    from sources.mapping import MAPPINGS_DIR

    from .conftest import drop_sql_table

    items = pa.table({"item_id": ["a", "b"], "category": ["x", None], "content_type": ["music", "video"],
                      "created_at": pa.array([0, 1_000_000], pa.timestamp("us", tz="UTC")),
                      "embedding": pa.array([[0.5, -1.25], None], pa.list_(pa.float32()))})
    write_table(uri, table_name, items)
    try:
        text = (MAPPINGS_DIR / "rankloop.yaml").read_text().replace("table: items", f"table: {table_name}")
        mapping = tmp_path / "catalog.yaml"
        mapping.write_text(text[: text.index("  users:")])  # items only
        got_items, got_users = read_catalog(uri, str(mapping))
        assert got_users is None
        assert got_items.column("embedding").to_pylist() == [[0.5, -1.25], None]
        assert got_items.column("created_at").to_pylist() == items.column("created_at").to_pylist()
        assert got_items.column("category").to_pylist() == ["x", None]
    finally:
        drop_sql_table(uri, table_name)
