"""What every command shares: the ``--home``/``--json`` options, the data home check, dates, JSON."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import typer

from core.errors import ConfigError, Reason, StorageError, storage_error
from core.settings import Settings

HOME_OPTION = typer.Option(None, "--home", metavar="PATH", help="Data home (default: $RANKLOOP_HOME or ./.rankloop).")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")
DATE_HELP = "YYYY-MM-DD (UTC)"


def settings_for(home: Path | None, *, write: bool = True, export: bool = False) -> Settings:
    """The settings with ``--home`` applied, after checking the data home.

    Args:
        home: the ``--home`` option (None: ``$RANKLOOP_HOME`` or ``./.rankloop``).
        write: the command writes to the home (created when missing; must be writable); else it only
            reads and the home must exist.
        export: also put ``--home`` in this process's environment (a flow run in this process reads
            its settings from there).

    Raises:
        ConfigError: invalid settings. StorageError: the home is missing (read) or not writable.
    """
    from core.runtime import apply_environment
    from core.settings import is_local_store, load_settings

    if home is not None and export:
        os.environ["RANKLOOP_HOME"] = str(home)
    settings = load_settings(**({"home": home} if home is not None else {}))
    path = settings.home_dir
    if write:
        check_writable(path)
    elif not path.is_dir() and is_local_store(settings.tracking_uri):
        raise StorageError(f"there is no RankLoop data home at {path}", reason=Reason.NOT_FOUND,
                           hint="run `rankloop demo` or `rankloop train` first, or point --home / RANKLOOP_HOME "
                                "at an existing home")
    apply_environment(settings)
    if os.environ.get("MLFLOW_LOGGING_LEVEL", "").upper() in ("ERROR", "CRITICAL"):
        _quiet_mlflow_prints()
    return settings


def _quiet_mlflow_prints() -> None:
    """MLflow also prints past its loggers ("Created version '2' of model ...") to its own stream;
    ``disable_logging()`` does not last (MLflow's autologging contexts re-enable the stream on exit),
    so without -v the stream itself writes nothing."""
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    MLFLOW_LOGGING_STREAM.write = len  # type: ignore[method-assign] # accepts the text, writes nothing
    MLFLOW_LOGGING_STREAM.flush = lambda: None  # type: ignore[method-assign]


def check_writable(path: Path) -> None:
    """Create ``path`` if needed and prove a file can be written in it (one clear error, no retries)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as e:
        raise storage_error(e, path, what="the data home") from None


def parse_date(text: str | None, option: str) -> date | None:
    """A ``YYYY-MM-DD`` option value (None stays None)."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{option} expects a date like 2026-11-16, got {text!r}", reason=Reason.INVALID_INPUT,
                          hint=f"write {option} as YYYY-MM-DD") from None


def parse_window(start: str | None, end: str | None, *, need_start: bool = True) -> tuple[date | None, date | None]:
    """``--start``/``--end`` as dates; ``--start`` must come before ``--end``."""
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    if need_start and (first is None or last is None):
        missing = "--start" if first is None else "--end"
        raise ConfigError(f"{missing} is required", reason=Reason.INVALID_INPUT, hint=f"give {missing} YYYY-MM-DD")
    if first is not None and last is not None and first >= last:
        raise ConfigError(f"--start {first} is not before --end {last}", reason=Reason.INVALID_INPUT,
                          hint="the window is [--start, --end): give a --start earlier than --end")
    return first, last


def utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def echo_json(payload: Any) -> None:
    """One JSON document on one stdout line (numbers stay numbers; dates and paths become strings)."""
    typer.echo(json.dumps(payload, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
