"""A weight-free image encoder: a 16x16 colour thumbnail through a fixed random projection.

Not a geolocation model: its embeddings only say which pictures look alike in colour and layout.
It lets an index, the retrieval stage and demos run where no CLIP weights are available
(``--image-encoder pixel`` or ``pixel:DIM:SEED``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image


class PixelEncoder:
    """Deterministic embeddings from the pixels: a 16x16 colour thumbnail through a fixed random
    projection, L2-normalised. Similar pictures get similar vectors; no weights are involved."""

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        self.dim = dim
        # The name is a spec `make_image_encoder` understands, so an index built with it can be reopened.
        self.name = "pixel" if (dim, seed) == (64, 0) else f"pixel:{dim}:{seed}"
        rng = np.random.default_rng(seed)
        self._proj = rng.standard_normal((16 * 16 * 3, dim)).astype(np.float32)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    def encode(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        from geosleuth.retrieval.base import as_rgb, l2_normalise

        if not images:
            return np.empty((0, self.dim), dtype=np.float32)
        thumbs = np.stack(
            [
                np.asarray(im.resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32).ravel() / 255.0
                for im in as_rgb(images)
            ]
        )
        return l2_normalise((thumbs - thumbs.mean(axis=1, keepdims=True)) @ self._proj)
