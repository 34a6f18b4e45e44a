"""``geosleuth report``: locate photos and write one explainable report per photo (and an index).

One photo and ``--out something.html`` (or ``.md``/``.json``) writes that file; several photos, a
folder, or an ``--out`` without a report suffix writes a folder with one report per photo and an
``index.html``. The options are ``locate``'s."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

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
    reports_errors,
    setup_logging,
)
from geosleuth.cli.locate import Source, _error, _locator, _Tally, checked_inputs, locate_settings
from geosleuth.errors import EXIT_INPUT, ConfigError, ImageInputError


def report_format(given: str | None, out: Path, suffixes: dict[str, str]) -> str:
    """The report format: ``--format`` when given, else the one ``--out``'s suffix names, else html.
    A ``--format`` that another report suffix of ``--out`` contradicts is refused."""
    named = {suffix: name for name, suffix in suffixes.items()}.get(out.suffix.lower())
    if given is None:
        return named or "html"
    if given not in suffixes:
        raise ConfigError(f"--format must be html, md or json, got {given!r}")
    if named is not None and named != given:
        raise ConfigError(
            f"--format {given} but --out {str(out)!r} ends in {out.suffix!r}; "
            f"name the file {out.with_suffix(suffixes[given]).name!r} or drop --format"
        )
    return given


@reports_errors
def report(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (recursively), or - for stdin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report file (one photo) or folder (several).")],
    format: Annotated[
        str | None,
        typer.Option("--format", help="html, md or json (default: from --out's suffix, else html)."),
    ] = None,
    no_photo: Annotated[bool, typer.Option("--no-photo", help="Leave the photo out of the report.")] = False,
    photo_max_side: Annotated[
        int, typer.Option("--photo-max-side", min=64, help="Longest side of the embedded photo (pixels).")
    ] = 1024,
    ignore_exif_gps: IgnoreExifGpsOpt = False,
    redact_exif: Annotated[
        bool,
        typer.Option(
            "--redact-exif",
            help="Leave the photo's metadata values out of the report (GPS, time, camera, captions); "
            "a GPS answer is coarsened to about 10 km.",
        ),
    ] = False,
    online_map: Annotated[
        bool,
        typer.Option(
            "--online-map",
            help="Add an interactive map (Leaflet from unpkg.com, OpenStreetMap tiles) beside the drawn "
            "one; opening the page then contacts those hosts. HTML only.",
        ),
    ] = False,
    ocr: OcrOpt = None,
    image_encoder: ImageEncoderOpt = None,
    index: IndexOpt = None,
    vlm_url: VlmUrlOpt = None,
    vlm_model: VlmModelOpt = None,
    vlm_samples: VlmSamplesOpt = None,
    min_probability: MinProbabilityOpt = None,
    offline: OfflineOpt = None,
    config: ConfigOpt = None,
    cache_dir: CacheOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Write an explainable report: the answer, a map that draws offline, the photo with the text
    read on it, the reasoning coarse to fine, the ranked hypotheses, the VLM's answers, what is
    missing, and the provenance.

    \b
    Examples:
      geosleuth report photo.jpg --out photo.html
      geosleuth report photos/ --out reports/ --ignore-exif-gps
      geosleuth report photo.jpg --out photo.md
      geosleuth report sensitive.jpg --out r.html --no-photo
      geosleuth report source.jpg --out r.html --redact-exif
      geosleuth report photo.jpg --out r.html --online-map
    """
    setup_logging(verbose, quiet)
    from geosleuth.agents.pipeline import input_error, internal_error
    from geosleuth.report import (
        SUFFIX,
        IndexEntry,
        redact,
        render_report,
        safe_name,
        thumbnail,
        write_index,
        write_text_atomic,
    )

    format = report_format(format, out, SUFFIX)
    if online_map and format != "html":
        raise ConfigError(f"--online-map is for HTML reports; --format is {format!r}")
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
    single = len(batch.entries) == 1 and out.suffix.lower() in SUFFIX.values()
    if not batch.usable:
        raise typer.Exit(EXIT_INPUT)
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    locator = _locator(settings)
    argv = " ".join(shlex.quote(a) for a in ["geosleuth", *sys.argv[1:]]) if sys.argv[1:] else None
    entries: list[IndexEntry] = []
    tally = _Tally()  # locate's: the worst error decides the exit code
    for i, entry in enumerate(batch.entries, start=1):
        if not isinstance(entry, Source):  # the checks rejected it, and said so
            tally.add(entry)
            entries.append(
                IndexEntry(None, entry.source, None, error=entry.error, error_type=entry.error_type)
            )
            continue
        name = entry.name or str(entry.data)
        # Like locate_many: a bad photo, or a bug on one photo (in locating or in rendering), is
        # that photo's error row, and the batch goes on. Writing is outside: a full disk is not a bug.
        try:
            pred, state = locator.run(entry.data, name=entry.name)
            if redact_exif:  # before anything uses it: the index's table and map too
                pred = redact.redact_exif(pred)
            image = None if no_photo else state.image.rgb
            why = (
                "The photo is left out of this report (--no-photo)."
                if no_photo
                else f"The photo's pixels could not be read: {state.image.pixel_error}. Only its metadata was."
                if state.image.pixel_error
                else None
            )
            text = render_report(
                pred,
                format,  # type: ignore[arg-type]
                image=image,
                command=argv,
                photo_max_side=photo_max_side,
                online_map=online_map,
                photo_note=why,
            )
            thumb = thumbnail(state.image.rgb) if (state.image.rgb is not None and not no_photo) else None
        except ImageInputError as exc:
            failure = input_error(exc)
        except Exception as exc:
            failure = internal_error(exc, name)
        else:
            path = out if single else out / safe_name(name, i, SUFFIX[format])
            write_text_atomic(path, text)
            tally.add(pred)
            entries.append(IndexEntry(pred, name, path.name, thumbnail=thumb))
            if not quiet:
                err.print(f"{name}: {pred.status} -> {path}")
            continue
        tally.add(failure)
        _error(failure)
        entries.append(IndexEntry(None, name, None, error=failure.error, error_type=failure.error_type))
    if not single:
        index_path = write_index(entries, out)
        if not quiet:
            err.print(f"[bold]{len(entries)} reports:[/] {index_path}")
    raise typer.Exit(tally.exit_code)
