"""``geosleuth chat``: locate photos, then answer questions about them, grounded in their evidence.

Three ways in, one conversation (:class:`geosleuth.chat.Conversation`):

- ``--ask "Q" [--ask ...]``: answer each question in turn and exit (``--json``: one Turn per line);
- questions on stdin, one per line, when stdin is not a terminal (or with ``--json``);
- otherwise an interactive session (:mod:`geosleuth.cli.chat_repl`).

The options are ``locate``'s and become settings the same way (:func:`locate_settings`); the photos
are checked the same way (:func:`checked_inputs`) before anything heavy is built.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
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
    error_line,
    internal_error_line,
    reports_errors,
    setup_logging,
)
from geosleuth.cli.locate import STDIN, Source, checked_inputs, locate_settings
from geosleuth.errors import EXIT_INTERNAL, EXIT_OK, ConfigError, error_class, exit_code

if TYPE_CHECKING:
    from rich.console import Console

    from geosleuth.agents.pipeline import Locator
    from geosleuth.chat import Conversation
    from geosleuth.schemas import Prediction


@reports_errors
def chat(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Photos (files, folders, or - for stdin) to talk about; none with --load."),
    ] = None,
    ask: Annotated[
        list[str] | None,
        typer.Option("--ask", help="A question; repeat for more. Answers them in turn, then exits."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per turn (JSON Lines), for scripts.")
    ] = False,
    load: Annotated[
        Path | None, typer.Option("--load", help="Continue a conversation saved with /save or --save.")
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option("--save", help="Save the conversation here at the end (replaced atomically)."),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history", help="Keep the prompt's history in this file (default: this session only)."
        ),
    ] = None,
    ignore_exif_gps: IgnoreExifGpsOpt = False,
    ocr: OcrOpt = None,
    image_encoder: ImageEncoderOpt = None,
    index: IndexOpt = None,
    vlm_url: Annotated[
        str | None,
        typer.Option("--vlm-url", help="OpenAI-compatible VLM endpoint: it answers, with the tools."),
    ] = None,
    vlm_model: VlmModelOpt = None,
    vlm_samples: VlmSamplesOpt = None,
    min_probability: MinProbabilityOpt = None,
    offline: OfflineOpt = None,
    config: ConfigOpt = None,
    cache_dir: CacheOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Ask about photos: where, how sure, why, why not X, could it be X, what the text says, the
    alternatives, what is missing. Tell it what you know ("it was taken in Portugal"): a hint
    becomes evidence, and a conflict with hard evidence is named, not hidden. Without --vlm-url the
    answers come from the evidence by rule; questions about the scene need a VLM.

    Interactive when stdin and stdout are terminals (and no --ask or --json).
    Commands: /help, /save FILE, /load FILE, /report FILE [N], /quit.
    End a line with \\ to go on to the next; Ctrl-C stops an answer; Ctrl-D quits.

    \b
    Examples:
      geosleuth chat photo.jpg
      geosleuth chat photo.jpg --ask "Which country?" --ask "Could it be Belgium?" --json
      printf 'where?\\nwhy?\\n' | geosleuth chat photo.jpg --json
      geosleuth chat a.jpg b.jpg --ask "Were these taken in the same place?"
      geosleuth chat --load talk.json --ask "what would help?" --save talk.json
      geosleuth chat street.jpg --vlm-url http://127.0.0.1:8000/v1
    """
    setup_logging(verbose, quiet)
    photos = list(inputs or [])
    questions = _checked_questions(ask)
    if load is not None and photos:
        raise ConfigError("give either photos or --load FILE (the saved conversation names its photos)")
    if load is None and not photos:
        raise ConfigError("name at least one photo, or continue a saved conversation with --load FILE")
    interactive = questions is None and not json_out and sys.stdin.isatty() and sys.stdout.isatty()
    if STDIN in photos and questions is None:
        raise ConfigError("a photo on stdin (-) leaves no stdin for the questions: give them with --ask")
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
    sources: list[Source] = []
    if photos:
        batch = checked_inputs(photos, settings)  # a bad photo has had its line
        if batch.rejected:
            if json_out:  # and, as with locate --json, its JSON error object
                for bad in batch.rejected:
                    print(bad.model_dump_json(), flush=True)
            raise typer.Exit(max(exit_code(error_class(e.error_type)) for e in batch.rejected))
        sources = batch.usable

    from rich.console import Console

    from geosleuth.cli.locate import _locator

    err = Console(stderr=True, highlight=False, quiet=quiet)
    locator = _locator(settings)
    conv = _conversation(locator, sources, load, err)
    if interactive:
        from geosleuth.cli.chat_repl import Session

        code = Session(conv, locator, history=history, console=Console(highlight=False)).run()
    else:
        lines = questions if questions is not None else _stdin_questions()
        code = answer_all(conv, lines, json_out=json_out)
    if save is not None:
        conv.save(save)
        err.print(f"saved {len(conv.turns)} turn{'' if len(conv.turns) == 1 else 's'} to {save}")
    raise typer.Exit(code)


def _checked_questions(ask: list[str] | None) -> list[str] | None:
    if not ask:
        return None
    for n, q in enumerate(ask, start=1):
        if not q.strip():
            raise ConfigError(f"--ask #{n} is empty; give the question's text, e.g. --ask 'Which country?'")
    return ask


def _stdin_questions() -> Iterator[str]:
    """Questions from stdin, one per line, read as they come (blank lines are skipped)."""
    for line in sys.stdin:
        if line.strip():
            yield line.rstrip("\n")


def _conversation(locator: Locator, sources: list[Source], load: Path | None, err: Console) -> Conversation:
    """The conversation: loaded, or the photos located one by one with a spinner on stderr."""
    from geosleuth.chat import Conversation
    from geosleuth.chat.photo import PhotoSession

    if load is not None:
        return Conversation.load(load, locator)
    photos = []
    for i, src in enumerate(sources, start=1):
        label = src.name or str(src.data)
        with err.status(f"Locating {label} ({i}/{len(sources)})..."):
            photos.append(PhotoSession.locate(locator, i, src.data, src.name))
    return Conversation(locator, photos=photos)


def answer_all(conv: Conversation, questions: Iterable[str], *, json_out: bool) -> int:
    """Answer each question in turn, printing each as it is done; the worst error's exit code (a
    failed turn prints one line and the next question is answered)."""
    code = EXIT_OK
    for question in questions:
        try:
            turn = conv.ask(question)
        except Exception as exc:
            code = max(code, exit_code(exc))
            if json_out:
                print(_error_record(question, exc), flush=True)
            _turn_error(exc)
            continue
        if json_out:
            print(turn.model_dump_json(), flush=True)
        else:
            print(f"Q: {turn.question}\nA: {turn.answer}\n", flush=True)
    return code


def _error_record(question: str, exc: BaseException) -> str:
    import json

    from geosleuth.errors import GeoSleuthError

    kind = type(exc).__name__ if isinstance(exc, GeoSleuthError | OSError) else "InternalError"
    return json.dumps({"question": question, "error": str(exc), "error_type": kind}, ensure_ascii=False)


def _turn_error(exc: BaseException) -> None:
    """One line for a turn that failed; with -vv a bug's traceback too."""
    import logging

    if exit_code(exc) == EXIT_INTERNAL:
        logging.getLogger(__name__).debug("the turn failed", exc_info=exc)
        internal_error_line(exc)
    else:
        error_line(str(exc))


def short_answer(p: Prediction) -> str:
    """The answer in one line (plain text): place, confidence, radius and basis."""
    if p.best is None:
        return f"too little evidence for a location (best p={p.confidence:.2f})"
    b = p.best
    where = b.place.short() if b.place else b.label
    radius = f", within ~{b.radius_km:.0f} km" if b.radius_km >= 1 else ""
    basis = "EXIF GPS metadata" if p.basis == "exif-gps" else "evidence in the image"
    return f"{where} ({b.point}) - {p.confidence_level.value} confidence ({p.confidence:.2f}){radius}, from {basis}"
