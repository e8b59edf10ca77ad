"""URI parsing and redaction."""

from __future__ import annotations

import pytest

from core.errors import Reason, SourceError
from sources import parse_uri, redact
from sources.uri import scrub


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgresql://bob:s3cr%40t@db:5432/app", "postgresql://bob:***@db:5432/app"),
        ("mysql://root:hunter2@127.0.0.1/test", "mysql://root:***@127.0.0.1/test"),
        ("mongodb://u:pw@h/db?authSource=admin&password=zz&collection=c",
         "mongodb://u:***@h/db?authSource=admin&password=***&collection=c"),
        ("postgresql://db/app?sslmode=require&password=topsecret", "postgresql://db/app?sslmode=require&password=***"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_redact_hides_passwords_keeps_the_rest(uri: str, expected: str) -> None:
    assert redact(uri) == expected


def test_scrub_masks_a_password_echoed_by_a_driver() -> None:
    uri = "postgresql://bob:pa55word@db/app"
    assert "pa55word" not in scrub("FATAL: bad pa55word for postgresql://bob:pa55word@db/app", uri)


def test_parse_uri_kinds_and_parts() -> None:
    src = parse_uri("mariadb://root:pw@10.0.0.1:3307/shop")
    assert (src.kind, src.host, src.port, src.user, src.password, src.database) == ("mysql", "10.0.0.1", 3307, "root", "pw", "shop")
    assert parse_uri("sqlite:////abs/path.db").path.as_posix() == "/abs/path.db"
    assert parse_uri("data/events.parquet").kind == "parquet"
    assert parse_uri("mongodb://h/db?collection=c").option("collection") == "c"


@pytest.mark.parametrize("uri", ["oracle://u:pw@h/db", "postgresql://u:pw@h", "sqlite://relative.db"])
def test_bad_uris_fail_with_bad_uri_and_no_password(uri: str) -> None:
    with pytest.raises(SourceError) as info:
        parse_uri(uri)
    assert info.value.reason is Reason.BAD_URI
    assert ":pw@" not in str(info.value)


def test_parsed_uri_repr_hides_the_password() -> None:
    src = parse_uri("postgresql://bob:pa55word@db/app")
    assert "pa55word" not in repr(src) and "pa55word" not in str(src)
    assert src.password == "pa55word"  # still usable for connecting


@pytest.mark.parametrize(
    ("uri", "expected", "secret"),
    [
        ("postgresql://bob:p@ss@db:5432/app", "postgresql://bob:***@db:5432/app", "p@ss"),  # raw @: last @ wins
        ("mysql://root:a@b@c@10.0.0.1/shop", "mysql://root:***@10.0.0.1/shop", "a@b@c"),
        ("postgresql://bob:pa/ss@db/app", "postgresql://bob:***@db/app", "pa/ss"),  # raw / in the password
        ("mongodb://u:x%40y@h/db?collection=c", "mongodb://u:***@h/db?collection=c", "x%40y"),
        ("postgresql://bob@db/app?note=a@b", "postgresql://bob@db/app?note=a@b", None),  # no password, @ in query
    ],
)
def test_redact_splits_the_authority_like_the_drivers(uri: str, expected: str, secret: str | None) -> None:
    assert redact(uri) == expected
    if secret:
        assert secret not in redact(uri) and secret not in scrub(f"could not connect to {uri}", uri)
        src = parse_uri(uri)
        assert src.password is not None and src.password not in repr(src)


def test_a_password_with_a_raw_at_sign_is_parsed_whole_and_re_encoded_for_the_driver() -> None:
    src = parse_uri("postgresql://bob:p@ss:w0rd@db.internal:5433/app?sslmode=require")
    assert (src.user, src.password, src.host, src.port, src.database) == ("bob", "p@ss:w0rd", "db.internal", 5433, "app")
    assert src.driver_uri("postgresql") == "postgresql://bob:p%40ss%3Aw0rd@db.internal:5433/app?sslmode=require"
    mongo = parse_uri("mongodb://u:x@y@h1:1,h2:2/db?collection=c&authSource=admin")
    assert mongo.driver_uri(drop_options=("collection",)) == "mongodb://u:x%40y@h1:1,h2:2/db?authSource=admin"


@pytest.mark.postgres
def test_postgres_connects_with_a_raw_at_sign_in_the_password(tmp_path) -> None:
    from sources import connect

    from .conftest import PG_URI

    scheme, rest = PG_URI.split("://", 1)
    uri = f"{scheme}://postgres:p@ss@{rest.split('@', 1)[-1]}"  # trust auth: the password is ignored, not mis-split
    conn = connect.connect_postgres(parse_uri(uri))
    conn.close()


@pytest.mark.parametrize("uri", ["postgresql://u:pw@db/app\nlevel=INFO fake line", "mysql://u:pw@db/app\r",
                                 "sqlite:////tmp/a\x00.db", "postgresql://u:p\tw@db/app"])
def test_control_characters_are_refused_and_never_printed_raw(uri: str) -> None:
    with pytest.raises(SourceError) as info:
        parse_uri(uri)
    assert info.value.reason is Reason.BAD_URI and "control character" in str(info.value)
    assert not any(c in str(info.value) for c in "\n\r\x00\t") and "pw" not in str(info.value)
    assert "\n" not in redact(uri)


def test_unknown_scheme_hints_at_the_accepted_ones() -> None:
    with pytest.raises(SourceError) as info:
        parse_uri("oracle://u:pw@h/db")
    assert "postgresql://" in info.value.hint and "mongodb://" in info.value.hint
    assert info.value.one_line().startswith("error (bad_uri): unknown source URI scheme 'oracle'")


def test_an_unknown_mapping_lists_the_shipped_ones_and_says_a_path_works() -> None:
    from sources import shipped_mappings
    from sources.mapping import load_mapping

    with pytest.raises(SourceError) as info:
        load_mapping("no_such_mapping")
    assert info.value.reason is Reason.BAD_MAPPING
    assert all(name in info.value.hint for name in shipped_mappings()) and "path" in info.value.hint
