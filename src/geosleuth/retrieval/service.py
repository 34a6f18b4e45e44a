"""Retrieval as one pipeline stage: a photo in, GPS gallery candidates and neighbours out.

Made from the settings once (models load here, so a missing checkpoint is reported before the
first photo), then run per photo."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from geosleuth.config import RetrievalSettings
from geosleuth.retrieval.base import ImageEncoder
from geosleuth.retrieval.gallery import GalleryCandidate, GalleryRetriever, GPSGallery
from geosleuth.schemas import LatLon, Neighbour

log = logging.getLogger(__name__)


@dataclass
class RetrievalResult:
    gallery: list[GalleryCandidate] = field(default_factory=list)
    """The gallery's top-k, probabilities over the gallery."""
    refined: list[GalleryCandidate] = field(default_factory=list)
    """The best points after re-scoring rings around the top 3 (finer than the gallery's spacing)."""
    similar: list[Neighbour] = field(default_factory=list)
    dissimilar: list[Neighbour] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    geo_similarity: Callable[[list[LatLon]], NDArray[np.float32]] | None = None
    """Cosine between this image and any points in GeoCLIP's location space (None without a gallery)."""
    logit_scale: float | None = None


class Retriever:
    """The configured image encoder, and whichever of the GPS gallery and the neighbour index it
    can serve. The gallery needs GeoCLIP's image space; the index needs the encoder that built it
    (GeoCLIP's CLIP backbone counts, so one model serves both)."""

    def __init__(self, settings: RetrievalSettings, *, cache_dir: Path, gazetteer: Any) -> None:
        from geosleuth.retrieval import make_image_encoder

        spec = settings.image_encoder or ("geoclip" if settings.geoclip else None)
        if not spec:
            raise ValueError("no image encoder configured (retrieval.image_encoder)")
        self.settings = settings
        self.encoder: ImageEncoder = make_image_encoder(spec, device=settings.device, cache_dir=cache_dir)
        self.gallery: GalleryRetriever | None = None
        self.index: Any = None
        self.index_encoder: ImageEncoder | None = None
        self.notes: list[str] = []
        logit_scale = getattr(self.encoder, "logit_scale", None)
        if logit_scale is not None:
            from geosleuth.retrieval.location import GeoCLIPLocationEncoder

            gallery = GPSGallery.from_file(settings.gallery) if settings.gallery else GPSGallery.geoclip()
            self.gallery = GalleryRetriever(
                gallery,
                GeoCLIPLocationEncoder(device=settings.device),
                logit_scale=logit_scale,
                cache_dir=cache_dir,
            )
        else:
            self.notes.append(
                f"no GPS gallery: {self.encoder.name} does not embed into GeoCLIP's location space"
            )
        if settings.index_dir:
            from geosleuth.retrieval.index import NeighbourIndex

            self.index = NeighbourIndex(settings.index_dir, gazetteer=gazetteer, device=settings.device)
            self.index_encoder = self._encoder_for_index()

    def _encoder_for_index(self) -> ImageEncoder:
        built = self.index.manifest["encoder"]
        for candidate in (self.encoder, getattr(self.encoder, "clip", None)):
            if (
                candidate is not None
                and candidate.fingerprint == built["fingerprint"]
                and candidate.dim == self.index.dim
            ):
                return candidate
        from geosleuth.retrieval import make_image_encoder

        other = make_image_encoder(built["name"], device=self.settings.device, cache_dir=None)
        self.index.check_encoder(other)
        self.notes.append(f"neighbours searched with {other.name}, the encoder that built the index")
        return other

    @property
    def description(self) -> str:
        parts = [self.encoder.name]
        if self.gallery is not None:
            parts.append(f"gallery {self.gallery.gallery.name} ({len(self.gallery.gallery):,} points)")
        if self.index is not None:
            parts.append(f"index {self.index.folder} ({self.index.count:,} photos)")
        return "; ".join(parts)

    def run(self, image: Image.Image) -> RetrievalResult:
        result = RetrievalResult(notes=list(self.notes))
        s = self.settings
        backbone_emb: NDArray[np.float32] | None = None
        if self.index_encoder is not None and self.index_encoder is getattr(self.encoder, "clip", None):
            emb, backbone_emb = self.encoder.encode_with_backbone([image])  # type: ignore[attr-defined]
        else:
            emb = self.encoder.encode([image])
        if self.gallery is not None:
            gallery, query = self.gallery, emb[0]
            result.geo_similarity = lambda points: gallery.similarity(query, points)
            result.logit_scale = gallery.logit_scale
            result.gallery = self.gallery.top_k(emb, k=s.gallery_top_k)[0]
            if s.refine and result.gallery:
                result.refined = self.gallery.refine(emb[0], result.gallery, around=3)[:5]
        if self.index is not None and self.index_encoder is not None:
            if backbone_emb is not None:
                q = backbone_emb
            elif self.index_encoder is self.encoder:
                q = emb
            else:
                q = self.index_encoder.encode([image])
            found = self.index.search(q, k=s.neighbours_k)[0]
            result.similar, result.dissimilar = found.similar, found.dissimilar
        return result
