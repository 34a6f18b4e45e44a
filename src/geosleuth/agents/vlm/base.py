"""The VLM contract: what a backend is asked (:class:`VLMRequest`) and what it answers (:class:`VLMCall`).

A backend is batch-first and async underneath::

    class VLMBackend(Protocol):
        name: str            # "openai-compatible", "transformers"
        model: str           # what the server or folder calls the model
        async def agenerate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]: ...
        def generate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]: ...
        def close(self) -> None: ...

Rules every backend keeps:

* one :class:`VLMCall` per request, in order, always: a failed request is a call with ``error`` set
  and no samples, never an exception and never a missing record;
* every sample keeps the model's raw text; an unusable one has ``guess=None`` and says why
  (``error``/``error_type``), it is never turned into (0, 0);
* ``finish_reason == "length"`` makes the sample a :class:`~geosleuth.errors.VLMTruncatedError`;
* token usage is counted per call, so it can be summed per image.

Configuration errors (no such model folder, no ``openai`` package) are raised when the backend is
made, before any image is touched.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from geosleuth.errors import VLMTruncatedError
from geosleuth.schemas import ParseMethod, TokenUsage, VLMCall, VLMGuess, VLMReport, VLMSample


class VLMRequest(BaseModel):
    """One chat request: images first (the photo, then any neighbour thumbnails), then the text.

    Putting the images first keeps the shared prefix identical across prompt variants of one photo,
    so a server's prefix cache can reuse it."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    key: str = Field(description="Who asked: the image's source and the variant, e.g. 'a.jpg#rag-5'.")
    variant: str = Field(description="Prompt variant: zero-shot, rag-5, ...")
    system: str = Field(description="The system message.")
    text: str = Field(description="The user message's text, after the images.")
    images: list[Image.Image] = Field(default_factory=list, description="The photo first, then thumbnails.")
    n: int = Field(default=1, ge=1, le=64, description="Samples to draw.")
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=1024, ge=16)
    structured: bool = Field(default=True, description="Ask the server to follow the guess JSON schema.")
    prompt_hash: str = Field(default="", description="sha256 of the templates that made the text.")
    seed: int | None = None


def resize_longest(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` in RGB (CMYK, palette, alpha and 16-bit handled), scaled down, never up, so its
    longest side is at most ``max_side``."""
    from geosleuth.tools.image import to_rgb

    img = to_rgb(image)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def call_record(r: VLMRequest, *, model: str, backend: str, structured: str, **fields: Any) -> VLMCall:
    """The :class:`VLMCall` for request ``r``: who asked and how, plus ``fields`` (samples, usage,
    latency, error...)."""
    return VLMCall(
        key=r.key,
        variant=r.variant,
        model=model,
        backend=backend,
        prompt_hash=r.prompt_hash,
        n=r.n,
        temperature=r.temperature,
        structured=structured,
        **fields,
    )


MAX_CLUES = 12
MAX_SHORT_TEXT = 120
MAX_RATIONALE = 1500


def guess_json_schema() -> dict[str, Any]:
    """A fresh copy of :func:`_wire_schema` (callers may change it)."""
    return copy.deepcopy(_wire_schema())


@lru_cache(maxsize=1)
def _wire_schema() -> dict[str, Any]:
    """The JSON schema sent as the structured-output constraint: :class:`VLMGuess`'s fields, all
    required, in reasoning order, no extra keys (what OpenAI's strict mode and xgrammar both take).
    Titles and defaults are dropped; descriptions and numeric ranges stay. Optional text fields
    may be null; optional numbers are required numbers on the wire, so a model always commits."""
    full = VLMGuess.model_json_schema()
    properties: dict[str, Any] = {}
    for name, prop in full["properties"].items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "default")}
        alternatives = prop.pop("anyOf", None)
        if alternatives:
            concrete = [alt for alt in alternatives if alt.get("type") != "null"]
            if len(concrete) == 1 and concrete[0].get("type") == "number":
                prop.update(concrete[0])
            else:  # Optional[str] -> a type list, which every backend understands
                prop["type"] = [alt.get("type") for alt in alternatives]
        properties[name] = prop
    # Bounded strings and lists: a weak or looping model otherwise runs to max_tokens inside one
    # string (measured on vLLM: 0/4 answers finished unbounded, 4/4 bounded).
    for name, prop in properties.items():
        if name == "clues_used":
            prop.update(maxItems=MAX_CLUES, items={"type": "string", "maxLength": MAX_SHORT_TEXT})
        elif name == "rationale":
            prop["maxLength"] = MAX_RATIONALE
        elif "string" in (prop["type"] if isinstance(prop["type"], list) else [prop["type"]]):
            prop["maxLength"] = MAX_SHORT_TEXT
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def guess_fields() -> str:
    """The guess fields, in order, for the prompt's wording."""
    return ", ".join(VLMGuess.model_fields)


@runtime_checkable
class VLMBackend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def agenerate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]: ...

    def generate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]: ...

    def close(self) -> None: ...


@runtime_checkable
class ToolChoosingVLM(Protocol):
    """A backend that can offer tools (OpenAI function specs) and return the calls the model makes."""

    def choose_tools(
        self,
        system: str,
        text: str,
        tools: list[dict[str, Any]],
        *,
        image: Image.Image | None = None,
        max_tokens: int = 512,
    ) -> list[tuple[str, dict[str, Any]]]: ...


@dataclass(frozen=True)
class ChatToolCall:
    """One tool call a model made in a chat answer. ``arguments`` is the JSON text as the model
    wrote it (it may not parse: the caller decides what to tell the model)."""

    id: str
    name: str
    arguments: str


@dataclass
class ChatReply:
    """A whole chat answer: its text, the tool calls it makes, and how it came."""

    content: str
    tool_calls: list[ChatToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    streamed: bool = False
    latency_s: float = 0.0


@runtime_checkable
class ChattingVLM(Protocol):
    """A backend that holds a conversation: chat messages in OpenAI's shape (images as
    ``image_url`` parts, tool calls and ``tool`` messages), tools offered as OpenAI function specs.

    :meth:`chat` is a generator: it yields the answer's text as it arrives and returns the whole
    :class:`ChatReply`. Closing it early cancels the request. Failures are
    :class:`~geosleuth.errors.VLMError` subclasses; a server that refuses ``tools`` answers
    :class:`~geosleuth.errors.VLMRequestRejectedError`."""

    @property
    def model(self) -> str: ...

    def image_url(self, image: Image.Image) -> str: ...

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str = "auto",
        max_tokens: int = 1024,
        temperature: float = 0.0,
        stream: bool = True,
    ) -> Generator[str, None, ChatReply]: ...


__all__ = [
    "ChatReply",
    "ChatToolCall",
    "ChattingVLM",
    "ParseMethod",
    "TokenUsage",
    "ToolChoosingVLM",
    "VLMBackend",
    "VLMCall",
    "VLMGuess",
    "VLMReport",
    "VLMRequest",
    "VLMSample",
    "VLMTruncatedError",
]
