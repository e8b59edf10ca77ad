"""What a failed store call means: NOT_FOUND only when the store answered, never when it could not be asked."""

from __future__ import annotations

import errno
import os
import socket

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST
from mlflow.tracking import MlflowClient

from core.errors import Reason, RegistryError, StorageError
from registry.reach import BOUNDED_REQUESTS, bounded_requests, classify, probe, redact
from registry.store import aliases, get_version, list_versions

URI = "http://user:s3cr@t@tracking.example:5000"


def _closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_store_errors_are_classified_and_programming_errors_are_not() -> None:
    driver_error = type("OperationalError", (Exception,), {"__module__": "sqlalchemy.exc"})("connection refused")
    assert classify(driver_error, URI).reason is Reason.UNREACHABLE
    missing = MlflowException("no such alias", error_code=RESOURCE_DOES_NOT_EXIST)
    assert classify(missing, URI).reason is Reason.NOT_FOUND
    assert classify(MlflowException("nope", error_code=PERMISSION_DENIED), URI).reason is Reason.AUTH
    server_down = MlflowException(
        f"API request to {URI}/api/2.0/mlflow/registered-models/get failed with exception "
        "HTTPConnectionPool(host='tracking.example', port=5000): Max retries exceeded (Caused by "
        "NewConnectionError(\"Failed to establish a new connection: [Errno 111] Connection refused\"))"
    )
    down = classify(server_down, URI)
    assert down.reason is Reason.UNREACHABLE
    assert str(down) == "the registry at http://tracking.example:5000 is unreachable (Connection refused)"
    bug = KeyError("features")
    assert classify(bug, URI) is bug


def test_a_full_or_failing_local_disk_is_a_storage_error_naming_the_path() -> None:
    full = classify(OSError(errno.ENOSPC, "No space left on device", "/data/cache/ranker/3/model.txt"), URI)
    assert isinstance(full, StorageError) and full.reason is Reason.NO_SPACE
    assert "no space left on device writing /data/cache/ranker/3/model.txt" in full.one_line()
    wrapped = MlflowException("download failed")
    wrapped.__cause__ = OSError(errno.EIO, "Input/output error", "/data/cache/x")
    assert classify(wrapped, URI).reason is Reason.IO
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert classify(refused, URI).reason is Reason.UNREACHABLE  # an OSError, but the network's


def test_messages_never_carry_credentials() -> None:
    assert redact(URI) == "http://tracking.example:5000"
    assert redact("sqlite:////home/x/mlflow.db") == "sqlite:////home/x/mlflow.db"
    leaked = classify(MlflowException(f"API request to {URI}/api failed: timeout"), URI)
    assert "s3cr" not in leaked.one_line() and "user:" not in leaked.one_line()


def test_a_down_server_is_unreachable_for_every_read_never_empty() -> None:
    uri = _closed_port_uri()
    with pytest.raises(RegistryError) as info:
        probe(uri, timeout=1.0)
    assert info.value.reason is Reason.UNREACHABLE
    client = MlflowClient(uri, uri)
    with bounded_requests():
        for read in (lambda: aliases(client, "ranker"), lambda: list_versions(client, "ranker"),
                     lambda: get_version(client, "ranker", 1)):
            with pytest.raises(RegistryError) as info:
                read()
            assert info.value.reason is Reason.UNREACHABLE, info.value
            assert uri.removeprefix("http://") in str(info.value)


def test_bounded_requests_set_and_restore_mlflows_retry_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    with bounded_requests():
        assert {k: os.environ[k] for k in BOUNDED_REQUESTS} == BOUNDED_REQUESTS
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
