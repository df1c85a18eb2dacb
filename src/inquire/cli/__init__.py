"""The ``inquire`` command line: a thin layer that builds a config and calls the library.

Each area registers its commands from its own module (``register(app)``), imported here in
order. Heavy libraries are imported inside the commands, never at start-up.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer

from inquire._version import __version__

app = typer.Typer(
    name="inquire",
    help="Expert-level text-to-image retrieval: the INQUIRE benchmark and your own collections.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per area; each defines register(app).
_MODULES = (
    "data",
    "evaluate",
    "demo",
    "embed",
    "index",
    "evalcmd",
    "eval_fullrank",
    "eval_rerank",
    "report",
    "reproduce",
    "web",
    "collection",
    "collection_interop",
    "simulate",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"inquire {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    level = (
        logging.DEBUG
        if verbose
        else logging.getLevelName(os.environ.get("INQUIRE_LOG_LEVEL", "WARNING").upper())
    )
    from rich.logging import RichHandler

    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False)])


for _name in _MODULES:
    importlib.import_module(f"inquire.cli.{_name}").register(app)


def main() -> None:
    """Console entry point: run the app, turning inquire's errors into one clear line."""
    from inquire.cli._common import error_message, ignore_stop_signals, say

    try:
        app()
    except SystemExit as stop:
        if stop.code in (130, 143):  # stopped by a signal: a second one must not traceback
            ignore_stop_signals()
        raise
    except Exception as exc:
        msg = error_message(exc)
        if msg is None:
            raise
        say(f"error: {msg}", typer.colors.RED)
        raise SystemExit(2) from None
