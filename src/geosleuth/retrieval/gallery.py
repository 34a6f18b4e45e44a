"""GPS galleries: a set of world coordinates scored against an image, GeoCLIP-style.

* Sources: GeoCLIP's 100K gallery from the wheel, or a user's CSV/Parquet of lat, lon[, weight].
* Embeddings of the gallery are computed once (with a progress bar) and cached on disk, keyed by
  (location encoder weights checksum, gallery checksum). A cache that does not match its key, or is
  damaged, is rebuilt; it is never silently reused.
* ``top_k`` gives GeoCLIP's probabilities: softmax over the gallery of logit_scale * cosine, plus
  log(weight) when the gallery has weights (a prior). Batches of images at once.
* ``refine`` samples coordinates around the best gallery points and re-scores them, to go below the
  gallery's own spacing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geosleuth.errors import EmptySourceError
from geosleuth.retrieval.base import LocationEncoder
from geosleuth.retrieval.tables import find_column, latlon_columns, read_table
from geosleuth.schemas import LatLon

log = logging.getLogger(__name__)

EARTH_KM_PER_DEG = 111.195


@dataclass(frozen=True)
class GalleryCandidate:
    point: LatLon
    probability: float
    logit: float
    index: int
    """Row of the gallery, or -1 for a point added by refinement."""


class GPSGallery:
    """Coordinates (and optional prior weights) to score images against."""

    def __init__(self, coords: ArrayLike, *, weights: ArrayLike | None = None, name: str = "gallery") -> None:
        arr = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        if len(arr) == 0:
            raise EmptySourceError(f"gallery {name!r} has no coordinates")
        self.coords = arr
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if self.weights is not None:
            if len(self.weights) != len(arr):
                raise ValueError(f"gallery {name!r}: {len(self.weights)} weights for {len(arr)} points")
            if not np.isfinite(self.weights).all() or (self.weights <= 0).any():
                raise ValueError(f"gallery {name!r}: weights must be positive finite numbers")
        self.name = name

    def __len__(self) -> int:
        return len(self.coords)

    @classmethod
    def geoclip(cls) -> GPSGallery:
        """GeoCLIP's 100K gallery, from the installed wheel."""
        from geosleuth.retrieval.location import geoclip_file

        path = geoclip_file("model/gps_gallery/coordinates_100K.csv")
        return cls(latlon_columns(read_table(path), path), name="geoclip-100k")

    @classmethod
    def from_file(cls, path: str | Path) -> GPSGallery:
        """A CSV or Parquet with lat/latitude and lon/lng/longitude columns, and optionally weight."""
        path = Path(path)
        columns = read_table(path)
        coords = latlon_columns(columns, path)
        weights = None
        try:
            wname = find_column(columns, ("weight", "weights", "w", "count"), path, "weight")
        except ValueError:
            wname = None
        if wname:
            try:
                weights = np.array([float(v) for v in columns[wname]])
            except ValueError:
                raise ValueError(f"{path}: the {wname!r} column holds values that are not numbers") from None
        return cls(coords, weights=weights, name=path.name)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.coords).tobytes())
        if self.weights is not None:
            h.update(np.ascontiguousarray(self.weights).tobytes())
        return h.hexdigest()

    def embeddings(
        self, encoder: LocationEncoder, cache_dir: Path | None, *, batch: int = 4096
    ) -> NDArray[np.float32]:
        """The gallery encoded by ``encoder``: read from the cache when its key matches, else computed
        (with a progress bar) and cached."""
        key = f"{self.fingerprint[:16]}-{encoder.fingerprint[:16]}"
        path = (cache_dir / "gallery" / f"{key}.npy") if cache_dir else None
        meta_path = path.with_suffix(".json") if path else None
        if path and meta_path and path.exists() and meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                emb = np.load(path, mmap_mode="r")
                ok = (
                    meta.get("gallery") == self.fingerprint
                    and meta.get("encoder") == encoder.fingerprint
                    and emb.shape == (len(self), encoder.dim)
                    and meta.get("bytes") == path.stat().st_size
                )
                if ok:
                    return np.asarray(emb)
                log.warning("gallery cache %s does not match its key; rebuilding it", path)
            except (OSError, ValueError) as exc:
                log.warning("gallery cache %s is damaged (%s); rebuilding it", path, exc)
        emb = self._encode(encoder, batch)
        if path and meta_path:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, emb)
            os.replace(tmp, path)
            meta = {
                "gallery": self.fingerprint,
                "encoder": encoder.fingerprint,
                "encoder_name": encoder.name,
                "gallery_name": self.name,
                "shape": list(emb.shape),
                "bytes": path.stat().st_size,
            }
            meta_path.write_text(json.dumps(meta, indent=2))
        return emb

    def _encode(self, encoder: LocationEncoder, batch: int) -> NDArray[np.float32]:
        from geosleuth.progress import Progress

        out = np.empty((len(self), encoder.dim), dtype=np.float32)
        with Progress(f"encoding gallery {self.name}", len(self), unit="points") as bar:
            for start in range(0, len(self), batch):
                out[start : start + batch] = encoder.encode(self.coords[start : start + batch])
                bar.advance(min(batch, len(self) - start))
        return out


class GalleryRetriever:
    """A gallery, its embeddings and the temperature: image embeddings in, ranked coordinates out."""

    def __init__(
        self,
        gallery: GPSGallery,
        location_encoder: LocationEncoder,
        *,
        logit_scale: float,
        cache_dir: Path | None = None,
    ) -> None:
        self.gallery = gallery
        self.encoder = location_encoder
        self.logit_scale = float(logit_scale)
        self.embeddings = gallery.embeddings(location_encoder, cache_dir)
        self.log_prior = None if gallery.weights is None else np.log(gallery.weights / gallery.weights.sum())

    def logits(self, image_embeddings: ArrayLike) -> NDArray[np.float32]:
        q = np.asarray(image_embeddings, dtype=np.float32).reshape(-1, self.encoder.dim)
        logits = self.logit_scale * (q @ self.embeddings.T)
        if self.log_prior is not None:
            logits = logits + self.log_prior.astype(np.float32)
        return logits

    def similarity(self, image_embedding: ArrayLike, points: Sequence[LatLon]) -> NDArray[np.float32]:
        """Cosine between one image's GPS-space embedding and the location embeddings of any
        points (G3's geo-verification; multiply by :attr:`logit_scale` for GeoCLIP's logits)."""
        q = np.asarray(image_embedding, dtype=np.float32).reshape(1, -1)
        if not points:
            return np.zeros(0, dtype=np.float32)
        coords = np.array([[p.lat, p.lon] for p in points], dtype=np.float64)
        out: NDArray[np.float32] = (q @ self.encoder.encode(coords).T)[0]
        return out

    def top_k(
        self, image_embeddings: ArrayLike, k: int = 10, *, chunk: int = 256
    ) -> list[list[GalleryCandidate]]:
        """For each image, the k most probable gallery points, probabilities summing to at most 1."""
        if not 1 <= k <= len(self.gallery):
            raise ValueError(f"k must be between 1 and {len(self.gallery)} (the gallery size), got {k}")
        q = np.asarray(image_embeddings, dtype=np.float32).reshape(-1, self.encoder.dim)
        out: list[list[GalleryCandidate]] = []
        for start in range(0, len(q), chunk):
            logits = self.logits(q[start : start + chunk])
            lse = _logsumexp(logits)
            top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
            for row, idx in enumerate(top):
                idx = idx[np.argsort(-logits[row, idx])]
                out.append(
                    [
                        GalleryCandidate(
                            point=LatLon(
                                lat=float(self.gallery.coords[i, 0]), lon=float(self.gallery.coords[i, 1])
                            ),
                            probability=float(np.exp(logits[row, i] - lse[row])),
                            logit=float(logits[row, i]),
                            index=int(i),
                        )
                        for i in idx
                    ]
                )
        return out

    def refine(
        self,
        image_embedding: ArrayLike,
        candidates: Sequence[GalleryCandidate],
        *,
        radii_km: Sequence[float] = (1.0, 2.5, 5.0, 10.0, 20.0),
        bearings: int = 12,
        around: int | None = None,
    ) -> list[GalleryCandidate]:
        """Re-score rings of points around the first ``around`` candidates (all by default) and
        return the candidates and the new points together, best first, with probabilities
        renormalised over the gallery plus the new points."""
        q = np.asarray(image_embedding, dtype=np.float32).reshape(1, -1)
        centres = np.array([[c.point.lat, c.point.lon] for c in candidates[:around]], dtype=np.float64)
        new = ring_points(centres, radii_km, bearings)
        new_logits = self.logit_scale * (q @ self.encoder.encode(new).T)[0]
        gallery_logits = self.logits(q)[0]
        lse = float(_logsumexp(np.concatenate([gallery_logits, new_logits])[None, :])[0])
        scored = [
            GalleryCandidate(
                point=c.point, probability=float(np.exp(c.logit - lse)), logit=c.logit, index=c.index
            )
            for c in candidates
        ]
        scored += [
            GalleryCandidate(
                point=LatLon(lat=float(p[0]), lon=float(p[1])),
                probability=float(np.exp(lg - lse)),
                logit=float(lg),
                index=-1,
            )
            for p, lg in zip(new, new_logits, strict=True)
        ]
        return sorted(scored, key=lambda c: -c.logit)


def ring_points(
    centres: NDArray[np.float64], radii_km: Sequence[float], bearings: int
) -> NDArray[np.float64]:
    """Points on rings around each centre (local flat approximation, fine below ~50 km)."""
    angles = np.linspace(0.0, 2 * np.pi, bearings, endpoint=False)
    r = np.asarray(radii_km, dtype=np.float64)
    dlat = (r[:, None] * np.cos(angles)[None, :]).ravel() / EARTH_KM_PER_DEG
    dlon_km = (r[:, None] * np.sin(angles)[None, :]).ravel()
    out = []
    for lat, lon in centres:
        coslat = max(np.cos(np.radians(lat)), 1e-6)
        la = np.clip(lat + dlat, -90.0, 90.0)
        lo = ((lon + dlon_km / (EARTH_KM_PER_DEG * coslat)) + 180.0) % 360.0 - 180.0
        out.append(np.column_stack([la, lo]))
    return np.vstack(out)


def _logsumexp(x: NDArray[np.float32]) -> NDArray[np.float64]:
    x64 = np.asarray(x, dtype=np.float64)
    m = x64.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(x64 - m).sum(axis=1, keepdims=True)))[:, 0]
