"""Session-wide test setup: a private Prefect home and API, quiet libraries, database URIs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports prefect or mlflow: nothing a test does may touch ~/.prefect or ./mlruns.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="rankloop-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RANKLOOP_CONFIG", None)

POSTGRES_URI = os.environ.get("RANKLOOP_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URI = os.environ.get("RANKLOOP_TEST_MYSQL_URI", "mysql://root@127.0.0.1:3306/test")


@pytest.fixture(scope="session")
def postgres_uri() -> str:
    """The real PostgreSQL the tests use (never skipped: a down server fails the test)."""
    return POSTGRES_URI


@pytest.fixture(scope="session")
def mysql_uri() -> str:
    """The real MariaDB/MySQL the tests use (never skipped: a down server fails the test)."""
    return MYSQL_URI


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One temporary Prefect API for the whole session (it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def rankloop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data home; MLflow defaults to sqlite:///<home>/mlflow.db inside it."""
    home = tmp_path / "home"
    monkeypatch.setenv("RANKLOOP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI; no test may inherit another's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


_CHECKOUT_MLRUNS = Path(__file__).resolve().parent.parent / "mlruns"
_MLRUNS_BEFORE = _CHECKOUT_MLRUNS.exists()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when a test wrote into the checkout's ``mlruns/`` (MLflow's default artifact
    root for its default experiment): every test's store and artifacts belong in its temporary folder."""
    if not _MLRUNS_BEFORE and _CHECKOUT_MLRUNS.exists():
        leaked = sorted(str(p.relative_to(_CHECKOUT_MLRUNS)) for p in _CHECKOUT_MLRUNS.glob("*/*"))[:5]
        print(f"\nERROR: tests wrote MLflow artifacts into {_CHECKOUT_MLRUNS} ({', '.join(leaked)}); "
              "give the test's runs an experiment with an artifact location in its tmp_path", flush=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
