"""``geosleuth locate``: check every input first, then locate the usable ones and render each answer.

The inputs are checked before anything heavy is built (the gazetteer, OCR engines, models): a
missing or unreadable file, or one that is not an image, is reported in milliseconds whatever the
cache holds, and when no input can be used nothing heavy is built at all.

With ``--json`` every input gets exactly one JSON object on stdout, in input order: a Prediction,
or an error (``source``, ``error``, ``error_type``). That holds for one file as for a batch, and
when the run itself fails (settings, an engine that cannot start): each input not yet answered
then gets that error, so a script never has to parse stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from geosleuth.cli.common import (
    CacheOpt,
    ConfigOpt,
    IgnoreExifGpsOpt,
    ImageEncoderOpt,
    IndexOpt,
    MinProbabilityOpt,
    OcrOpt,
    OfflineOpt,
    QuietOpt,
    VerboseOpt,
    VlmModelOpt,
    VlmSamplesOpt,
    VlmUrlOpt,
    error_line,
    reports_errors,
    setup_logging,
)
from geosleuth.errors import (
    EXIT_OK,
    EmptySourceError,
    GeoSleuthError,
    ImageInputError,
    InternalError,
    error_class,
    exit_code,
)

if TYPE_CHECKING:
    from geosleuth.agents.pipeline import Locator
    from geosleuth.config import Settings
    from geosleuth.schemas import LocateError, Prediction

STDIN = "-"
STDIN_NAME = "<stdin>"


@reports_errors
def locate(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Image files, folders (every image inside, recursively), or - for stdin."),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the Prediction as JSON (JSON Lines for batches).")
    ] = False,
    ignore_exif_gps: IgnoreExifGpsOpt = False,
    ocr: OcrOpt = None,
    image_encoder: ImageEncoderOpt = None,
    index: IndexOpt = None,
    vlm_url: VlmUrlOpt = None,
    vlm_model: VlmModelOpt = None,
    vlm_samples: VlmSamplesOpt = None,
    min_probability: MinProbabilityOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Images processed in parallel.")] = 1,
    trace: Annotated[
        bool, typer.Option("--trace", help="Show every planner step: inputs, outputs, calls, timings.")
    ] = False,
    offline: OfflineOpt = None,
    config: ConfigOpt = None,
    cache_dir: CacheOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Locate photos from the evidence inside them.

    \b
    Examples:
      geosleuth locate photo.jpg
      geosleuth locate photos/ --json > answers.jsonl
      cat photo.heic | geosleuth locate -
      geosleuth locate sign.png --ignore-exif-gps --ocr rapidocr
      geosleuth locate street.jpg --vlm-url http://127.0.0.1:8000/v1
    """
    setup_logging(verbose, quiet)
    from rich.console import Console

    from geosleuth.schemas import LocateError

    batch: Inputs | None = None
    answered = 0
    tally = _Tally()
    try:
        settings = locate_settings(
            config,
            cache_dir=cache_dir,
            ignore_exif_gps=ignore_exif_gps,
            offline=offline,
            min_probability=min_probability,
            ocr=ocr,
            image_encoder=image_encoder,
            index=index,
            vlm_url=vlm_url,
            vlm_model=vlm_model,
            vlm_samples=vlm_samples,
        )
        batch = checked_inputs(inputs, settings)

        from geosleuth.cli.render import print_prediction

        out = Console(soft_wrap=True, highlight=False)
        err = Console(stderr=True, highlight=False)
        many = len(batch.entries) > 1
        for result, checked in _results(batch, settings, workers, show_progress=many):
            tally.add(result)
            answered += 1
            if isinstance(result, LocateError):
                if not checked:  # the ones the checks rejected have had their line
                    _error(result)
                if json_out:
                    print(result.model_dump_json(), flush=True)
            elif json_out:
                dump = result.model_dump_json(
                    indent=None if many else 2, exclude=None if trace else {"trace"}
                )
                print(dump, flush=True)
            else:
                print_prediction(out, result, trace=trace)
    except Exception as exc:
        if json_out:  # the run broke off: every input not answered yet still gets its object
            kind = type(exc).__name__ if isinstance(exc, GeoSleuthError) else InternalError.__name__
            given = [Source(i, STDIN_NAME if i == STDIN else None) for i in inputs]
            pending = batch.entries[answered:] if batch is not None else given
            for entry in pending:
                if not isinstance(entry, Source):  # its own error, found by the checks
                    print(entry.model_dump_json())
                    continue
                print(LocateError(source=_name(entry), error=str(exc), error_type=kind).model_dump_json())
        raise
    if many and not quiet:
        note = f", {batch.skipped} non-image files skipped" if batch.skipped else ""
        n = len(batch.entries)
        err.print(
            f"[bold]{n} inputs:[/] {tally.located} located, {n - tally.located - tally.failed} too little "
            f"evidence, {tally.failed} failed{note}."
        )
    raise typer.Exit(tally.exit_code)


@dataclass
class Source:
    """An input that passed the checks: a path, or stdin's bytes, and the name it is reported by."""

    data: str | bytes
    name: str | None = None


@dataclass
class Inputs:
    """Every input in the order given (folders expanded): usable ones, and errors for the others."""

    entries: list[Source | LocateError] = field(default_factory=list)
    skipped: int = 0  # non-image files inside folders

    @property
    def usable(self) -> list[Source]:
        return [e for e in self.entries if isinstance(e, Source)]

    @property
    def rejected(self) -> list[LocateError]:
        return [e for e in self.entries if not isinstance(e, Source)]


def locate_settings(
    config: Path | None,
    *,
    cache_dir: Path | None,
    ignore_exif_gps: bool,
    offline: bool | None,
    min_probability: float | None,
    ocr: str | None,
    image_encoder: str | None,
    index: Path | None,
    vlm_url: str | None,
    vlm_model: str | None,
    vlm_samples: int | None,
) -> Settings:
    """The settings of ``locate``'s flags (shared by every command that locates photos)."""
    from geosleuth.config import load_settings

    return load_settings(
        config,
        cache_dir=cache_dir,
        use_exif_gps=False if ignore_exif_gps else None,
        offline=offline,
        min_probability=min_probability,
        ocr={"engine": ocr} if ocr else None,
        retrieval={"image_encoder": image_encoder, "index_dir": index},
        vlm={"base_url": vlm_url, "model": vlm_model, "samples": vlm_samples},
    )


def checked_inputs(inputs: list[str], settings: Settings) -> Inputs:
    """:func:`check_inputs`, and each rejected input's line at once: before anything heavy is
    built."""
    batch = check_inputs(inputs, settings)
    for bad in batch.rejected:
        _error(bad)
    return batch


def check_inputs(inputs: list[str], settings: Settings) -> Inputs:
    """Expand folders and ``-`` (stdin), and check each input as far as its header, without
    building anything heavy: milliseconds per input. What a folder holds that is named like a
    photo but cannot be read (a broken link, a link loop, a pipe) is an error entry, and a folder
    with no photo at all is one too: nothing given is dropped without a word."""
    from geosleuth.tools.image import check_image, find_images

    batch = Inputs()
    for item in inputs:
        candidates: list[Source] = []
        path = Path(item)
        if item == STDIN:
            candidates.append(Source(sys.stdin.buffer.read(), STDIN_NAME))
        elif path.is_dir():
            scan = find_images(path)
            batch.skipped += scan.skipped
            candidates += [Source(str(f)) for f in scan.images]
            batch.entries += [_rejected(p) for p in scan.problems]
            if not scan.images and not scan.problems:
                others = f" ({scan.skipped} other files left out)" if scan.skipped else ""
                empty = EmptySourceError(f"{item}: no image files in this folder{others}")
                batch.entries.append(_failed(item, empty))
        else:
            candidates.append(Source(item))
        for src in candidates:
            try:
                check_image(
                    src.data,
                    name=src.name,
                    max_pixels=settings.max_image_pixels,
                    max_bytes=settings.max_file_bytes,
                )
            except ImageInputError as exc:
                batch.entries.append(_rejected(exc))
            else:
                batch.entries.append(src)
    return batch


def _rejected(exc: ImageInputError) -> LocateError:
    from geosleuth.schemas import LocateError

    return LocateError(source=exc.source, error=exc.reason, error_type=type(exc).__name__)


def _failed(source: str, exc: GeoSleuthError) -> LocateError:
    from geosleuth.schemas import LocateError

    reason = str(exc).removeprefix(f"{source}: ")
    return LocateError(source=source, error=reason, error_type=type(exc).__name__)


def _name(entry: Source | LocateError) -> str:
    if isinstance(entry, Source):
        return entry.name or str(entry.data)
    return entry.source


def _results(
    batch: Inputs, settings: Settings, workers: int, *, show_progress: bool
) -> Iterator[tuple[Prediction | LocateError, bool]]:
    """Each entry's result in input order, and whether it is the checks' (not the pipeline's). The
    locator is built only when an input can be used."""
    usable = batch.usable
    if not usable:
        for error in batch.rejected:
            yield error, True
        return
    from geosleuth.progress import Progress

    locator = _locator(settings)
    with Progress(
        "locating", len(batch.entries), unit="photos", enabled=None if show_progress else False
    ) as bar:
        located = locator.locate_many(
            [s.data for s in usable],
            names=[s.name for s in usable],
            workers=workers,
            on_done=lambda _: bar.advance(),
        )
        for entry in batch.entries:
            if isinstance(entry, Source):
                yield next(located), False
            else:
                bar.advance()
                yield entry, True


def _locator(settings: Settings) -> Locator:
    """The pipeline, with the gazetteer built (once per cache; the build says so, on a terminal
    or not)."""
    from geosleuth.agents.pipeline import Locator, build_deps

    locator = Locator(deps=build_deps(settings))
    locator.deps.gazetteer.ensure_built()
    return locator


def _error(result: LocateError) -> None:
    hint = "; rerun with -vv and report it" if result.error_type == InternalError.__name__ else ""
    error_line(f"{result.source}: {result.error}{hint}")


@dataclass
class _Tally:
    """What the summary line and the exit code need: the worst error decides the code."""

    located: int = 0
    failed: int = 0
    exit_code: int = EXIT_OK

    def add(self, result: Prediction | LocateError) -> None:
        from geosleuth.schemas import LocateError

        if isinstance(result, LocateError):
            self.failed += 1
            self.exit_code = max(self.exit_code, exit_code(error_class(result.error_type)))
        else:
            self.located += result.status == "located"
