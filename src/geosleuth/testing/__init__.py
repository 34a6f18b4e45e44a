"""Test doubles that ship with the package, so users' tests can use them too.

* :func:`build_tiny_clip` / :func:`build_tiny_siglip`: random-initialised checkpoints built from a
  config in milliseconds and saved as a normal transformers folder (no download, ever).
* :func:`build_tiny_vlm`: random tiny Qwen2-VL / Qwen2.5-VL / SmolVLM checkpoints with a real
  tokenizer, chat template and processor configs, servable by vLLM (see ``testing.tiny_vlm``).
* :mod:`geosleuth.testing.openai_server`: a real local HTTP server speaking vLLM's OpenAI-compatible
  chat protocol, scriptable to answer well, in free text, malformed, out of range, truncated, slowly,
  with 5xx/429, or by dropping the connection.
* :mod:`geosleuth.testing.osm_server`: a real local HTTP server answering like Nominatim and Overpass
  from canned places and features, with scriptable failures.
* :mod:`geosleuth.testing.searxng_server`: a real local HTTP server answering like a SearXNG
  instance's JSON search API from canned results, scriptable to fail (5xx, 429 with Retry-After, 403
  "json format disabled", a web page instead of JSON, a dropped connection, latency).
* :mod:`geosleuth.testing.browser`: the system Chromium, headless and offline, driven by Playwright:
  a page may load only its own file, and its console, uncaught exceptions, dialogs, attempted
  requests and CSP violations are recorded (for tests of the HTML reports).
* :class:`PixelEncoder`: a deterministic image encoder (no weights) whose embeddings really depend
  on the picture: good for index and pipeline tests where a model would be slow.
"""

from __future__ import annotations

from pathlib import Path

from geosleuth.retrieval.pixel import PixelEncoder as PixelEncoder
from geosleuth.testing.tiny_vlm import build_tiny_vlm as build_tiny_vlm


def build_tiny_clip(
    folder: str | Path, *, projection_dim: int = 768, image_size: int = 224, seed: int = 0
) -> Path:
    """Save a random tiny CLIP (2 vision layers, hidden 32) and its image processor in ``folder``.

    ``projection_dim=768`` matches CLIP ViT-L/14, so GeoCLIP's head can sit on top of it."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = Path(folder)
    config = CLIPConfig(
        projection_dim=projection_dim,
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 99,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": 14,
            "image_size": image_size,
        },
    )
    from geosleuth.retrieval.base import quiet_transformers

    torch.manual_seed(seed)
    with quiet_transformers():
        CLIPModel(config).eval().save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(folder)
    return folder


def build_tiny_siglip(folder: str | Path, *, image_size: int = 64, seed: int = 0) -> Path:
    """Save a random tiny SigLIP and its image processor in ``folder``."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    folder = Path(folder)
    config = SiglipConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 99,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "patch_size": 16,
            "image_size": image_size,
        },
    )
    from geosleuth.retrieval.base import quiet_transformers

    torch.manual_seed(seed)
    with quiet_transformers():
        SiglipModel(config).eval().save_pretrained(folder)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
