"""What runs need, made once and shared by many images: the settings, the gazetteer, the engines
(OCR, language ID, retrieval, VLM, network tools), and the helpers made from them on first use
(fusion, clue extraction, the verifier, the VLM reasoner).

:func:`build_deps` makes them from settings. An engine that cannot run is recorded with the reason,
not raised: its stage then reports "unavailable" with the fix. Nothing here touches the network or
loads weights it was not asked for."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from geosleuth.agents.fusion import EvidenceFusion
from geosleuth.agents.verifier import Verifier
from geosleuth.agents.vlm.base import VLMBackend
from geosleuth.agents.vlm.reasoning import VLMReasoner
from geosleuth.config import Settings, load_settings
from geosleuth.errors import EngineUnavailableError, GeoSleuthError, MissingDependencyError
from geosleuth.gazetteer import Gazetteer
from geosleuth.retrieval.service import Retriever
from geosleuth.tools.clues import ClueExtractor
from geosleuth.tools.langid import LanguageIdentifier, make_language_identifier
from geosleuth.tools.ocr import OCREngine, make_ocr_engine
from geosleuth.tools.osm import OSMTools, make_tools, unavailable_reason
from geosleuth.tools.searxng import SearxngClient, make_web_search, web_search_unavailable

T = TypeVar("T")


@dataclass
class ToolHealth:
    """Tools that failed in this process, and why: they are not tried again (no DNS hang per image)."""

    osm_down: str | None = None
    tool_calling_down: str | None = None
    web_search_down: str | None = None


@dataclass
class Deps:
    """What a run needs, made once and shared by many images (thread-safe for reads)."""

    settings: Settings
    gazetteer: Gazetteer
    ocr: OCREngine | None = None
    ocr_unavailable: str | None = None
    langid: LanguageIdentifier | None = None
    langid_unavailable: str | None = None
    retriever: Retriever | None = None
    retriever_unavailable: str | None = None
    vlm: VLMBackend | None = None
    vlm_unavailable: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    health: ToolHealth = field(default_factory=ToolHealth)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # -- helpers made on first use --

    @cached_property
    def fusion(self) -> EvidenceFusion:
        return EvidenceFusion(self.gazetteer, self.settings)

    @cached_property
    def clues(self) -> ClueExtractor:
        return ClueExtractor(self.gazetteer)

    @cached_property
    def verifier(self) -> Verifier:
        """The verifier, with fitted weights when ``verifier.weights_file`` is set."""
        with self._lock:
            verifier = Verifier(self.gazetteer, self.settings.verifier)
            if self.settings.verifier.weights_file is not None:
                verifier.load_weights(self.settings.verifier.weights_file)
            return verifier

    @cached_property
    def reasoner(self) -> VLMReasoner | None:
        return VLMReasoner(self.vlm, self.settings, self.gazetteer) if self.vlm is not None else None

    @cached_property
    def osm(self) -> OSMTools | None:
        """Nominatim and Overpass, or None when offline or not configured."""
        with self._lock:
            return make_tools(self.settings)

    def osm_unavailable(self) -> str | None:
        """Why the OpenStreetMap tools cannot run now (None: they can)."""
        if self.health.osm_down is not None:
            return f"the OpenStreetMap tools failed earlier ({self.health.osm_down})"
        if self.osm is None:
            return unavailable_reason(self.settings) or "no OpenStreetMap tools"
        return None

    @cached_property
    def web_search(self) -> SearxngClient | None:
        """The self-hosted SearXNG client, or None (off by default)."""
        with self._lock:
            return make_web_search(self.settings)

    def web_search_unavailable(self) -> str | None:
        """Why web search cannot run now (None: it can)."""
        if self.health.web_search_down is not None:
            return f"web search failed earlier ({self.health.web_search_down})"
        return web_search_unavailable(self.settings) if self.web_search is None else None


def build_deps(settings: Settings | None = None, *, gazetteer: Gazetteer | None = None) -> Deps:
    """Make the engines the settings ask for. Engines that cannot run are recorded, not raised:
    the pipeline then reports their stage as unavailable with the fix."""
    settings = settings or load_settings()
    deps = Deps(settings=settings, gazetteer=gazetteer or Gazetteer(settings.cache_dir))
    deps.ocr, deps.ocr_unavailable = _make_or_explain(
        lambda: make_ocr_engine(settings.ocr), "OCR is turned off (ocr.engine = 'none')"
    )
    deps.retriever, deps.retriever_unavailable = make_retriever(settings, deps.gazetteer)
    deps.langid, deps.langid_unavailable = _make_or_explain(
        lambda: make_language_identifier(settings.langid),
        "language identification is turned off (langid.engine = 'none')",
    )
    deps.vlm, deps.vlm_unavailable = make_vlm(settings)
    return deps


def make_vlm(settings: Settings) -> tuple[VLMBackend | None, str | None]:
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
        from geosleuth.agents.vlm.openai_backend import OpenAICompatibleVLM, ReplicatedVLM, split_urls

        urls = split_urls(v.base_url)
        api_key = v.api_key.get_secret_value() if v.api_key else None
        common: dict[str, Any] = {
            "server": v.server,
            "timeout_s": v.timeout_s,
            "max_retries": v.max_retries,
            "max_concurrency": v.max_concurrency,
            "image_max_side": v.image_max_side,
        }
        if len(urls) > 1:
            return ReplicatedVLM(urls, v.model, api_key=api_key, **common), None
        return OpenAICompatibleVLM(urls[0], v.model, api_key=api_key, **common), None
    except (GeoSleuthError, ImportError, OSError) as exc:
        return None, str(exc)


def make_retriever(settings: Settings, gazetteer: Gazetteer) -> tuple[Retriever | None, str | None]:
    """The retrieval stage, or why there is none: not configured, not installed, or weights missing
    (with the command that fetches them)."""
    r = settings.retrieval
    if not (r.image_encoder or r.geoclip):
        return None, "no image encoder configured (retrieval.image_encoder, or --image-encoder geoclip)"
    try:
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


__all__ = ["Deps", "ToolHealth", "build_deps", "make_retriever", "make_vlm"]
