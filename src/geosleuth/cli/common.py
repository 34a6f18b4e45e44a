"""What every command shares: the options that recur, logging, and the one way errors end a command.

Errors become exit codes in :func:`reports_errors`, through :func:`geosleuth.errors.exit_code`:
commands raise the library's typed errors and never pick an exit code for one themselves.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from geosleuth.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, GeoSleuthError, exit_code

P = ParamSpec("P")
R = TypeVar("R")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (else $GEOSLEUTH_CONFIG, ./geosleuth.toml)."),
]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Where the gazetteer index is kept.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]

# locate's options, which chat, report and serve take too (each command lists them as parameters;
# Typer has no option groups, so the declarations are shared instead).
IgnoreExifGpsOpt = Annotated[
    bool, typer.Option("--ignore-exif-gps", help="Do not take the EXIF GPS position as the answer.")
]
OcrOpt = Annotated[
    str | None, typer.Option("--ocr", help="OCR engine: auto, hybrid, rapidocr, tesseract or none.")
]
ImageEncoderOpt = Annotated[
    str | None,
    typer.Option("--image-encoder", help="Turn on retrieval: 'geoclip', or a CLIP/SigLIP hub id or folder."),
]
IndexOpt = Annotated[
    Path | None, typer.Option("--index", help="A neighbour index built with `geosleuth index build`.")
]
VlmUrlOpt = Annotated[
    str | None,
    typer.Option("--vlm-url", help="OpenAI-compatible VLM endpoint, e.g. http://127.0.0.1:8000/v1."),
]
VlmModelOpt = Annotated[
    str | None, typer.Option("--vlm-model", help="Model name on that server (default: its only one).")
]
VlmSamplesOpt = Annotated[
    int | None, typer.Option("--vlm-samples", min=1, help="Samples per prompt variant.")
]
MinProbabilityOpt = Annotated[
    float | None, typer.Option("--min-probability", help="Answer only above this probability.")
]
OfflineOpt = Annotated[
    bool | None, typer.Option("--offline/--online", help="Never touch the network (default: settings).")
]


def setup_logging(verbose: int, quiet: bool) -> None:
    """Logging for one command: warnings by default, -v info, -vv debug, -q errors only (and no
    progress). Python warnings (Pillow's, a library's deprecation) become log records, so they
    reach stderr formatted like every other message, or not at all with -q."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    from rich.console import Console
    from rich.logging import RichHandler

    from geosleuth import progress

    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_time=False, show_path=verbose > 1)],
        force=True,
    )
    logging.captureWarnings(True)
    # Pillow logs what it then raises (we report that) and, at debug level, every chunk it reads.
    logging.getLogger("PIL").setLevel(logging.CRITICAL if verbose < 2 else logging.INFO)
    progress.set_enabled(not quiet)


def error_line(message: str) -> None:
    """One line on stderr, in the one format every failure uses."""
    print(f"geosleuth: error: {message}", file=sys.stderr)


def internal_error_line(exc: BaseException) -> None:
    print(
        f"geosleuth: internal error: {type(exc).__name__}: {exc} (rerun with -vv and report it)",
        file=sys.stderr,
    )


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so that an error ends it with one line on stderr and the exit code
    :func:`geosleuth.errors.exit_code` gives (Ctrl-C: 130). With -vv a bug keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # an exit code already chosen, or a usage error Typer reports
        except KeyboardInterrupt:
            print("geosleuth: interrupted", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except GeoSleuthError as exc:
            error_line(str(exc))
            raise typer.Exit(exit_code(exc)) from None
        except Exception as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            code = exit_code(exc)
            if code == EXIT_INTERNAL:
                internal_error_line(exc)
            else:  # an OSError: a file that could not be read or written
                error_line(str(exc))
            raise typer.Exit(code) from None

    wrapper.reports_errors = True  # type: ignore[attr-defined]  # tests check every command has it
    return wrapper
