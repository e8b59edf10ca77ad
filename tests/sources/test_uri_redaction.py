"""URI parsing and redaction."""

from __future__ import annotations

import pytest

from rankloop.errors import Reason, SourceError
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
