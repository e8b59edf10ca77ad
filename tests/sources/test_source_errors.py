"""Errors: unreachable (retried, transient), bad credentials (AUTH), missing table/column; no passwords."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pytest

from core.errors import Reason, SourceError
from sources import extract_snapshot, write_table

from .conftest import END, MYSQL_URI, PG_URI, START

SECRET = "Sup3rS3cretPw"


def _with_password(uri: str, user: str) -> str:
    scheme, rest = uri.split("://", 1)
    host = rest.split("@", 1)[-1]
    return f"{scheme}://{user}:{SECRET}@{host}"


def _assert_no_secret(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    assert SECRET not in str(error)
    assert SECRET not in caplog.text
    assert SECRET not in str(getattr(error, "details", ""))
    assert SECRET not in str(error.__cause__ or "")


def test_unreachable_is_retried_then_names_host_and_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = f"postgresql://reader:{SECRET}@127.0.0.1:1/analytics"
    with caplog.at_level(logging.WARNING), pytest.raises(SourceError) as info:
        extract_snapshot(uri, "rankloop", START, END, tmp_path, retries=2, retry_delay_s=0.0)
    err = info.value
    assert err.reason is Reason.UNREACHABLE and err.transient
    assert "127.0.0.1" in str(err) and "analytics" in str(err)
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2
    _assert_no_secret(err, caplog)


@pytest.mark.postgres
def test_postgres_bad_credentials_are_auth_not_transient(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = _with_password(PG_URI, "rl_no_such_role")
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as info:
        extract_snapshot(uri, "rankloop", START, END, tmp_path, retries=2, retry_delay_s=0.0)
    assert info.value.reason is Reason.AUTH and not info.value.transient
    assert "retrying" not in caplog.text
    _assert_no_secret(info.value, caplog)


@pytest.mark.mariadb
def test_mariadb_bad_password_is_auth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = _with_password(MYSQL_URI, "rl_no_such_user")
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as info:
        extract_snapshot(uri, "rankloop", START, END, tmp_path, retries=1, retry_delay_s=0.0)
    assert info.value.reason is Reason.AUTH and not info.value.transient
    _assert_no_secret(info.value, caplog)


@pytest.mark.postgres
def test_postgres_missing_table_lists_found_tables(tmp_path: Path, pg_table: str) -> None:
    from sources.mapping import MAPPINGS_DIR

    write_table(PG_URI, pg_table, pa.table({"x": [1]}))
    absent = pg_table + "_absent"
    mapping = tmp_path / "m.yaml"
    mapping.write_text((MAPPINGS_DIR / "rankloop.yaml").read_text().replace("table: interactions", f"table: {absent}", 1))
    with pytest.raises(SourceError) as info:
        extract_snapshot(PG_URI, str(mapping), START, END, tmp_path)
    assert info.value.reason is Reason.MISSING_TABLE
    assert f"'{absent}'" in str(info.value) and pg_table in info.value.details["found"]


@pytest.mark.mariadb
def test_mariadb_missing_column_lists_expected_and_found(tmp_path: Path, mysql_table: str) -> None:
    write_table(MYSQL_URI, mysql_table, pa.table({"id": [1], "user_id": [2], "product_id": [3]}))
    mapping = tmp_path / "m.yaml"
    from sources.mapping import MAPPINGS_DIR

    mapping.write_text((MAPPINGS_DIR / "ecommerce_mysql.yaml").read_text().replace("user_product_interactions", mysql_table))
    with pytest.raises(SourceError) as info:
        extract_snapshot(MYSQL_URI, str(mapping), START, END, tmp_path)
    assert info.value.reason is Reason.MISSING_COLUMN
    assert info.value.details["missing"] == ["context", "interaction_type", "session_id", "timestamp"]
    assert info.value.details["found"] == ["id", "product_id", "user_id"]


def test_invalid_mapping_is_bad_mapping(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntable: t\ncolumns:\n  user_id: {from: u}\n  colour: {from: c}\n")
    with pytest.raises(SourceError) as info:
        extract_snapshot(f"sqlite:///{tmp_path / 'x.db'}", str(path), START, END, tmp_path)
    assert info.value.reason is Reason.BAD_MAPPING
    assert "colour" in str(info.value) and "event_id" in str(info.value)


@pytest.mark.parametrize("uri", [f"postgresql://reader:{SECRET}@no-such-host.invalid:5432/analytics",
                                 f"mysql://reader:{SECRET}@no-such-host.invalid:3306/shop"])
def test_an_unresolvable_host_is_not_retried_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         uri: str) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(SourceError) as info:
        extract_snapshot(uri, "rankloop", START, END, tmp_path, retries=3, retry_delay_s=0.0)
    err = info.value
    assert err.reason is Reason.UNREACHABLE and not err.transient
    assert "retrying" not in caplog.text  # a DNS failure does not heal by waiting
    assert "does not resolve" in str(err) and "no-such-host.invalid" in err.hint
    _assert_no_secret(err, caplog)


@pytest.mark.postgres
def test_wrong_credentials_hint_names_the_user(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        extract_snapshot(_with_password(PG_URI, "rl_no_such_role"), "rankloop", START, END, tmp_path, retries=0)
    assert "'rl_no_such_role'" in info.value.hint and SECRET not in info.value.hint


@pytest.mark.postgres
def test_missing_table_hint_lists_what_exists(tmp_path: Path, pg_table: str) -> None:
    from sources.mapping import MAPPINGS_DIR

    write_table(PG_URI, pg_table, pa.table({"x": [1]}))
    mapping = tmp_path / "m.yaml"
    mapping.write_text((MAPPINGS_DIR / "rankloop.yaml").read_text().replace("table: interactions", "table: nope_x", 1))
    with pytest.raises(SourceError) as info:
        extract_snapshot(PG_URI, str(mapping), START, END, tmp_path)
    assert pg_table in info.value.hint and "`table:`" in info.value.hint
