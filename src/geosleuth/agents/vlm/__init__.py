"""VLM reasoning: backends (OpenAI-compatible HTTP, in-process transformers), prompt variants, the
tolerant answer parser, and the stage that turns sampled answers into evidence.

Submodules import their heavy dependencies (openai, torch, transformers) only when used.
"""

from geosleuth.agents.vlm.base import VLMBackend, VLMRequest, guess_json_schema

__all__ = ["VLMBackend", "VLMRequest", "guess_json_schema"]
