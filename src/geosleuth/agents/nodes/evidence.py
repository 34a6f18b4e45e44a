"""The evidence node: EXIF, OCR, language and script, text clues.

:func:`add_text_lines` lets later text (read by the ``zoom`` tool) join the evidence exactly as if
the first OCR pass had read it."""

from __future__ import annotations

import time

from geosleuth.agents.context import RunContext
from geosleuth.errors import CorruptImageError, EngineUnavailableError
from geosleuth.schemas import EvidenceKind, StageStatus, TraceStep
from geosleuth.tools.clues import MIN_LANGUAGE_CONFIDENCE, ClueReport
from geosleuth.tools.exif import read_exif
from geosleuth.tools.langid import LanguageGuess, detect_scripts
from geosleuth.tools.ocr.base import OCRResult, TextLine

LANGUAGE_HINT_MIN_CONFIDENCE = 0.3


def run(ctx: RunContext, step: TraceStep) -> None:
    state, deps = ctx.state, ctx.deps
    image = state.image
    step.inputs = {"image": f"{image.format} {image.width}x{image.height}"}
    n_before = len(state.evidence)
    t0 = time.perf_counter()
    exif = read_exif(image, deps.gazetteer)
    if image.pixel_error and not exif.present:
        raise CorruptImageError(image.source, image.pixel_error + " and there is no metadata to fall back on")
    n_used = sum(1 for e in exif.evidence if e.usable and e.weight > 0)
    state.stages.add(
        "exif",
        StageStatus.RAN,
        f"{len(exif.evidence)} observations, {n_used} locating" if exif.present else "no EXIF metadata",
        t0=t0,
    )
    state.exif = exif
    if not ctx.settings.use_exif_gps:
        for e in exif.evidence:
            if e.kind == EvidenceKind.GPS and e.usable:
                # recorded, not used: say so where the reader looks (the evidence list)
                e.details["ignored"] = True
                e.reason = (
                    (e.reason + "; ") if e.reason else ""
                ) + "not used: GPS metadata is ignored (--ignore-exif-gps, use_exif_gps = false)"
    state.evidence.extend(exif.evidence)
    state.missing.extend(exif.missing)
    if image.pixel_error:
        state.warnings.append(f"{image.pixel_error}; only the metadata was used")

    state.lines = _ocr(ctx)
    _read_text(ctx, report=True)
    new = [e.id for e in state.evidence[n_before:]]
    if new:
        step.outputs["new_evidence"] = new
    if state.lines:
        step.outputs["text_lines"] = [{"text": ln.text, "confidence": ln.confidence} for ln in state.lines]
    if state.languages:
        step.outputs["language_guesses"] = [
            {"language": g.name, "confidence": round(g.confidence, 3)} for g in state.languages[:3]
        ]


def add_text_lines(ctx: RunContext, lines: list[TextLine], *, via: str) -> tuple[int, list[str]]:
    """Add text read later (``via`` a tool) to the photo's lines and read the clues again, as if
    the first OCR pass had found it; the fusion of the evidence is then made again. Returns how
    many lines were new and the ids of the evidence they produced."""
    state = ctx.state
    known = {_norm(ln.text) for ln in state.lines}
    added = [ln for ln in lines if _norm(ln.text) and _norm(ln.text) not in known]
    if not added:
        return 0, []
    before = {e.id for e in state.evidence}
    state.lines = [*state.lines, *added]
    _read_text(ctx, report=False)
    forget_fusion(ctx)
    new = [e.id for e in state.evidence if e.id not in before]
    for e in state.evidence:
        if e.id in new:
            e.details.setdefault("via", via)
    return len(added), new


def _read_text(ctx: RunContext, *, report: bool) -> None:
    """Language, script and clues of ``state.lines``, replacing those of an earlier reading."""
    state, deps = ctx.state, ctx.deps
    old = state.clues
    if old is not None:
        ids = {id(e) for e in old.evidence}
        state.evidence = [e for e in state.evidence if id(e) not in ids]
        for m in old.missing:
            if m in state.missing:
                state.missing.remove(m)
    state.text = "\n".join(ln.text for ln in state.lines)
    state.languages = _langid(ctx, report=report)
    scripts = detect_scripts(state.text)
    t0 = time.perf_counter()
    if not state.lines:
        state.clues = None
        if report:
            state.stages.add("clues", StageStatus.SKIPPED, "no text to read clues from")
        return
    hints = _hint_countries(ctx, state.languages)
    clues: ClueReport = deps.clues.extract(state.lines, state.languages, scripts, hint_countries=hints)
    state.clues = clues
    state.evidence.extend(clues.evidence)
    state.missing.extend(clues.missing)
    state.matches = list(clues.matches)
    if report:
        n_loc = sum(1 for e in clues.evidence if e.weight > 0 and (e.countries or e.point))
        state.stages.add(
            "clues", StageStatus.RAN, f"{n_loc} location clues from {len(state.lines)} text lines", t0=t0
        )


def forget_fusion(ctx: RunContext) -> None:
    """Forget the fusion of the evidence (new hard evidence arrived): the next verify makes it again."""
    state = ctx.state
    fused = state.fusion
    if fused is None:
        return
    ids = {id(e) for e in fused.extra_evidence}
    state.evidence = [e for e in state.evidence if id(e) not in ids]
    for w in fused.warnings:
        if w in state.warnings:
            state.warnings.remove(w)
    state.fusion = None


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _ocr(ctx: RunContext) -> list[TextLine]:
    state, deps = ctx.state, ctx.deps
    image, stages = state.image, state.stages
    if image.rgb is None:
        stages.add("ocr", StageStatus.SKIPPED, "the pixels could not be decoded")
        return []
    if deps.ocr is None:
        stages.add("ocr", StageStatus.UNAVAILABLE, deps.ocr_unavailable or "no OCR engine")
        state.missing.append("text in the image was not read (no OCR engine)")
        return []
    t0 = time.perf_counter()
    try:
        result = deps.ocr.read([image.rgb])[0]
    except (EngineUnavailableError, OSError, RuntimeError, ValueError) as exc:
        stages.add("ocr", StageStatus.FAILED, str(exc), engine=deps.ocr.name, t0=t0)
        state.warnings.append(f"OCR failed: {exc}")
        return []
    detail = f"{len(result.lines)} text lines"
    if result.unread:
        detail += f", {result.unread} text regions unread"
    stages.add("ocr", StageStatus.RAN, detail, engine=deps.ocr.name, t0=t0)
    if result.unread:
        state.missing.append(unread_message(result))
    elif not result.lines:
        state.missing.append("no readable text in the image")
    # OCR read the working copy; boxes are given in pixels of the full-resolution photo.
    return [ln.model_copy(update={"box": image.full_box(ln.box)}) for ln in result.lines]


def unread_message(result: OCRResult) -> str:
    """What to say when text was found that no installed model could read: which scripts the
    installed models read, and which packs would read the others."""
    n = result.unread
    msg = f"{n} text region{'s' if n != 1 else ''} found in the image could not be read"
    if result.readable_scripts:
        msg += f"; the installed OCR reads {', '.join(result.readable_scripts)}"
    if result.missing_scripts:
        packs = ", ".join(f"{name}: {pkg}" for name, pkg in result.missing_scripts)
        msg += f"; for another script install its Tesseract pack with apt-get ({packs})"
    return msg


def _langid(ctx: RunContext, *, report: bool) -> list[LanguageGuess]:
    state, deps = ctx.state, ctx.deps
    text, stages = state.text, state.stages
    if not text.strip():
        if report:
            stages.add("langid", StageStatus.SKIPPED, "no text")
        return []
    if deps.langid is None:
        if report:
            stages.add("langid", StageStatus.UNAVAILABLE, deps.langid_unavailable or "no language identifier")
        return []
    t0 = time.perf_counter()
    guesses = deps.langid.identify([text])[0]
    if report:
        if guesses and guesses[0].confidence >= MIN_LANGUAGE_CONFIDENCE:
            top = f"{guesses[0].name} ({guesses[0].confidence:.2f})"
        else:  # the weak guesses stay in the trace
            top = "unclear" if guesses else "no guess"
        stages.add("langid", StageStatus.RAN, top, engine=deps.langid.name, t0=t0)
    return list(guesses)


def _hint_countries(ctx: RunContext, languages: list[LanguageGuess]) -> list[str]:
    """Countries where the text's language is most at home: lets the phone matcher read numbers
    written in national format ("01 42 60 30 30" is only a number once France is suspected)."""
    if not languages or languages[0].confidence < LANGUAGE_HINT_MIN_CONFIDENCE:
        return []
    gaz = ctx.deps.gazetteer
    likes = gaz.language_countries(languages[0].code)
    pops = {c: gaz.countries[c].population for c in likes if c in gaz.countries}
    return sorted(pops, key=lambda c: -(likes[c] * pops[c]))[:3]
