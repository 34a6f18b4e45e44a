"""Contrastive geo-alignment retrieval (GeoCLIP/G3 style).

* :mod:`.location`: GeoCLIP's location encoder with the weights shipped in the ``geoclip`` wheel.
* :mod:`.hf_clip`, :mod:`.geoclip_image`: image encoders (any CLIP/SigLIP; GeoCLIP's head on CLIP).
* :mod:`.gallery`: GPS galleries with cached embeddings, top-k and refinement.
* :mod:`.index`, :mod:`.sources`: the FAISS neighbour index, built from folders or tables.

Everything heavy (torch, transformers, faiss) is imported only when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geosleuth.retrieval.base import ImageEncoder


def make_image_encoder(spec: str, *, device: str = "cpu", cache_dir: Path | None = None) -> ImageEncoder:
    """An image encoder from a short spec:

    * ``geoclip``: GeoCLIP (CLIP ViT-L/14 from the HF cache + the wheel's head);
    * ``geoclip:/path/to/clip-vit-large-patch14``: GeoCLIP with the CLIP backbone from a folder;
    * ``pixel`` or ``pixel:DIM:SEED``: the weight-free :class:`~geosleuth.retrieval.pixel.PixelEncoder`
      (demos and tests; not a geolocation model);
    * anything else: a CLIP or SigLIP hub id or local folder.
    """
    if spec == "geoclip" or spec.startswith("geoclip:"):
        from geosleuth.retrieval.geoclip_image import DEFAULT_CLIP, GeoCLIPImageEncoder

        backbone = spec.split(":", 1)[1] if ":" in spec else DEFAULT_CLIP
        return GeoCLIPImageEncoder(backbone, device=device, cache_dir=cache_dir)
    if spec == "pixel" or spec.startswith("pixel:"):
        from geosleuth.retrieval.pixel import PixelEncoder

        parts = spec.split(":")
        return PixelEncoder(*(int(p) for p in parts[1:3])) if len(parts) > 1 else PixelEncoder()
    from geosleuth.retrieval.hf_clip import HFImageEncoder

    return HFImageEncoder(spec, device=device, cache_dir=cache_dir)
