"""CLIP and SigLIP image encoders through transformers, from a local folder or the HF cache."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from geosleuth.errors import WeightsNotFoundError
from geosleuth.retrieval.base import (
    as_rgb,
    l2_normalise,
    quiet_transformers,
    require_transformers,
    resolve_weights,
    weights_fingerprint,
)
from geosleuth.retrieval.location import require_torch

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("clip", "siglip", "siglip2")


def image_features(output: Any) -> Any:
    """Projected image features from ``get_image_features``, across transformers 4.x and 5.x."""
    torch = require_torch()
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"get_image_features returned {type(output).__name__}, which holds no feature tensor")


class HFImageEncoder:
    """Any CLIP or SigLIP checkpoint: image -> L2-normalised projected embedding.

    ``name`` is what the user gave (hub id or path); ``fingerprint`` hashes the weight files.
    """

    def __init__(
        self,
        name_or_path: str,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        cache_dir: Path | None = None,
    ) -> None:
        self.torch = require_torch()
        self.transformers = require_transformers()
        self.name = str(name_or_path)
        self.path = resolve_weights(self.name, what=f"image encoder {self.name!r}")
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        with quiet_transformers():
            config = self.transformers.AutoConfig.from_pretrained(self.path, local_files_only=True)
            if config.model_type not in SUPPORTED_TYPES:
                raise WeightsNotFoundError(
                    f"image encoder {self.name!r}",
                    f"is a {config.model_type!r} checkpoint; geosleuth reads {', '.join(SUPPORTED_TYPES)} checkpoints",
                )
            self.model = (
                self.transformers.AutoModel.from_pretrained(self.path, local_files_only=True)
                .to(device)
                .eval()
            )
            self.processor = self.transformers.AutoImageProcessor.from_pretrained(
                self.path, local_files_only=True
            )
        self.model_type = config.model_type
        proj = getattr(config, "projection_dim", None)
        self.dim = int(proj if proj else config.vision_config.hidden_size)

    @cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.path, self.cache_dir)

    def raw_features(self, images: Sequence[Image.Image]) -> Any:
        """Projected, unnormalised features as a torch tensor (n, dim)."""
        torch = self.torch
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = as_rgb(images[start : start + self.batch_size])
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
                chunks.append(image_features(self.model.get_image_features(pixel_values=pixels)).float())
        return torch.cat(chunks) if chunks else torch.empty(0, self.dim)

    def encode(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        if not images:
            return np.empty((0, self.dim), dtype=np.float32)
        return l2_normalise(self.raw_features(images).cpu().numpy())
