"""The ``rankloop`` command line. Each module in ``rankloop.commands`` registers its commands.

Only the CLI prints; everything it calls logs.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

import typer

import rankloop.commands

app = typer.Typer(
    name="rankloop",
    help="Retrain recommendation rankers, bandit tables and Q-policies from interaction logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "httpx", "urllib3", "mlflow.store", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(rankloop.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"rankloop.commands.{info.name}")
        module.register(app)


_register_commands()


def main() -> None:
    app()
