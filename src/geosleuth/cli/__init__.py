"""The ``geosleuth`` command. Thin: parse options, call the library, render.

One module per command group (``locate``, ``report``, ``chat`` with ``chat_repl`` for its
interactive session, ``config``, ``index``, ``vlm``, ``eval``, ``verifier``, ``serve``, ``mcp``, ``prepare``), ``render`` for a
Prediction as text, ``common`` for the shared options and :func:`reports_errors`,
the one place where an error becomes an exit code (through :mod:`geosleuth.errors`' table):
0 every input was processed (a "too little evidence" answer counts as processed); 1 at least one
input could not be used (its error is on stderr); 2 bad usage or settings; 3 an internal error (a
bug: please report it with ``-vv`` output); 130 interrupted.

Importing this package stays light (no numpy, torch or pipeline), so ``geosleuth --help`` is fast:
the commands import what they need when they run.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from geosleuth.cli import config, eval, index, verifier, vlm
from geosleuth.cli.chat import chat
from geosleuth.cli.common import internal_error_line
from geosleuth.cli.locate import locate
from geosleuth.cli.mcp import mcp
from geosleuth.cli.prepare import prepare
from geosleuth.cli.report import report
from geosleuth.cli.serve import serve
from geosleuth.errors import EXIT_INTERRUPTED, EXIT_OK, exit_code

__all__ = ["app", "main"]

app = typer.Typer(
    name="geosleuth",
    help="Where was this photo taken? Evidence first: EXIF, text in the image, gazetteers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(locate)
app.command()(report)
app.command()(chat)
app.command()(serve)
app.command()(mcp)
app.command()(prepare)
app.add_typer(config.app, name="config")
app.add_typer(index.app, name="index")
app.add_typer(vlm.app, name="vlm")
app.add_typer(eval.app, name="eval")
app.add_typer(verifier.app, name="verifier")


def _version_callback(value: bool) -> None:
    if value:
        from geosleuth import __version__

        print(f"geosleuth {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """geosleuth: explainable photo geolocation."""


def main() -> None:
    """Console-script entry point. Commands report their own errors (``reports_errors``); this
    catches what escapes them, so no traceback reaches the user without -vv."""
    try:
        app()
    except KeyboardInterrupt:
        print("geosleuth: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as exc:  # pragma: no cover - a bug outside any command
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        internal_error_line(exc)
        sys.exit(exit_code(exc))
