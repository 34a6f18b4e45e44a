"""GeoCLIP's image encoder: CLIP ViT-L/14 features through GeoCLIP's trained MLP head, landing in
the location encoder's space (so image-GPS similarity is a dot product, scaled by GeoCLIP's
trained temperature).

The head and temperature ship in the ``geoclip`` wheel. CLIP ViT-L/14 does not: it is read from a
local folder or the Hugging Face cache (``openai/clip-vit-large-patch14``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from geosleuth.errors import WeightsNotFoundError
from geosleuth.retrieval.base import file_sha256, l2_normalise
from geosleuth.retrieval.hf_clip import HFImageEncoder
from geosleuth.retrieval.location import GEOCLIP_INSTALL, geoclip_file, geoclip_logit_scale

DEFAULT_CLIP = "openai/clip-vit-large-patch14"


class GeoCLIPImageEncoder:
    """Images -> L2-normalised 512-d embeddings comparable with :class:`GeoCLIPLocationEncoder`."""

    name = "geoclip"
    dim = 512

    def __init__(
        self,
        clip: str = DEFAULT_CLIP,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        cache_dir: Path | None = None,
        head: Path | None = None,
    ) -> None:
        self.clip = HFImageEncoder(clip, device=device, batch_size=batch_size, cache_dir=cache_dir)
        if self.clip.model_type != "clip" or self.clip.dim != 768:
            raise WeightsNotFoundError(
                f"GeoCLIP image encoder (backbone {clip!r})",
                f"needs a CLIP checkpoint with 768-d projections like {DEFAULT_CLIP}, got a "
                f"{self.clip.model_type} with {self.clip.dim}-d",
            )
        torch = self.clip.torch
        self.head_path = head or geoclip_file("model/weights/image_encoder_mlp_weights.pth")
        try:
            state = torch.load(self.head_path, map_location="cpu", weights_only=True)
            self.w1, self.b1 = state["0.weight"].to(device), state["0.bias"].to(device)
            self.w2, self.b2 = state["2.weight"].to(device), state["2.bias"].to(device)
        except (KeyError, OSError, RuntimeError) as exc:
            raise WeightsNotFoundError(
                "GeoCLIP's image head",
                f"{self.head_path} could not be read ({exc}); reinstall: {GEOCLIP_INSTALL}",
            ) from exc
        self.logit_scale = geoclip_logit_scale()

    @cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256((self.clip.fingerprint + file_sha256(self.head_path)).encode()).hexdigest()

    def raw_features(self, images: Sequence[Image.Image]):  # type: ignore[no-untyped-def]
        """GeoCLIP's unnormalised image features (n, 512), as ``geoclip.ImageEncoder`` returns them."""
        torch = self.clip.torch
        f = torch.nn.functional
        x = self.clip.raw_features(images)
        with torch.inference_mode():
            return f.linear(torch.relu(f.linear(x, self.w1, self.b1)), self.w2, self.b2)

    def encode(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        if not images:
            return np.empty((0, self.dim), dtype=np.float32)
        return l2_normalise(self.raw_features(images).cpu().numpy())

    def encode_with_backbone(
        self, images: Sequence[Image.Image]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """GeoCLIP embeddings and the backbone's own CLIP embeddings, from one forward pass (an index
        built with the plain CLIP backbone is then searchable without running CLIP twice)."""
        torch = self.clip.torch
        f = torch.nn.functional
        clip = self.clip.raw_features(images)
        with torch.inference_mode():
            geo = f.linear(torch.relu(f.linear(clip, self.w1, self.b1)), self.w2, self.b2)
        return l2_normalise(geo.cpu().numpy()), l2_normalise(clip.cpu().numpy())
