"""The ``rankloop`` command line. Each module in ``cli.commands`` registers its commands.

Only the CLI prints; everything it calls logs. Every failure ends in one line on stderr,
``error (<reason>): <what is wrong> - <what to do>``, and the exit code of its reason
(``core.errors.EXIT_CODES``, docs/operations.md); ``-v``/``--verbose`` (before or after the
command name) also shows INFO logs, third-party warnings and the traceback.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import pkgutil
import re
import sys
import warnings
from typing import Any

import typer
import typer.core
from typer._click.exceptions import NoArgsIsHelpError
from typer.exceptions import Abort, Exit, TyperException

import cli.commands
from core.errors import EXIT_CODES, RankLoopError, Reason, device_full, is_storage_error, storage_error

VERBOSE_FLAGS = ("-v", "--verbose")
INTERRUPTED = 130

class RankLoopGroup(typer.core.TyperGroup):
    """Turns any failure of a command into one stderr line and its exit code (also under CliRunner)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (Exit, NoArgsIsHelpError, KeyboardInterrupt, Abort):
            raise
        except BaseException as error:  # noqa: BLE001 - the CLI's one place that turns failures into a line
            if isinstance(error, SystemExit):
                raise
            if ctx.params.get("verbose") or _VERBOSE[0]:
                import traceback

                traceback.print_exc()
            line, code = _error_line(error, ctx.invoked_subcommand or "")
            typer.echo(line, err=True)
            raise Exit(code) from None


_VERBOSE = [False]  # set by main() (it takes -v from anywhere on the command line)

app = typer.Typer(
    name="rankloop",
    cls=RankLoopGroup,
    help="Retrain recommendation rankers, bandit tables and Q-policies from interaction logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from core.version import code_version

        typer.echo(f"rankloop {code_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show INFO logs, warnings and tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Retrain recommendation rankers, bandit tables and Q-policies from interaction logs.

    Exit codes: 0 ok, 1 failed run, 2 bad input or settings, 3 not found, 4 checksum, 5 gate,
    6 refused, 7 unreachable, 8 busy, 9 authentication, 10 storage (no space, not writable),
    11 data (contract, source count), 12 training, 130 interrupted (docs/operations.md).
    """


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(cli.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"cli.commands.{info.name}")
        if hasattr(module, "register"):
            module.register(app)


_register_commands()


# --- output ---------------------------------------------------------------------------------------
class ProgressHandler(logging.Handler):
    """One stderr line per finished stage (``rankloop.progress``), with its elapsed time."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event not in ("done", "failed"):
            return
        mark = "[green]ok[/green]" if event == "done" else "[red]failed[/red]"
        self.console.print(f"  {getattr(record, 'stage', '?'):<20} {mark} {getattr(record, 'seconds', 0.0):7.1f} s")


def _hide_warning(*_args: Any, **_kwargs: Any) -> None:
    """``warnings.showwarning`` without ``-v``: third-party warnings are not shown."""


def configure_output(verbose: bool) -> None:
    """Quiet by default (progress lines, warnings from RankLoop); everything with ``verbose``."""
    # Read by Prefect when it configures logging (at import): its console shows nothing unless -v;
    # its API handler still receives every flow and task log.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "CRITICAL")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "ERROR")  # MLflow's own stderr handler
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose
                                           else "%(levelname)s: %(message)s"))
    if verbose:
        handler.setLevel(logging.INFO)
        root.setLevel(logging.INFO)
        for noisy in ("alembic", "httpx", "httpcore", "urllib3", "mlflow.store", "great_expectations"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    else:
        # Only RankLoop's own warnings: an error is the failure the final line reports, once.
        handler.setLevel(logging.WARNING)
        handler.addFilter(lambda record: record.levelno == logging.WARNING and record.name.split(".")[0] in (
            "rankloop", "flows", "registry", "sources", "features", "models", "data_contracts"))
        warnings.filterwarnings("ignore")  # third-party warnings (MLflow's, pandas') are not the user's
        # ... including those MLflow forces through its own simplefilter("once") (e.g. the colour-coded
        # "Add type hints to the `predict` method" of a PythonModel subclass): show none.
        warnings.showwarning = _hide_warning
    root.addHandler(handler)
    progress = logging.getLogger("rankloop.progress")
    progress.setLevel(logging.INFO)
    progress.propagate = verbose
    if sys.stderr.isatty() and not verbose:  # a terminal: one line per stage; a pipe or -v: the log has it
        progress.addHandler(ProgressHandler())


# --- errors ---------------------------------------------------------------------------------------
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^\s/@:]*:)[^\s]*@", re.IGNORECASE)


def _scrub(text: str) -> str:
    return _URI_PASSWORD.sub(r"\g<head>***@", " ".join(str(text).split()))


def _error_line(error: BaseException, command: str) -> tuple[str, int]:
    """The one line and exit code for any failure."""
    if isinstance(error, RankLoopError):
        return _scrub(error.one_line()), error.exit_code
    if isinstance(error, TyperException):  # usage: unknown option, missing value, bad choice
        known = command in typer.main.get_command(app).commands  # type: ignore[attr-defined]
        hint = f"see `rankloop {command} --help`" if known else "see `rankloop --help`"
        message = _scrub(error.format_message()).rstrip(".")
        return f"error ({Reason.INVALID_INPUT.value}): {message} - {hint}", 2
    if is_storage_error(error, os.environ.get("RANKLOOP_HOME", ".")):
        converted = storage_error(error)
        return _scrub(converted.one_line()), converted.exit_code
    what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    home = os.environ.get("RANKLOOP_HOME", ".rankloop")
    if device_full(home):  # whatever broke (a database, Prefect's local API), the full disk is why
        full = storage_error(OSError(errno.ENOSPC, "No space left on device"), home, what="the data home")
        return f"{_scrub(full.one_line())} ({_scrub(what)[:200]})", full.exit_code
    if "ephemeral Prefect API server" in what:
        return (f"error (unreachable): Prefect's local API (under {home}/prefect) did not start ({_scrub(what)}) - "
                "check free space and permissions there, or set PREFECT_API_URL to a running Prefect server; "
                "-v shows its log", EXIT_CODES[Reason.UNREACHABLE])
    return (f"error (internal): {_scrub(what)} - run the command again with -v for the traceback, "
            "and report it if the cause is not in your input", 1)


def _command_name(args: list[str]) -> str:
    return next((a for a in args if not a.startswith("-")), "")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``rankloop`` script."""
    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    verbose = any(a in VERBOSE_FLAGS for a in args[:cut])
    args = [a for a in args[:cut] if a not in VERBOSE_FLAGS] + args[cut:]
    configure_output(verbose)
    _VERBOSE[0] = verbose
    code = _run(args, verbose)
    sys.stdout.flush()
    sys.exit(code)


def _run(args: list[str], verbose: bool) -> int:
    try:
        result: Any = app(args=args, prog_name="rankloop", standalone_mode=False)
    except Exit as e:
        return e.exit_code
    except NoArgsIsHelpError as e:  # plain `rankloop`: the help, not an error
        typer.echo(e.format_message())
        return 0
    except (KeyboardInterrupt, Abort):
        typer.echo("error (interrupted): stopped by the user - run the command again to resume; "
                   "completed work is kept", err=True)
        return INTERRUPTED
    except BaseException as error:  # noqa: BLE001 - the CLI's one place that turns failures into a line
        if isinstance(error, SystemExit):
            return int(error.code or 0) if not isinstance(error.code, str) else 1
        if verbose:
            import traceback

            traceback.print_exc()
        line, code = _error_line(error, _command_name(args))
        typer.echo(line, err=True)
        return code
    return result if isinstance(result, int) else 0


__all__ = ["EXIT_CODES", "app", "main"]
